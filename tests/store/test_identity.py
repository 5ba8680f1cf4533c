"""store.identity: content identities (sha256) cached by the git-style stat fingerprint (issue 14).

The oracle is hashlib over the file's bytes, read fresh; the sidecar must never
give another answer, and must spare the hashing when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from store import identity
from store.identity import SIDECAR, FileId, HashCache, InputChanged, digest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _future() -> int:
    """A clock far ahead: every file is old enough for its hash to be recorded."""
    return time.time_ns() + 3600 * 10**9


def _rewrite_keeping_mtime(path: Path, data: bytes, old: FileId) -> None:
    """Overwrite in place with ``data`` and set the old mtime back (touch -r); ctime moves on."""
    st = os.stat(path)
    for _ in range(200):                     # until the kernel's clock gives another ctime
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        if os.stat(path).st_ctime_ns != old.fingerprint[2]:
            return
        time.sleep(0.01)
    pytest.skip("the file system's ctime did not move")


def test_hashes_once_per_fingerprint_and_reuses_the_sidecar(tmp_path):
    f = tmp_path / "a.npy"
    f.write_bytes(b"x" * 1000)
    first = HashCache(tmp_path / "cache", clock_ns=_future)
    (tmp_path / "cache").mkdir()
    fid = first.identify(f)
    assert fid.sha256 == _sha(f) and first.hashed == 1
    assert first.identify(f) == fid and first.hashed == 1          # once per run
    first.save()
    assert (tmp_path / "cache" / SIDECAR).is_file()
    second = HashCache(tmp_path / "cache", clock_ns=_future)
    assert second.identify(f) == fid and second.hashed == 0        # once per fingerprint, across runs


def test_a_racily_new_file_is_hashed_again_next_time(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"new")
    (tmp_path / "cache").mkdir()
    now = HashCache(tmp_path / "cache")      # the real clock: f's ctime is not RACY_NS old yet
    assert now.identify(f).sha256 == _sha(f)
    now.save()
    assert not (tmp_path / "cache" / SIDECAR).exists()
    again = HashCache(tmp_path / "cache")
    again.identify(f)
    assert again.hashed == 1


def test_overwrite_with_the_mtime_restored_is_seen(tmp_path):
    """W3 at the bottom: same size, same mtime, other bytes: the ctime differs, so it is hashed again."""
    f = tmp_path / "img.bmp"
    f.write_bytes(b"A" * 4096)
    (tmp_path / "cache").mkdir()
    cache = HashCache(tmp_path / "cache", clock_ns=_future)
    old = cache.identify(f)
    cache.save()
    _rewrite_keeping_mtime(f, b"B" * 4096, old)
    assert (os.stat(f).st_size, os.stat(f).st_mtime_ns) == (old.fingerprint[0], old.fingerprint[1])
    with pytest.raises(InputChanged, match="changed"):
        old.check()
    new = HashCache(tmp_path / "cache", clock_ns=_future).identify(f)
    assert new.sha256 == _sha(f) != old.sha256


def test_files_swapped_by_mv_keep_their_own_hashes(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a" * 64)
    b.write_bytes(b"b" * 64)
    for p in (a, b):
        os.utime(p, ns=(10**18, 10**18))     # equal size and mtime
    (tmp_path / "cache").mkdir()
    cache = HashCache(tmp_path / "cache", clock_ns=_future)
    ia, ib = cache.identify(a), cache.identify(b)
    cache.save()
    os.rename(a, tmp_path / "t")
    os.rename(b, a)
    os.rename(tmp_path / "t", b)
    again = HashCache(tmp_path / "cache", clock_ns=_future)
    assert again.identify(a).sha256 == ib.sha256 == _sha(a)
    assert again.identify(b).sha256 == ia.sha256 == _sha(b)
    with pytest.raises(InputChanged):
        ia.check()


def test_check_passes_untouched_and_names_a_missing_file(tmp_path):
    f = tmp_path / "qq.npy"
    f.write_bytes(b"q" * 10)
    fid = HashCache(None).identify(f)
    fid.check()
    f.unlink()
    with pytest.raises(InputChanged, match=f"{f} is gone"):
        fid.check()
    with pytest.raises(FileNotFoundError):
        HashCache(None).identify(f)


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "entries": {}}', "[1, 2]",
                                     '{"format": 1, "entries": {"x": [1, 2]}}'])
def test_a_damaged_or_foreign_sidecar_is_ignored(tmp_path, content):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    (tmp_path / SIDECAR).write_text(content)
    cache = HashCache(tmp_path, clock_ns=_future)
    assert cache.identify(f).sha256 == _sha(f) and cache.hashed == 1


def test_a_lying_sidecar_entry_is_not_believed_when_the_fingerprint_differs(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    key = str(f.absolute())
    size, mtime = os.stat(f).st_size, os.stat(f).st_mtime_ns
    (tmp_path / SIDECAR).write_text(json.dumps(
        {"format": 1, "entries": {key: [size, mtime, 0, 0, 0, "0" * 64]}}))   # size and mtime match only
    assert HashCache(tmp_path).identify(f).sha256 == _sha(f)


def test_save_merges_what_another_process_recorded(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    one, two = HashCache(tmp_path, clock_ns=_future), HashCache(tmp_path, clock_ns=_future)
    one.identify(a)
    two.identify(b)
    one.save()
    two.save()
    third = HashCache(tmp_path, clock_ns=_future)
    third.identify_all([a, b])
    assert third.hashed == 0


def test_digest_depends_on_order_and_content(tmp_path):
    x = FileId(tmp_path / "x", (1, 2, 3, 4, 5), "a" * 64)
    y = FileId(tmp_path / "y", (1, 2, 3, 4, 5), "b" * 64)
    assert digest([x, y]) != digest([y, x])
    assert digest([x, y]) == digest([FileId(tmp_path / "z", (0,) * 5, "a" * 64), y])   # content, not names
    assert identity.RACY_NS > 0
