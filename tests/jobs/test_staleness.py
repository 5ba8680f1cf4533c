"""The staleness table of issue 14: inputs changed behind the cache's back, each against a fresh cache.

Every case is three real sweeps: one on the original inputs, then the inputs
are changed as a user (or a script) would without telling the lab, then the
same command on the same store and cache, and the oracle: the same command on a
fresh store with a fresh cache, which cannot have seen the old inputs. Every run
of the oracle must be in the first store under the same key with the same
stored metrics, every iteration; and the change must really change the
numbers (else the case would prove nothing).

The hash sidecar's racy window is set to 0 here, so the second sweep finds
every file of the first in the sidecar and has to notice the change through
the stat fingerprint (ctime, inode), not because the file is too new to trust.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from icfrr.registry import METRICS
from jobs import sweep
from store import identity, writes
from store.db import connect_reader
from tests.icfrr.image_data import shape_image

ICFRR = ["--kg", 4, 8, "--kq", 4, "--n_times", 2]
COMMON = ["--top-n", 5, "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    monkeypatch.setattr(identity, "RACY_NS", 0)


def _sweep(argv: list, capsys) -> tuple[int, str, str]:
    code = sweep.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _stored(db: Path) -> dict[str, list[tuple]]:
    """config_key -> the run's metrics, one tuple per iteration (every registry metric)."""
    cols = ", ".join(f"m.{m.key}" for m in METRICS)
    with connect_reader(db) as con:
        rows = con.execute(f"SELECT r.config_key, m.iteration, {cols} FROM runs r JOIN run_metrics m "
                           "USING (run_id) ORDER BY r.config_key, m.iteration").fetchall()
    out: dict[str, list[tuple]] = {}
    for key, *metrics in rows:
        out.setdefault(key, []).append(tuple(metrics))
    return out


def _rewrite_keeping_times(path: Path, write: Callable[[Path], None]) -> None:
    """Write other bytes of the same size in place and set the old mtime back (``touch -r``)."""
    st = path.stat()
    write(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------ the inputs


def _problem(seed: int, q: int = 12, g: int = 40, classes: int = 4, dim: int = 8):
    """Distances of a small clustered problem: qg [Q, G], gg [G, G], qq [Q, Q] and labels."""
    rng = np.random.default_rng(seed)
    lq, lg = rng.integers(0, classes, q), rng.integers(0, classes, g)
    centres = rng.normal(size=(classes, dim))
    fq = centres[lq] + rng.normal(scale=1.0, size=(q, dim))
    fg = centres[lg] + rng.normal(scale=1.0, size=(g, dim))

    def d(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).astype(np.float32)

    return d(fq, fg), d(fg, fg), d(fq, fq), lq.astype(np.int64), lg.astype(np.int64)


def _imports(folder: Path) -> list:
    folder.mkdir(parents=True)
    qg, gg, qq, lq, lg = _problem(0)
    np.save(folder / "qg.npy", qg)
    np.save(folder / "gg.npy", gg)
    np.save(folder / "qq.npy", qq)
    np.savez(folder / "labels.npz", query=lq, gallery=lg)
    return ["--dataset", "mine", "--qg", folder / "qg.npy", "--gg", folder / "gg.npy",
            "--labels", folder / "labels.npz"]


def _other(name: str) -> Callable[[Path], None]:
    """Writes the matrix ``name`` of another problem (same shape, so the same file size)."""
    index = {"qg": 0, "gg": 1, "qq": 2}[name]
    return lambda path: np.save(path, _problem(7)[index])


def _bmp_folder(root: Path) -> Path:
    """A ``folder`` dataset of BMP images: same pixel size, so every file has the same byte size."""
    for c in ("circle", "square", "triangle"):
        for i in range(2):
            shape_image(root / "query" / c / f"q{i}.bmp", c, False, offset=i)
        for i in range(4):
            shape_image(root / "gallery" / c / f"g{i}.bmp", c, True, offset=i - 1)
    return root


def _images(folder: Path) -> list:
    return ["--dataset", "folder", "--data_root", _bmp_folder(folder), "--backbone", "demo"]


# ------------------------------------------------------------------ the cases


def w1_qq_replaced(folder: Path) -> tuple[list, Callable[[], None]]:
    """W1: k-reciprocal's qq.npy replaced by other content of the same size, mtime restored."""
    argv = [*_imports(folder), "--qq", folder / "qq.npy", "--method", "k_reciprocal"]
    return argv, lambda: _rewrite_keeping_times(folder / "qq.npy", _other("qq"))


def w2_gg_replaced(folder: Path) -> tuple[list, Callable[[], None]]:
    """W2: gg.npy replaced in place; ICFRR (its cached graph) and k-reciprocal (gg read) in one sweep."""
    argv = [*_imports(folder), "--qq", folder / "qq.npy", "--method", "icfrr", "k_reciprocal", *ICFRR]
    return argv, lambda: _rewrite_keeping_times(folder / "gg.npy", _other("gg"))


def w3_image_overwritten(folder: Path) -> tuple[list, Callable[[], None]]:
    """W3: a gallery image overwritten by another class's picture (same size), its mtime restored."""
    argv = [*_images(folder), *ICFRR]
    src = folder / "gallery" / "square" / "g0.bmp"
    return argv, lambda: _rewrite_keeping_times(folder / "gallery" / "circle" / "g1.bmp",
                                                lambda p: p.write_bytes(src.read_bytes()))


def w3_images_swapped_by_mv(folder: Path) -> tuple[list, Callable[[], None]]:
    """W3: two images of other classes, of equal size and mtime, swapped with ``mv``."""
    argv = [*_images(folder), *ICFRR]
    a, b = folder / "gallery" / "circle" / "g1.bmp", folder / "gallery" / "triangle" / "g2.bmp"
    for p in (a, b):
        os.utime(p, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    assert a.stat().st_size == b.stat().st_size

    def swap() -> None:
        os.rename(a, folder / "swap.tmp")
        os.rename(b, a)
        os.rename(folder / "swap.tmp", b)
        assert (a.stat().st_size, a.stat().st_mtime_ns) == (b.stat().st_size, b.stat().st_mtime_ns)

    return argv, swap


def w3_imported_qg_replaced(folder: Path) -> tuple[list, Callable[[], None]]:
    """W3: an imported --qg replaced by other content of the same size, mtime restored."""
    return [*_imports(folder), *ICFRR], lambda: _rewrite_keeping_times(folder / "qg.npy", _other("qg"))


CASES = {f.__name__: f for f in (w1_qq_replaced, w2_gg_replaced, w3_image_overwritten,
                                 w3_images_swapped_by_mv, w3_imported_qg_replaced)}


@pytest.mark.parametrize("case", list(CASES))
def test_stale_inputs_give_the_numbers_of_a_fresh_cache(tmp_path, capsys, case):
    argv, change = CASES[case](tmp_path / "in")
    stale = [*argv, *COMMON, "--db", tmp_path / "stale.duckdb", "--cache_root", tmp_path / "cache"]
    code, _, err = _sweep(stale, capsys)
    assert code == 0, err
    before = _stored(tmp_path / "stale.duckdb")
    assert (tmp_path / "cache" / identity.SIDECAR).is_file()    # the hashes were kept: the fingerprint decides

    change()
    code, out, err = _sweep(stale, capsys)
    assert code == 0, err
    assert "(skipped)" not in out, out                           # nothing of the old inputs was taken
    code, _, err = _sweep([*argv, *COMMON, "--db", tmp_path / "fresh.duckdb",
                           "--cache_root", tmp_path / "fresh_cache"], capsys)
    assert code == 0, err
    fresh, after = _stored(tmp_path / "fresh.duckdb"), _stored(tmp_path / "stale.duckdb")
    assert fresh and not set(fresh) & set(before)                # new content, new run keys
    for key, metrics in fresh.items():
        assert after[key] == metrics, key                         # the oracle's numbers, every iteration
    old_final = sorted(m[-1] for m in before.values())
    new_final = sorted(m[-1] for m in fresh.values())
    assert old_final != new_final                                # the change does change the numbers


# ------------------------------------------------------------------ a change during the sweep


def test_a_file_changed_mid_sweep_stops_it_in_one_line_keeping_committed_runs(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    argv = [*_imports(folder), "--qq", folder / "qq.npy", "--method", "icfrr", "k_reciprocal", *ICFRR, *COMMON]
    db = tmp_path / "r.duckdb"
    code, _, err = _sweep([*argv, "--db", tmp_path / "oracle.duckdb", "--cache_root", tmp_path / "c0"], capsys)
    assert code == 0, err
    oracle = _stored(tmp_path / "oracle.duckdb")

    real = writes.heartbeat
    calls = []

    def heartbeat_then_change(con, sweep_id):    # after the first committed run, gg.npy changes
        calls.append(sweep_id)
        real(con, sweep_id)
        if len(calls) == 1:
            _rewrite_keeping_times(folder / "gg.npy", _other("gg"))

    monkeypatch.setattr(writes, "heartbeat", heartbeat_then_change)
    code, out, err = _sweep([*argv, "--db", db, "--cache_root", tmp_path / "cache"], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err, err
    assert len(errors) == 1, err
    assert f"{folder / 'gg.npy'} changed" in errors[0] and f"committed before are kept in {db}" in errors[0], errors
    got = _stored(db)
    with connect_reader(db) as con:
        methods = [m for (m,) in con.execute("SELECT method FROM runs ORDER BY run_id").fetchall()]
        assert con.execute("SELECT status FROM sweeps").fetchall() == [("failed",)]
    assert methods == ["icfrr", "icfrr"]                        # ICFRR committed, k-reciprocal never ran
    assert all(oracle[key] == metrics for key, metrics in got.items())   # made from the gg it started with
    monkeypatch.setattr(writes, "heartbeat", real)
    code, out, err = _sweep([*argv, "--db", db, "--cache_root", tmp_path / "cache"], capsys)
    assert code == 0 and out.count("(new)") == 3, err             # the new gg: new runs, the old ones kept


def test_no_cache_and_a_refusal_keep_no_hashes(tmp_path, capsys):
    """The hash sidecar is written with the artifacts only: never by --no-cache, never on a refusal."""
    folder = tmp_path / "in"
    argv = [*_imports(folder), *ICFRR, *COMMON, "--db", tmp_path / "r.duckdb", "--cache_root", tmp_path / "cache"]
    (tmp_path / "cache").mkdir()                                  # an existing cache folder, empty
    code, _, err = _sweep([*argv, "--no-cache"], capsys)
    assert code == 0, err
    assert list((tmp_path / "cache").iterdir()) == []
    np.save(folder / "gg.npy", np.zeros((5, 5), np.float32))     # hashed, then refused: the wrong shape
    code, _, err = _sweep(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "gg.npy" in err, err
    assert list((tmp_path / "cache").iterdir()) == []
