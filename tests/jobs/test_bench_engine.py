"""``python -m jobs.bench --cold-start --repeat N``: its flags and its table (compilation itself is not run here)."""

from __future__ import annotations

import pytest

from jobs import bench, bench_engine


@pytest.mark.parametrize("argv, message", [
    (["--cold-start", "--repeat", "0"], "--repeat must be at least 1"),
    (["--crossover", "--repeat", "3"], "--repeat applies to --cold-start only"),
    (["--cold-start", "--repeat", "two"], "invalid int value"),
])
def test_bad_repeat_is_one_line_and_exit_2(capsys, argv: list[str], message: str) -> None:
    assert bench.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bench: error: ") and message in err, err


def test_repeated_first_configuration_rows_give_min_and_median(monkeypatch) -> None:
    runs = {"dense engine, reference": iter([(3.4, 0.4), (3.1, 0.5), (3.9, 0.4)]),
            "sparse engine, reference": iter([(4.0, 0.5), (4.4, 0.4), (4.2, 0.5)])}
    monkeypatch.setattr(bench_engine, "_first_configuration", lambda group: next(runs[group]))
    lines = bench_engine.first_configuration_rows(3)
    assert lines[0].startswith("| first configuration alone | compile, min of 3")
    dense = [3.4 - 0.4, 3.1 - 0.5, 3.9 - 0.4]      # fresh - warm of each run
    sparse = [4.0 - 0.5, 4.4 - 0.4, 4.2 - 0.5]
    assert lines[2] == f"| dense path (TU-Berlin shape) | {min(dense):.2f} | {sorted(dense)[1]:.2f} | 3.00, 2.60, 3.50 |"
    assert lines[3] == f"| sparse path (large G) | {min(sparse):.2f} | {sorted(sparse)[1]:.2f} | 3.50, 4.00, 3.70 |"
