"""``python -m jobs.bench --shape million`` and ``--methods --shape quickdraw`` with ``--scale F``: the flags and
the shape (the benchmarks themselves are not run here)."""

from __future__ import annotations

import pytest

from jobs import bench
from jobs.bench_million import FULL, shape_at


@pytest.mark.parametrize("argv, message", [
    (["--shape", "million", "--scale", "0"], "--scale must be in (0, 1]"),
    (["--shape", "million", "--scale", "1.5"], "--scale must be in (0, 1]"),
    (["--shape", "quarter", "--scale", "0.5"], "--scale applies to"),
    (["--sweep", "--shape", "quickdraw", "--scale", "0.5"], "--scale applies to"),
    (["--shape", "million", "--scale", "half"], "invalid float value"),
    (["--methods", "--shape", "quickdraw", "--scale", "2"], "--scale must be in (0, 1]"),
])
def test_bad_scale_is_one_line_and_exit_2(capsys, argv: list[str], message: str) -> None:
    assert bench.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bench: error: ") and message in err, err


def test_scale_shrinks_queries_and_gallery_together() -> None:
    n_query, n_gallery, *_ = FULL
    assert shape_at(1.0) == (n_query, n_gallery) == (10_000, 1_000_000)
    assert shape_at(0.05) == (500, 50_000)
    assert shape_at(1e-9) == (2, 200)
