"""jobs.cli.write_output, the one writer of every --output-style file: regular files are
replaced atomically (a failure leaves the old content, no temporary), anything else (a
device, a FIFO) is written in place and stays what it was.

Oracles: os.stat's file type before and after, the bytes a FIFO's reader receives, and
the old content of a file whose write failed."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from jobs.cli import UsageError, check_output, write_output


def _kind(path: str | Path) -> str:
    mode = os.stat(path).st_mode
    return ("reg" if stat.S_ISREG(mode) else "chr" if stat.S_ISCHR(mode)
            else "fifo" if stat.S_ISFIFO(mode) else "other")


def test_regular_file_is_replaced_whole(tmp_path) -> None:
    target = tmp_path / "t.txt"
    write_output(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    write_output(target, lambda f: f.write(b"newer"))
    assert target.read_bytes() == b"newer" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "t.txt"
    target.write_bytes(b"old")

    def half(f) -> None:
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_output(target, half)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_dev_null_stays_a_character_device() -> None:
    assert _kind("/dev/null") == "chr"
    write_output(Path("/dev/null"), lambda f: f.write(b"x" * 100_000))
    assert _kind("/dev/null") == "chr"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_dev_full_fails_and_stays_a_device() -> None:
    with pytest.raises(OSError) as info:
        write_output(Path("/dev/full"), lambda f: f.write(b"x"))
    assert info.value.errno == errno.ENOSPC and _kind("/dev/full") == "chr"


def test_fifo_is_written_in_place(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    payload = bytes(range(256)) * 1000  # more than a pipe buffer holds
    write_output(fifo, lambda f: f.write(payload))
    reader.join(timeout=30)
    assert got == [payload] and _kind(fifo) == "fifo"
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_symlink_is_followed_and_kept(tmp_path) -> None:
    real = tmp_path / "real.txt"
    real.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_output(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and real.read_bytes() == b"new"
    dev = tmp_path / "null"
    dev.symlink_to("/dev/null")
    write_output(dev, lambda f: f.write(b"x"))
    assert dev.is_symlink() and _kind("/dev/null") == "chr"


def test_check_output_refuses_folders(tmp_path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        check_output(tmp_path, "--out")
    with pytest.raises(UsageError, match="--out folder .* does not exist"):
        check_output(tmp_path / "no" / "x.csv", "--out")
    check_output(Path("/dev/null"))
