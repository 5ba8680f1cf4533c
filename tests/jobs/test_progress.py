"""jobs.progress: the time left counted from the steps after the first (which pays numba's
compilation), one plain line per step when stderr is not a terminal, nothing with --quiet;
and the sweep's stderr in a log holds no carriage returns.

Oracles: estimates computed by hand from a fake clock; the written text itself."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from jobs import sweep
from jobs.progress import Progress, eta_seconds, progress_mode
from tests.jobs.test_sweep import write_cache


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_ignores_the_first_step() -> None:
    # 10 steps; the first took 20 s (compilation), then 2 s each: at t = 24 three are done
    assert eta_seconds(3, 10, first_done=1, first_at=20.0, now=24.0) == pytest.approx(7 * 2.0)
    # counting the first step, the estimate would have been 7 * 8 s
    assert eta_seconds(1, 10, first_done=1, first_at=20.0, now=20.0) is None
    assert eta_seconds(0, 10, first_done=0, first_at=None, now=5.0) is None
    assert eta_seconds(10, 10, first_done=1, first_at=20.0, now=40.0) == 0.0
    # a first update of a group of 4 (the betas of one configuration) counts as the first step
    assert eta_seconds(8, 12, first_done=4, first_at=30.0, now=38.0) == pytest.approx(4 * 2.0)


def test_lines_mode_writes_one_plain_line_per_step_with_the_eta() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress(10, "configurations", "cfg", mode="lines", stream=out, clock=clock)
    bar.set_note("KG 8, KQ 10")
    clock.t = 20.0
    bar.update()
    clock.t = 22.0
    bar.update()
    clock.t = 24.0
    bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert lines[0] == ("configurations: 1/10 (10%), 0:00:20 elapsed, ETA after the first, "
                        "KG 8, KQ 10")
    assert lines[2] == "configurations: 3/10 (30%), 0:00:24 elapsed, ETA 0:00:14, KG 8, KQ 10"


def test_off_and_inner_bars_write_nothing_in_a_log() -> None:
    for kwargs in ({"mode": "off"}, {"mode": "lines", "lines": False}):
        out = io.StringIO()
        bar = Progress(5, "queries", "q", stream=out, **kwargs)
        bar.update_to(3)
        bar.update_to(5)
        bar.close()
        assert out.getvalue() == "" and bar.n == 5


def test_bar_mode_shows_the_eta_from_the_second_step() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress(4, "configurations", "cfg", mode="bar", stream=out, clock=clock)
    clock.t = 20.0
    bar.update()
    clock.t = 21.0
    bar.update()
    assert bar.eta() == pytest.approx(2.0)
    bar.close()
    assert "ETA 0:00:02" in out.getvalue()


def test_progress_mode_follows_quiet_and_the_terminal() -> None:
    assert progress_mode(True, io.StringIO()) == "off"
    assert progress_mode(False, io.StringIO()) == "lines"
    main, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert progress_mode(False, tty) == "bar" and progress_mode(True, tty) == "off"
    finally:
        os.close(main)
        os.close(follower)


def _sweep(tmp_path: Path, capsys, *extra: object) -> tuple[int, str, str]:
    if not (tmp_path / "cache").exists():
        write_cache(tmp_path / "cache")
    argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db",
            tmp_path / "r.duckdb", "--kg", 4, 6, "--kq", 5, "--n-times", 2, "--top-n", 5,
            "--device", "cpu", "--force", *extra]
    code = sweep.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_into_a_log_writes_lines_not_redraws_and_quiet_writes_none(tmp_path, capsys) -> None:
    code, out, err = _sweep(tmp_path, capsys)
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err
    progress = [ln for ln in err.splitlines() if ln.startswith("configurations: ")]
    assert [ln.split(" (")[0] for ln in progress] == ["configurations: 1/2", "configurations: 2/2"]
    assert "ETA after the first" in progress[0]
    code, quiet_out, quiet_err = _sweep(tmp_path, capsys, "--quiet")
    assert code == 0 and "\r" not in quiet_err
    assert not [ln for ln in quiet_err.splitlines() if ln.startswith(("configurations", "queries"))]
    assert "Results in" in quiet_out  # the table still prints
