"""Progress of the long commands on stderr: a bar on a terminal, lines in a log, nothing when quiet.

A tqdm bar redraws itself with ``\\r``; in a log file that is noise, so when
stderr is not a terminal a :class:`Progress` either writes one line per step
(``lines=True``: the configurations of a sweep) or nothing (the inner bars).

The estimated time left ignores the first step: the first configuration (or
chunk of queries) also pays for compiling the numba kernels, about 20 s, and
an estimate that counts it is wrong for every step after. The rate is taken
from the steps done after the first one finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

#: What a progress display does: a redrawn bar, a line per step, or nothing.
MODES = ("bar", "lines", "off")


def progress_mode(quiet: bool, stream: TextIO | None = None) -> str:
    """``off`` when ``quiet``, ``bar`` when ``stream`` (default stderr) is a terminal, else
    ``lines``."""
    if quiet:
        return "off"
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "lines"


def eta_seconds(done: int, total: int, first_done: int, first_at: float | None,
                now: float) -> float | None:
    """Seconds left, from the rate of the steps done after the first update.

    Args:
        done: Steps done.
        total: Steps in all.
        first_done: Steps the first update reported (they include the start-up cost).
        first_at: When the first update came (None: none yet).
        now: The time now, on the same clock.

    Returns:
        The estimate; 0 when done; None while no step after the first has finished.
    """
    if done >= total:
        return 0.0
    if first_at is None or done <= first_done or now <= first_at:
        return None
    rate = (done - first_done) / (now - first_at)
    return (total - done) / rate


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """A countable job's progress; ``update`` after each step, ``close`` at the end.

    Args:
        total: Steps in all.
        desc: What is counted, e.g. ``"configurations"``.
        unit: Unit of a step for the bar, e.g. ``"cfg"``.
        mode: One of :data:`MODES` (:func:`progress_mode`).
        lines: In ``lines`` mode, write a line per update (True) or nothing (False).
        leave: Keep the bar on screen when closed.
        stream: Where to write (default stderr).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, total: int, desc: str, unit: str, *, mode: str, lines: bool = True,
                 leave: bool = True, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown progress mode {mode!r}; use one of {', '.join(MODES)}")
        self.total, self.desc, self.n = int(total), desc, 0
        self.mode = mode if (mode != "lines" or lines) else "off"
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        self._started = clock()
        self._first: tuple[int, float] | None = None
        self._note = ""
        self._bar = None
        if self.mode == "bar" and total > 0:
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self._stream,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}{postfix}]")

    def eta(self) -> float | None:
        """Seconds left (see :func:`eta_seconds`)."""
        first_done, first_at = self._first if self._first is not None else (0, None)
        return eta_seconds(self.n, self.total, first_done, first_at, self._clock())

    def _status(self) -> str:
        eta = self.eta()
        parts = [f"ETA {_clock_text(eta)}" if eta is not None else "ETA after the first"]
        return ", ".join(parts + ([self._note] if self._note else []))

    def set_note(self, note: str) -> None:
        """Text shown after the counts (e.g. the configuration being run)."""
        self._note = note
        if self._bar is not None:
            self._bar.set_postfix_str(self._status())

    def update(self, n: int = 1) -> None:
        """``n`` more steps are done."""
        if n <= 0:
            return
        self.n += n
        if self._first is None:
            self._first = (self.n, self._clock())
        if self._bar is not None:
            self._bar.set_postfix_str(self._status(), refresh=False)
            self._bar.update(n)
        elif self.mode == "lines":
            elapsed = _clock_text(self._clock() - self._started)
            pct = 100.0 * self.n / self.total if self.total else 100.0
            print(f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%), {elapsed} elapsed, "
                  f"{self._status()}", file=self._stream, flush=True)

    def update_to(self, done: int) -> None:
        """Set the steps done to ``done`` (for callbacks that report totals)."""
        self.update(done - self.n)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
