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
    from icfrr.owners import host_name
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
    from icfrr.owners import host_name, owner_tag, remove_stale
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


# ------------------------------------------------- issue 14: values checked where they enter, the misuse list


def _imports(tmp: Path, *, q: int = 12, g: int = 40) -> dict[str, Path]:
    """Distance matrices, labels and a [Q, Q] query-query file of a toy problem, as .npy/.npz files."""
    qg, gg, lq, lg = toy_distances(q=q, g=g)
    files = {"qg": tmp / "qg.npy", "gg": tmp / "gg.npy", "labels": tmp / "labels.npz", "qq": tmp / "qq.npy"}
    np.save(files["qg"], qg.numpy())
    np.save(files["gg"], gg.numpy())
    np.savez(files["labels"], query=lq, gallery=lg)
    np.save(files["qq"], torch.cdist(qg, qg).numpy())   # any finite [Q, Q] matrix will do here
    return files


def _labels_with(tmp: Path, value: int, dtype) -> Path:
    _, _, lq, lg = toy_distances()
    query = np.maximum(lq, 0).astype(dtype)      # the toy's unknown -1 has no unsigned spelling
    query[3] = value
    path = tmp / f"labels_{np.dtype(dtype).name}_{value}.npz"
    np.savez(path, query=query, gallery=lg.astype(dtype))
    return path


def _float64_with(tmp: Path, name: str, shape: tuple[int, int]) -> Path:
    """A float64 matrix of ``shape`` with one entry of 1e300: finite in float64, inf in float32."""
    qg, gg, _, _ = toy_distances()
    m = {"qg": qg, "gg": gg}.get(name)
    a = m.numpy().astype(np.float64) if m is not None else np.random.default_rng(0).normal(size=shape)
    a[1, 2] = 1e300
    path = tmp / f"{name}_1e300.npy"
    np.save(path, a)
    return path


def _misuse_cases(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (sweep flags after --db/--cache_root, the message's telling part)."""
    f = _imports(tmp)
    imp = ["--qg", f["qg"], "--gg", f["gg"], "--labels", f["labels"]]
    np.save(tmp / "qq_wrong.npy", np.zeros((11, 11), np.float32))
    np.save(tmp / "qg_empty.npy", np.zeros((0, 40), np.float32))
    np.save(tmp / "feats_q.npy", np.ones((12, 8)))
    return {
        # W4: --per_class with imported matrices was ignored, yet recorded
        "--per_class with --qg/--gg": (["--dataset", "mine", *imp, "--per_class", 5],
                                       "--per_class 5 selects images"),
        # W5: labels that wrap or do not fit the store's INTEGER column
        "uint64 label 2**64-1": (["--dataset", "mine", "--qg", f["qg"], "--gg", f["gg"], "--labels",
                                  _labels_with(tmp, 2**64 - 1, np.uint64)], "18446744073709551615 at index 3"),
        "int64 label 2**31": (["--dataset", "mine", "--qg", f["qg"], "--gg", f["gg"], "--labels",
                               _labels_with(tmp, 2**31, np.int64)], "above 2147483647"),
        "negative label -5": (["--dataset", "mine", "--qg", f["qg"], "--gg", f["gg"], "--labels",
                               _labels_with(tmp, -5, np.int64)], "label -5 at index 3 is negative"),
        # W6: finite in float64, infinite once cast to float32
        "float64 1e300 distances": (["--dataset", "mine", "--qg", _float64_with(tmp, "qg", (0, 0)), "--gg",
                                     f["gg"]], "NaN or infinite"),
        "float64 1e300 gallery distances": (["--dataset", "mine", "--qg", f["qg"], "--gg",
                                             _float64_with(tmp, "gg", (0, 0))], "NaN or infinite"),
        "float64 1e300 features": (["--dataset", "mine", "--query-features", tmp / "feats_q.npy",
                                    "--gallery-features", _float64_with(tmp, "feats_g", (40, 8))],
                                   "NaN or infinite"),
        "0-row matrix": (["--dataset", "mine", "--qg", tmp / "qg_empty.npy", "--gg", f["gg"]],
                         "needs at least one row"),
        # refusals after the artifact checks used to leave a cache folder behind
        "k_reciprocal on an import without qq": (["--dataset", "mine", *imp, "--method", "icfrr", "k_reciprocal"],
                                                 "no query-query matrix"),
        "ecn with a wrong-shaped --qq": (["--dataset", "mine", *imp, "--qq", tmp / "qq_wrong.npy", "--method", "icfrr",
                                          "ecn"], "is [11, 11] but there are 12 queries"),
        # --dataset names that would escape --cache_root
        "--dataset ../x": (["--dataset", "../x", *imp], "is not a plain name"),
        "--dataset absolute": (["--dataset", str(tmp / "elsewhere"), *imp], "is not a plain name"),
        "--dataset empty": (["--dataset", "", *imp], "is not a plain name"),
        "--dataset ..": (["--dataset", "..", *imp], "is not a plain name"),
    }


MISUSE_CASES = ("--per_class with --qg/--gg", "uint64 label 2**64-1", "int64 label 2**31", "negative label -5",
                "float64 1e300 distances", "float64 1e300 gallery distances", "float64 1e300 features",
                "0-row matrix", "k_reciprocal on an import without qq", "ecn with a wrong-shaped --qq",
                "--dataset ../x", "--dataset absolute", "--dataset empty", "--dataset ..")


@pytest.mark.parametrize("case", MISUSE_CASES)
def test_sweep_misuse_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    cases = _misuse_cases(tmp_path)
    assert set(cases) == set(MISUSE_CASES)
    argv, message = cases[case]
    db = _small_store(tmp_path / "r.duckdb")
    before = _snapshot(tmp_path)
    err = _one_line_exit_2(sweep.main, [*argv, "--db", db, "--cache_root", tmp_path / "cache", "--kg", 4,
                                        "--kq", 4, "--n_times", 1, "--device", "cpu"], capsys)
    assert err.startswith("sweep: error: ") and message in err, err
    assert _snapshot(tmp_path) == before                # the store byte for byte, no cache file
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "x").exists()
    with connect_reader(db) as con:                     # no dataset, artifact or sweep row either
        assert con.execute("SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM artifacts), "
                           "(SELECT count(*) FROM sweeps)").fetchone() == (1, 0, 0)


def test_extract_misuse_one_line_exit_2_nothing_written(tmp_path, capsys):
    cases = _misuse_cases(tmp_path)
    keep = ("--per_class", "uint64", "float64 1e300 distances", "0-row", "--dataset ../x", "--dataset absolute",
            "--dataset empty")
    cases = {k: v for k, v in cases.items() if k.startswith(keep)}
    f = _imports(tmp_path)
    cases["extract --qq of the wrong shape"] = (
        ["--dataset", "mine", "--qg", f["qg"], "--gg", f["gg"], "--qq", tmp_path / "qq_wrong.npy"],
        "is [11, 11] but there are 12 queries")
    for name, (argv, message) in cases.items():
        before = _snapshot(tmp_path)
        err = _one_line_exit_2(extract.main, [*argv, "--cache_root", tmp_path / "cache", "--quiet"], capsys)
        assert err.startswith("error: ") and message in err, (name, err)
        assert _snapshot(tmp_path) == before and not (tmp_path / "cache").exists(), name


def test_labels_that_fit_are_kept_exactly(tmp_path):
    """The checks refuse only what would wrap: -1, 0 and 2**31-1 in uint/int arrays come back unchanged."""
    from store.imports import read_labels
    path = tmp_path / "ok.npz"
    np.savez(path, query=np.array([-1, 0, 2**31 - 1], np.int64), gallery=np.array([0, 2**31 - 1], np.uint64))
    q, g = read_labels(path, 3, 2)
    assert q.tolist() == [-1, 0, 2**31 - 1] and g.tolist() == [0, 2**31 - 1] and q.dtype == g.dtype == np.int64


def _run_module(module: str, argv: list, timeout: float = 240, env: dict | None = None
                ) -> subprocess.CompletedProcess:
    """``python -m module argv`` in a child (real stderr: Python warnings, no pytest capture)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})


def test_db_on_a_fifo_or_a_device_is_refused_at_once(tmp_path):
    f = _imports(tmp_path)
    fifo = tmp_path / "r.duckdb"
    os.mkfifo(fifo)
    for db, kind in ((fifo, "is a FIFO"), (Path("/dev/null"), "is a device")):
        before = _snapshot(tmp_path)
        done = _run_module("jobs.sweep", ["--dataset", "mine", "--qg", f["qg"], "--gg", f["gg"], "--db", db,
                                          "--cache_root", tmp_path / "cache", "--device", "cpu"], timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and kind in lines[0], done.stderr
        assert _snapshot(tmp_path) == before and not (tmp_path / "cache").exists()
        assert not Path(f"{os.path.realpath(db)}.lock").exists()
    assert fifo.exists() and not fifo.is_file()


def test_db_on_a_sqlite_file_is_refused_and_no_extension_is_ever_loaded(tmp_path, capsys):
    import sqlite3
    from store.db import StoreError, check_database, connect_writer
    db = tmp_path / "results.duckdb"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE runs (id INTEGER)")
    con.commit()
    con.close()
    _published_cache(tmp_path / "cache")
    before = _snapshot(tmp_path)
    err = _one_line_exit_2(sweep.main, ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                                        "--device", "cpu"], capsys)
    assert "is not a DuckDB database" in err and "download" not in err, err
    for check in (check_database, connect_writer):       # the sweep's own check and the writer path
        with pytest.raises(StoreError, match="is not a DuckDB database"):
            check(db)
    assert _snapshot(tmp_path) == before
    with connect_writer(tmp_path / "new.duckdb") as con:  # a writer connection: autoload and autoinstall off
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('autoload_known_extensions', "
            "'autoinstall_known_extensions')").fetchall())
    assert settings == {"autoload_known_extensions": "false", "autoinstall_known_extensions": "false"}


@pytest.mark.parametrize("what", ["distances", "features"])
def test_refusals_print_no_warnings(tmp_path, what):
    """One line means one line: the float32 cast's overflow warning (numpy) is not printed."""
    f = _imports(tmp_path)
    np.save(tmp_path / "feats_q.npy", np.ones((12, 8)))
    source = (["--qg", _float64_with(tmp_path, "qg", (0, 0)), "--gg", f["gg"]] if what == "distances" else
              ["--query-features", tmp_path / "feats_q.npy", "--gallery-features",
               _float64_with(tmp_path, "feats_g", (40, 8))])
    done = _run_module("jobs.sweep", ["--dataset", "mine", *source, "--db", tmp_path / "r.duckdb", "--cache_root",
                                      tmp_path / "cache", "--device", "cpu"], env={"PYTHONWARNINGS": "always"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "NaN or infinite" in lines[0], done.stderr
    assert not (tmp_path / "r.duckdb").exists() and not (tmp_path / "cache").exists()


def test_a_symlink_to_a_held_store_is_refused_and_the_live_sweep_kept(tmp_path, capsys):
    _published_cache(tmp_path / "cache")
    real = tmp_path / "real" / "r.duckdb"
    real.parent.mkdir()
    link = tmp_path / "link.duckdb"
    link.symlink_to(real)
    holder = subprocess.Popen(    # a live sweep: its 'running' row, then the store's lock, held
        [sys.executable, "-c", "import os, sys, time; from store.db import connect_writer; "
         "from store import writes; from store.lock import SweepLock\n"
         "with connect_writer(sys.argv[1]) as con:\n"
         "    writes.start_sweep(con, dataset_id=1, artifact_id=1, command='live', owner_pid=os.getpid())\n"
         "l = SweepLock(sys.argv[1], 'python -m jobs.sweep --dataset live'); l.acquire()\n"
         "print('locked', flush=True); time.sleep(120)", str(real)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(tmp_path)
        err = _one_line_exit_2(sweep.main, ["--dataset", "custom", "--cache_root", tmp_path / "cache",
                                            "--db", link, "--kg", 4, "--kq", 4, "--device", "cpu"], capsys)
        assert f"another sweep (pid {holder.pid}" in err and "--dataset live" in err, err
        assert _snapshot(tmp_path) == before
        with connect_reader(real) as con:
            assert con.execute("SELECT command, status FROM sweeps").fetchall() == [("live", "running")]
    finally:
        holder.kill()
        holder.wait()


_INTERRUPTER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
from store import writes
real = writes.heartbeat
def interrupt(*a, **k):      # Ctrl-C once the first run is committed
    os.kill(os.getpid(), signal.SIGINT)
    return real(*a, **k)
writes.heartbeat = interrupt
from jobs.sweep import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_one_line_exit_130_sweep_interrupted_not_failed(tmp_path, capsys):
    _published_cache(tmp_path / "cache")
    db = tmp_path / "r.duckdb"
    argv = [str(a) for a in ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
                             "--kg", 3, 4, 5, "--kq", 4, "--n_times", 1, "--device", "cpu"]]
    done = subprocess.run([sys.executable, "-c", _INTERRUPTER, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 130, done.stderr[-2000:]
    # the notes of a started sweep come first; the interruption itself is one line, the last, no traceback
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and sum("interrupted" in line for line in lines) == 1, done.stderr
    assert lines[-1].startswith("sweep: interrupted (Ctrl-C)") and "resume" in lines[-1], lines
    with connect_reader(db) as con:
        assert con.execute("SELECT status FROM sweeps").fetchall() == [("interrupted",)]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert not Path(f"{db}.lock").exists()
    assert sweep.main(argv) == 0                    # the same command resumes: one skipped, two new
    out = capsys.readouterr().out
    assert out.count("(skipped)") == 1 and out.count("(new)") == 2


def test_a_larger_top_n_stores_longer_rankings_never_skips(tmp_path, capsys):
    _published_cache(tmp_path / "cache")

    def sweep_top(db: Path, n: int) -> tuple[str, list]:
        argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db, "--kg", 4, "--kq", 4,
                "--n_times", 1, "--device", "cpu", "--top-n", n]
        assert sweep.main([str(a) for a in argv]) == 0
        captured = capsys.readouterr()
        with connect_reader(db) as con:
            rows = con.execute("SELECT r.run_id, k.iteration, k.query_idx, k.rank, k.gallery_idx FROM runs r "
                               "JOIN rankings k USING (run_id) ORDER BY 1, 2, 3, 4").fetchall()
        return captured.out + captured.err, rows

    db = tmp_path / "r.duckdb"
    _, short = sweep_top(db, 3)
    assert {r[3] for r in short} == {1, 2, 3}
    text, longer = sweep_top(db, 10)
    assert "keep fewer than the top 10" in text and "(new)" in text, text
    _, fresh = sweep_top(tmp_path / "fresh.duckdb", 10)      # the oracle: a new store asked for the top 10
    assert [r[1:] for r in longer] == [r[1:] for r in fresh]
    assert len({r[0] for r in longer}) == 1                  # the short run was replaced, not duplicated
    text, again = sweep_top(db, 5)                           # fewer than stored: a true skip
    assert "(skipped)" in text and again == longer


BENCH_INTERNAL = {
    "--side without --folder": (["--side", "engine"], "needs --folder and --k"),
    "--k without --side": (["--k", "4"], "internal flag"),
    "--device without --side": (["--device", "cuda"], "internal flag"),
    "--side on an empty folder": (["--side", "literal", "--folder", "{tmp}", "--k", "4"], "holds no qg.npy"),
    "--side with --k 0": (["--side", "engine", "--folder", "{tmp}", "--k", "0"], "--k must be at least 1"),
    "--n-configs 0": (["--sweep", "--n-configs", "0"], "--n-configs must be at least 1"),
}


@pytest.mark.parametrize("case", list(BENCH_INTERNAL))
def test_bench_internal_flags_validated(tmp_path, capsys, monkeypatch, case):
    from jobs import bench
    monkeypatch.chdir(tmp_path)
    argv, message = BENCH_INTERNAL[case]
    err = _one_line_exit_2(bench.main, [a.format(tmp=tmp_path) for a in argv], capsys)
    assert err.startswith("bench: error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []
    assert "--side" not in bench.build_parser().format_help()


def test_per_class_with_imported_matrices_applies_to_the_dataset_images(tmp_path, capsys):
    """--per_class with --qg/--gg and a dataset's images: it selects the items, and only then is recorded."""
    from icfrr.datasets import load_dataset
    from tests.jobs.test_sweep import make_folder_dataset
    root = make_folder_dataset(tmp_path / "data")
    picked = load_dataset("folder", root, 1)                  # the first image of each class, each side
    n_q, n_g = len(picked.query), len(picked.gallery)
    assert (n_q, n_g) == (3, 3)
    rng = np.random.default_rng(0)
    fq, fg = rng.normal(size=(n_q, 4)), rng.normal(size=(n_g, 4))
    np.save(tmp_path / "qg.npy", np.linalg.norm(fq[:, None] - fg[None], axis=2).astype(np.float32))
    np.save(tmp_path / "gg.npy", np.linalg.norm(fg[:, None] - fg[None], axis=2).astype(np.float32))
    db = tmp_path / "r.duckdb"
    argv = ["--dataset", "folder", "--data_root", root, "--qg", tmp_path / "qg.npy", "--gg", tmp_path / "gg.npy",
            "--cache_root", tmp_path / "cache", "--db", db, "--kg", 2, "--kq", 2, "--n_times", 1, "--device", "cpu"]
    assert sweep.main([str(a) for a in [*argv, "--per_class", 1]]) == 0, capsys.readouterr().err
    with connect_reader(db) as con:
        assert con.execute("SELECT per_class FROM artifacts").fetchall() == [(1,)]
        paths = con.execute("SELECT side, path FROM items ORDER BY side DESC, idx").fetchall()
    assert paths == [("query", it.path) for it in picked.query] + [("gallery", it.path) for it in picked.gallery]
    capsys.readouterr()
    before = _snapshot(tmp_path)                  # --per_class 2 selects 6 x 6 items: 3 x 3 matrices are refused
    err = _one_line_exit_2(sweep.main, [*argv, "--per_class", 2], capsys)
    assert "use the --per_class the distances were computed with" in err, err
    assert _snapshot(tmp_path) == before


_EXTRACT_INTERRUPTER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
from store import artifacts
real = artifacts._write_graph
def interrupt(*a, **k):      # Ctrl-C while the cache folder is being written
    os.kill(os.getpid(), signal.SIGINT)
    return real(*a, **k)
artifacts._write_graph = interrupt
from jobs.extract import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_extract_one_line_exit_130_no_cache_folder(tmp_path):
    f = _imports(tmp_path)
    done = subprocess.run([sys.executable, "-c", _EXTRACT_INTERRUPTER, "--dataset", "mine", "--qg", str(f["qg"]),
                           "--gg", str(f["gg"]), "--cache_root", str(tmp_path / "cache"), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 130 and len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0], done.stderr
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []   # no file, not even a temporary one
