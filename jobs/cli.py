"""Command-line plumbing shared by the jobs: one-line usage errors (exit status 2) and the device check.

torch is imported only by :func:`resolve_device`, so ``--help`` stays fast."""

from __future__ import annotations

import argparse


class UsageError(ValueError):
    """Bad input: reported as one line on stderr with exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose parse errors raise :class:`UsageError` with one line
    (the message and a pointer to ``--help``) instead of printing the usage and exiting."""

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
