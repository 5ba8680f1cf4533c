"""Command-line plumbing shared by the jobs: one-line usage errors (exit status 2)."""

from __future__ import annotations

import argparse


class UsageError(ValueError):
    """Bad input: reported as one line on stderr with exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose parse errors raise :class:`UsageError` with one line
    (the message and a pointer to ``--help``) instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")
