"""Command-line plumbing shared by the jobs: one-line usage errors (exit status 2), the device
check and the writing of ``--output``-style files.

torch is imported only by :func:`resolve_device`, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class UsageError(ValueError):
    """Bad input: reported as one line on stderr with exit status 2."""


class OneStyleHelp(argparse.RawDescriptionHelpFormatter):
    """Help that lists each flag once, in its ``--dash-style`` spelling (the others are accepted too)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        flag = action.option_strings[0]
        if action.nargs == 0:
            return flag
        return f"{flag} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


def _twins(flag: str) -> list[str]:
    body = flag[2:]
    return [f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}"]


def add_twin_spellings(parser: argparse.ArgumentParser) -> None:
    """Accept every ``--long-flag`` as ``--long_flag`` too (and the other way round).

    The dash spelling is put first, so help and usage show it; the underscore
    one (the published code's style) keeps working.
    """
    for action in parser._actions:
        flags = list(action.option_strings)
        for flag in [f for f in flags if f.startswith("--")]:
            for twin in _twins(flag):
                if twin not in parser._option_string_actions:
                    parser._option_string_actions[twin] = action
                    flags.append(twin)
        dashed = [f for f in flags if f.startswith("--") and "_" not in f]
        action.option_strings = dashed[:1] + [f for f in flags if f not in dashed[:1]]


class OneLineParser(argparse.ArgumentParser):
    """The commands' ``ArgumentParser``: parse errors raise :class:`UsageError` with one line
    (the message and a pointer to ``--help``) instead of printing the usage and exiting;
    every long flag is accepted with dashes or underscores, and help shows the dash style."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", OneStyleHelp)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        add_twin_spellings(self)
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        add_twin_spellings(self)
        return super().format_help()

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def resolve_device(name: str | None, gpu_id: int = 0) -> str:
    """``name`` if given, else ``cuda:<gpu_id>`` when CUDA is available, else ``cpu``.

    Raises:
        UsageError: An unknown device, or CUDA asked for but missing.
    """
    import torch

    if name is None:
        if not torch.cuda.is_available():
            return "cpu"
        name = f"cuda:{gpu_id}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} asked for CUDA but none is available; use --device cpu")
        index = dev.index if dev.index is not None else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"GPU {index} does not exist ({torch.cuda.device_count()} visible); "
                             "pass another --gpu_id")
    elif dev.type != "cpu":
        raise UsageError(f"--device {name!r} is not supported; use cpu, cuda or cuda:N")
    return str(dev)


def check_output(path: Path, flag: str = "--output") -> None:
    """Refuse an output path that cannot be written before any work is done.

    Raises:
        UsageError: ``path`` is a folder, or its folder does not exist.
    """
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; pass a file path")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} folder {path.parent} does not exist; create it first")


def write_output(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a user-named output file, never half-written and never replacing a special file.

    A regular file (or a new name) is written to a temporary sibling and
    renamed over the target, so a failure leaves the old file or nothing. A
    symbolic link is followed: the file it points to is replaced, the link
    stays. Anything else that exists (a character device such as
    ``/dev/null`` or ``/dev/stdout``, a FIFO, a socket) is opened and written
    in place: replacing it would turn a system device into a plain file.

    Args:
        path: The target.
        write: Writes the content to the binary file object it is given.

    Raises:
        OSError: The target or its folder cannot be written (full disk, ...).
    """
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(target, "wb") as f:
            write(f)
        return
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
