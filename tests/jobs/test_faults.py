"""The fault suite (issue 11): bad input to every command, damaged files, kills, a full disk.

Every refusal must be one line on stderr, exit status 2, and nothing written:
the database file byte for byte as it was (or not created), the cache folder
as it was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from jobs import extract, sweep
from store import writes
from store.db import connect_reader, connect_writer
from tests.jobs.toy import toy_distances

REPO = Path(__file__).resolve().parents[2]


def _snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself) -> its bytes."""
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            out.update({str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    return out


def _published_cache(cache: Path, dataset: str = "custom") -> None:
    qg, gg, lq, lg = toy_distances(q=12, g=40)
    folder = cache / dataset / "-1"
    folder.mkdir(parents=True)
    torch.save(qg, folder / "qg_dists.pth")
    torch.save(gg, folder / "gg_dists.pth")
    torch.save({"query": torch.from_numpy(lq), "gallery": torch.from_numpy(lg)}, folder / "labels.pth")


def _small_store(path: Path) -> Path:
    with connect_writer(path) as con:
        writes.upsert_dataset(con, name="x", root=None,
                              items=writes.items_table(np.arange(5) % 2, np.arange(9) % 2))
    return path


@contextlib.contextmanager
def _mounted_tmpfs(where: Path, options: str):
    """A tmpfs at ``where`` (root only); skips the test where mounting is not possible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """An existing folder nothing can be written to (a read-only mount as root, mode 555 otherwise)."""
    where = tmp_path / "ro"
    if os.geteuid() == 0:
        with _mounted_tmpfs(where, "ro,size=1m") as ro:
            yield ro
    else:
        where.mkdir()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)


def _one_line_exit_2(main, argv, capsys) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ jobs.sweep


def _damaged(kind: str):
    def make(tmp: Path) -> Path:
        db = _small_store(tmp / "r.duckdb")
        data = db.read_bytes()
        if kind == "truncated":
            db.write_bytes(data[: len(data) // 2])
        elif kind == "truncated_header":
            db.write_bytes(data[:100])
        else:   # bytes of the first block flipped: its checksum no longer matches
            start = 3 * 4096 + 64
            db.write_bytes(data[:start] + bytes(b ^ 0x5A for b in data[start:start + 448])
                           + data[start + 448:])
        return db
    return make


def _foreign(tmp: Path) -> Path:
    db = tmp / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_info (version INTEGER); INSERT INTO schema_info VALUES (1);"
                "CREATE TABLE runs (id INTEGER, note VARCHAR); INSERT INTO runs VALUES (1, 'mine')")
    con.close()
    return db


def _file_as_parent(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder\n")
    return tmp / "afile" / "r.duckdb"


SWEEP_DB_CASES = {
    "truncated store": (_damaged("truncated"), "damaged or unreadable"),
    "store cut in its header": (_damaged("truncated_header"), "damaged or unreadable"),
    "store with a corrupted block": (_damaged("flipped"), "damaged or unreadable"),
    "foreign DuckDB with schema_info and runs": (_foreign, "not an icfrr-lab results store"),
    "--db inside a regular file": (_file_as_parent, "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(SWEEP_DB_CASES))
def test_sweep_refuses_a_bad_database_in_one_line(tmp_path, capsys, case):
    make, message = SWEEP_DB_CASES[case]
    _published_cache(tmp_path / "cache")
    db = make(tmp_path)
    before = _snapshot(tmp_path)
    err = _one_line_exit_2(sweep.main, ["--dataset", "custom", "--cache_root", tmp_path / "cache",
                                        "--db", db, "--kg", 4, "--kq", 4, "--device", "cpu"], capsys)
    assert err.startswith("sweep: error: ") and message in err, err
    assert _snapshot(tmp_path) == before           # the store untouched, no cache folder written


def test_sweep_refuses_a_read_only_results_dir_before_computing(tmp_path, capsys, read_only_dir):
    _published_cache(tmp_path / "cache")
    db = tmp_path / "r.duckdb"
    before = _snapshot(tmp_path / "cache")
    err = _one_line_exit_2(sweep.main, ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                                        "--rerank_results_dir", read_only_dir / "res", "--device", "cpu"],
                           capsys)
    assert "--rerank_results_dir" in err and "writable" in err or "read-only" in err, err
    assert not db.exists() and _snapshot(tmp_path / "cache") == before


# ---------------------------------------------------------------- jobs.extract


def _extract_cases(tmp: Path) -> dict[str, tuple[list, str]]:
    qg, gg, lq, lg = toy_distances(q=6, g=10)
    np.save(tmp / "qg.npy", qg.numpy())
    np.save(tmp / "gg.npy", gg.numpy())
    (tmp / "labels.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    (tmp / "cache_file").write_text("a file, not a folder\n")
    imports = ["--dataset", "mine", "--qg", tmp / "qg.npy", "--gg", tmp / "gg.npy"]
    cases = {
        "negative workers": ([*imports, "--workers", "-1"], "--workers"),
        "tpu device": ([*imports, "--device", "tpu"], "--device"),
        "corrupt labels npz": ([*imports, "--labels", tmp / "labels.npz"], "cannot read"),
        "cache_root is a file": ([*imports, "--cache_root", tmp / "cache_file"], "not a folder"),
        "cache_root inside a file": ([*imports, "--cache_root", tmp / "cache_file" / "c"], "not a folder"),
        "unknown flag": ([*imports, "--frobnicate"], "unrecognized arguments"),
        "kg-max zero": ([*imports, "--kg-max", "0"], "--kg-max"),
    }
    if not torch.cuda.is_available():
        cases["cuda without a GPU"] = ([*imports, "--device", "cuda"], "none is available")
    return cases


def test_extract_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    cases = _extract_cases(tmp_path)
    for name, (argv, message) in cases.items():
        if "--cache_root" not in argv:
            argv = [*argv, "--cache_root", tmp_path / "cache"]
        before = _snapshot(tmp_path)
        err = _one_line_exit_2(extract.main, [*argv, "--quiet"], capsys)
        assert err.startswith("error: ") and message in err, (name, err)
        assert _snapshot(tmp_path) == before, name
        assert not (tmp_path / "cache").exists(), name


def test_extract_refuses_a_read_only_cache_root(tmp_path, capsys, read_only_dir):
    qg, gg, _, _ = toy_distances(q=6, g=10)
    np.save(tmp_path / "qg.npy", qg.numpy())
    np.save(tmp_path / "gg.npy", gg.numpy())
    err = _one_line_exit_2(extract.main, ["--dataset", "mine", "--qg", tmp_path / "qg.npy", "--gg",
                                          tmp_path / "gg.npy", "--cache_root", read_only_dir, "--quiet"], capsys)
    assert "--cache_root" in err and "--no-cache" in err, err
    assert list(read_only_dir.iterdir()) == []


# ---------------------------------------------------------- damaged artifacts


def _artifacts(tmp: Path):
    from jobs.artifacts import ArtifactRequest, Compute, Images, ensure_artifacts
    from tests.icfrr.image_data import folder_dataset
    root = tmp / "data" if (tmp / "data").exists() else folder_dataset(tmp / "data")
    return ensure_artifacts(ArtifactRequest("folder", root, source=Images("demo"), cache_root=tmp / "cache",
                                            compute=Compute(num_workers=0, progress=False)), NOTES.append)


NOTES: list[str] = []


def _wrong_shape(path: Path) -> None:
    """A valid Parquet file of the same kind and key, with one row fewer."""
    from store.parquet_rows import read_meta, read_rows, write_rows, write_table
    import pyarrow.parquet as pq
    meta = read_meta(path)
    if meta["kind"] == "items":
        table = pq.read_table(path)
        write_table(path, table.slice(0, table.num_rows - 1), meta)
        return
    names = list(meta["columns"])
    cols, _ = read_rows(path, names)
    index = pq.read_schema(path).names[0]
    write_rows(path, index, {k: v[:-1] for k, v in cols.items()},
               {k: v for k, v in meta.items() if k != "columns"})


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 3
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["items", "query_features", "gallery_features", "qg_dists", "neighbors"])
@pytest.mark.parametrize("damage", [_wrong_shape, _truncated, _flipped], ids=["wrong_shape", "truncated",
                                                                              "flipped"])
def test_a_damaged_artifact_is_recomputed_never_reused(tmp_path, kind, damage):
    good = _artifacts(tmp_path)
    truth = {k: good.features(k) for k in ("query", "gallery")}
    damage(good.paths[kind])
    NOTES.clear()
    again = _artifacts(tmp_path)
    assert not again.reused and any("recomputing" in n for n in NOTES), NOTES
    assert again.qg_dists.numpy().tobytes() == good.qg_dists.numpy().tobytes()
    assert torch.equal(again.graph.indices, good.graph.indices)
    for side in ("query", "gallery"):
        assert np.array_equal(again.features(side), truth[side])
    assert _artifacts(tmp_path).reused                 # the rewritten folder is valid again


# ------------------------------------------------------------------ stale state


def test_a_second_sweep_on_a_locked_store_says_who_holds_it(tmp_path, capsys):
    from store.lock import SweepLock
    _published_cache(tmp_path / "cache")
    db = _small_store(tmp_path / "r.duckdb")
    before = db.read_bytes()
    holder = subprocess.Popen(    # another process holds the lock, as a running sweep would
        [sys.executable, "-c", "import sys, time; from store.lock import SweepLock; "
         "l = SweepLock(sys.argv[1], 'python -m jobs.sweep --dataset demo'); l.acquire(); "
         "print('locked', flush=True); time.sleep(120)", str(db)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _one_line_exit_2(sweep.main, ["--dataset", "custom", "--cache_root", tmp_path / "cache",
                                            "--db", db, "--device", "cpu"], capsys)
        assert f"another sweep (pid {holder.pid}" in err and "--dataset demo" in err, err
        assert db.read_bytes() == before                # refused before the artifacts were computed
        assert not list((tmp_path / "cache" / "custom" / "-1").glob("import-*"))
    finally:
        holder.kill()
        holder.wait()
    with SweepLock(db, "test"):        # the kernel dropped the killed holder's lock
        pass
    assert not (tmp_path / "r.duckdb.lock").exists()


def test_dead_sweeps_are_marked_interrupted_live_ones_kept(tmp_path):
    from icfrr._owners import host_name
    db = tmp_path / "r.duckdb"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
    with connect_writer(db) as con:
        ids = {
            "dead here": writes.start_sweep(con, dataset_id=1, artifact_id=1, command="a",
                                            owner_pid=int(dead_pid), owner_host=host_name()),
            "alive here": writes.start_sweep(con, dataset_id=1, artifact_id=1, command="b",
                                             owner_pid=os.getppid(), owner_host=host_name()),
            "other host, fresh": writes.start_sweep(con, dataset_id=1, artifact_id=1, command="c",
                                                    owner_pid=1, owner_host="elsewhere"),
            "other host, silent": writes.start_sweep(con, dataset_id=1, artifact_id=1, command="d",
                                                     owner_pid=1, owner_host="elsewhere"),
        }
        con.execute("UPDATE sweeps SET heartbeat_at = heartbeat_at - INTERVAL 7 HOUR WHERE sweep_id = ?",
                    [ids["other host, silent"]])
        marked = writes.mark_interrupted(con, lock_held=False)
        assert sorted(marked) == sorted([ids["dead here"], ids["other host, silent"]])
        # holding the store's lock proves every other sweep of this host is dead
        assert writes.mark_interrupted(con, lock_held=True) == [ids["alive here"]]
        status = dict(con.execute("SELECT sweep_id, status FROM sweeps").fetchall())
    assert status[ids["other host, fresh"]] == "running"


def test_a_version_1_store_is_migrated_keeping_its_rows(tmp_path):
    from tests.store.first_schema import first_schema_ddl
    import store.schema as schema
    from store.db import MIGRATIONS
    db = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(db))
    v1 = first_schema_ddl()
    con.execute(v1)
    con.execute("INSERT INTO schema_info VALUES (1)")
    con.execute("INSERT INTO sweeps (dataset_id, artifact_id, command, started_at, status) "
                "VALUES (1, 1, 'old', now(), 'running')")
    con.close()
    assert 1 in MIGRATIONS
    with connect_writer(db) as con:
        assert con.execute("SELECT version FROM schema_info").fetchall() == [(schema.SCHEMA_VERSION,)]
        assert con.execute("SELECT command, owner_pid FROM sweeps").fetchall() == [("old", None)]
        assert writes.mark_interrupted(con, lock_held=False) == [1]   # no owner: taken as this host's
        cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'sweeps'").fetchall()}
    assert cols == set(schema.expected_columns(schema.SCHEMA_VERSION)["sweeps"])


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path):
    from icfrr._owners import host_name, owner_tag, remove_stale
    from icfrr.datasets.demo import ensure_demo
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".demo.tmp-{dead}@{host_name()}-abc123"
    live = tmp_path / f".demo.tmp-{owner_tag()}-def456"
    foreign = tmp_path / f".demo.tmp-{dead}@some-other-host-ghi789"
    untagged = tmp_path / ".demo.tmp-jkl012"
    for d in (stale, live, foreign, untagged):
        (d / "query").mkdir(parents=True)
    ensure_demo(tmp_path / "demo", n_query=1, n_gallery=1)
    assert not stale.exists() and live.exists() and foreign.exists() and untagged.exists()
    assert remove_stale(tmp_path, ".demo.tmp-") == []



# ------------------------------------------------------------ unanswerable queries


def _brute_map(qg: np.ndarray, labels_q: np.ndarray, labels_g: np.ndarray) -> float:
    """mAP@all of the initial ranking, straight from the definition; -1 queries left out."""
    aps = []
    for q in range(len(labels_q)):
        if labels_q[q] == -1:
            continue
        order = np.argsort(qg[q], kind="stable")
        rel = labels_g[order] == labels_q[q]
        hits = np.flatnonzero(rel)
        aps.append(0.0 if hits.size == 0 else float(np.mean((np.arange(hits.size) + 1) / (hits + 1))))
    return float(np.mean(aps))


def test_queries_without_relevant_items_count_as_ap_0_or_are_skipped(tmp_path, capsys):
    qg, gg, lq, lg = toy_distances(q=12, g=40)
    lq = lq.copy()
    lq[[3, 7]] = 99                                  # no gallery item has label 99
    folder = tmp_path / "cache" / "custom" / "-1"
    folder.mkdir(parents=True)
    torch.save(qg, folder / "qg_dists.pth")
    torch.save(gg, folder / "gg_dists.pth")
    torch.save({"query": torch.from_numpy(lq), "gallery": torch.from_numpy(lg)}, folder / "labels.pth")
    db = tmp_path / "r.duckdb"
    base = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db, "--kg", 4, "--kq", 4,
            "--n_times", 1, "--device", "cpu"]
    assert sweep.main([str(a) for a in base]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "no gallery item has" in line]
    assert len(warning) == 1 and "2 of 12 queries" in warning[0] and "AP 0" in warning[0], err
    assert "1 queries of unknown label" in warning[0]
    assert sweep.main([str(a) for a in [*base, "--skip-unanswerable"]]) == 0
    err = capsys.readouterr().err
    assert "left out of every mean (--skip-unanswerable)" in err, err
    with connect_reader(db) as con:
        rows = con.execute("SELECT r.params, m.map_all FROM runs r JOIN run_metrics m USING (run_id) "
                           "WHERE m.iteration = 0 ORDER BY r.run_id").fetchall()
    assert len(rows) == 2                            # another parameter, another run
    assert "skip_unanswerable" not in rows[0][0] and '"skip_unanswerable": true' in rows[1][0]
    qg_np = qg.numpy()
    assert rows[0][1] == pytest.approx(_brute_map(qg_np, lq, lg), abs=1e-12)
    skipped = lq.copy()
    skipped[[3, 7]] = -1
    assert rows[1][1] == pytest.approx(_brute_map(qg_np, skipped, lg), abs=1e-12)
    assert rows[1][1] > rows[0][1]


# ------------------------------------------------------------------ jobs.bench

BENCH_BAD = {
    "unknown shape": (["--shape", "huge"], "invalid choice"),
    "unknown flag": (["--fast"], "unrecognized arguments"),
    "quick takes no value": (["--quick", "yes"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", list(BENCH_BAD))
def test_bench_bad_input_one_line_exit_2(tmp_path, capsys, monkeypatch, case):
    from jobs import bench
    monkeypatch.chdir(tmp_path)
    argv, message = BENCH_BAD[case]
    err = _one_line_exit_2(bench.main, argv, capsys)
    assert err.startswith("bench: error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------- kills at chosen points

_KILLER = """
import os, signal, sys
import {module} as target
real = target.{name}
calls = [0]
def killer(*a, **k):
    calls[0] += 1
    if calls[0] == {at}:
        os.kill(os.getpid(), signal.SIGKILL)      # no cleanup, as a power cut or OOM kill
    return real(*a, **k)
target.{name} = killer
from {command} import main
sys.exit(main(sys.argv[1:]))
"""

KILL_POINTS = {   # where: (module, function, on which call)
    "during extraction": ("store.artifacts", "_write_graph", 1),   # features written, folder not in place
    "mid-run": ("store.writes", "write_run", 2),                   # the second run computed, not committed
    "between runs": ("store.writes", "heartbeat", 1),              # the first run committed
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_at_a_chosen_point_then_resumed(tmp_path, capsys, point):
    from tests.jobs.test_sweep import make_folder_dataset
    module, name, at = KILL_POINTS[point]
    root = make_folder_dataset(tmp_path / "data")
    db = tmp_path / "r.duckdb"
    argv = [str(a) for a in ["--dataset", "folder", "--data_root", root, "--backbone", "demo", "--cache_root",
                             tmp_path / "cache", "--db", db, "--kg", 3, 4, 5, "--kq", 4, "--n_times", 2,
                             "--top-n", 5, "--device", "cpu"]]
    script = _KILLER.format(module=module, name=name, at=at, command="jobs.sweep")
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    committed = 0
    if db.exists():
        with connect_reader(db) as con:
            committed = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            assert con.execute("SELECT status FROM sweeps").fetchall() == [("running",)]
    assert committed == {"during extraction": 0, "mid-run": 1, "between runs": 1}[point]
    # the same command again: resumes, cleans up, marks the dead sweep
    code = sweep.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("(skipped)") == committed and out.count("(new)") == 3 - committed
    leftovers = [p.name for p in (tmp_path / "cache").rglob(".*") if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []
    with connect_reader(db) as con:
        assert con.execute("SELECT count(*), count(DISTINCT config_key) FROM runs").fetchone() == (3, 3)
        statuses = [s for (s,) in con.execute("SELECT status FROM sweeps ORDER BY sweep_id").fetchall()]
        assert statuses == (["interrupted", "done"] if committed or point == "mid-run" else ["done"])
        assert con.execute("SELECT count(*) FROM run_metrics").fetchone()[0] == 3 * 3
    assert not Path(f"{db}.lock").exists()


# ------------------------------------------------------------------ a full disk


@pytest.mark.slow
def test_disk_full_while_committing_keeps_committed_runs(tmp_path, capsys):
    _published_cache(tmp_path / "cache")
    with _mounted_tmpfs(tmp_path / "small", "size=16m") as small:
        db = small / "r.duckdb"
        argv = [str(a) for a in ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                                 "--kg", *range(2, 40), "--kq", 40, "--n_times", 3, "--top-n", 40,
                                 "--device", "cpu"]]
        filler = small / "filler"
        connect_writer(db).close()
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 600_000))      # leave room for a few runs only
        code = sweep.main(argv)
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert len(errors) == 1 and "could not write" in errors[0] and "run the same command again" in errors[0]
        filler.unlink()                                         # space again: the same command resumes
        with connect_reader(db) as con:
            kept = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            assert con.execute("SELECT count(*) FROM run_metrics").fetchone()[0] == kept * 4
        code = sweep.main(argv)
        out, err = capsys.readouterr()
        assert code == 0, err[-3000:]
        assert out.count("(skipped)") == kept and out.count("(new)") == 38 - kept
