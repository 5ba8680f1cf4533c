"""python -m jobs.sweep end to end: DuckDB holds exactly what the engine computes.

Oracle: the engine called directly (icfrr.rerank / per_query / evaluate) on the
same distances. Data: tiny generated distance caches in the published layout,
and a tiny generated class-folder image dataset.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from PIL import Image

import icfrr
from jobs import sweep, sweep_flags
from store.db import connect_reader
from store.schema import SCHEMA_VERSION
from tests.jobs.toy import toy_distances

Q, G = 12, 40


def write_cache(root: Path, dataset: str = "custom", per_class: int = -1, labels: bool = True):
    """The published cache layout <root>/<dataset>/<per_class>/*.pth; returns the toy problem."""
    qg, gg, labels_q, labels_g = toy_distances(q=Q, g=G)
    folder = root / dataset / str(per_class)
    folder.mkdir(parents=True)
    torch.save(qg, folder / "qg_dists.pth")
    torch.save(gg, folder / "gg_dists.pth")
    if labels:
        torch.save({"query": torch.from_numpy(labels_q), "gallery": torch.from_numpy(labels_g)},
                   folder / "labels.pth")
    return qg, gg, labels_q, labels_g


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = sweep.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def check_run_equals_engine(con, run_id: int, qg, gg, labels_q, labels_g, top_n: int) -> None:
    """Every stored number of one run against the engine called directly."""
    variant, kg, kq, beta, n_iter, status = con.execute(
        "SELECT variant, kg, kq, beta, n_iter, status FROM runs WHERE run_id = ?",
        [run_id]).fetchone()
    assert status == "done"
    rankings = icfrr.rerank(qg, gg, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant,
                            device="cpu")
    want = [icfrr.evaluate(r, labels_q, labels_g) for r in rankings]
    got = con.execute("SELECT iteration, map_all, map_200, p_25, p_100, p_200 FROM run_metrics "
                      "WHERE run_id = ? ORDER BY iteration", [run_id]).fetchall()
    assert [g[0] for g in got] == list(range(n_iter + 1))
    for row, w in zip(got, want):
        assert row[1:] == pytest.approx([w[k] for k in icfrr.METRIC_NAMES], rel=1e-12)
    best = int(np.argmax([w["map_all"] for w in want]))
    kept = sorted({0, best, n_iter})
    stored = [r[0] for r in con.execute("SELECT DISTINCT iteration FROM query_metrics "
                                        "WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()]
    assert stored == list(range(n_iter + 1))  # every iteration's per-query metrics
    ranked = [r[0] for r in con.execute("SELECT DISTINCT iteration FROM rankings "
                                        "WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()]
    assert ranked == kept  # rankings only for 0, the best and the last
    for it in range(n_iter + 1):
        pq = icfrr.per_query(rankings[it], labels_q, labels_g)
        rows = con.execute("SELECT query_idx, ap, ap_200, p_25, p_100, p_200, first_relevant_rank "
                           "FROM query_metrics WHERE run_id = ? AND iteration = ? ORDER BY 1",
                           [run_id, it]).fetchall()
        assert [r[0] for r in rows] == list(range(Q))
        for q, r in enumerate(rows):
            if labels_q[q] == -1:
                assert r[1:] == (None,) * 6
            else:
                assert r[1:6] == pytest.approx([pq[k][q] for k in ("ap", "ap_200", "p_25",
                                                                   "p_100", "p_200")])
                frr = int(pq["first_relevant_rank"][q])
                assert r[6] == (None if frr == -1 else frr)
        if it not in kept:
            continue
        top = con.execute("SELECT query_idx, rank, gallery_idx FROM rankings WHERE run_id = ? "
                          "AND iteration = ? ORDER BY query_idx, rank", [run_id, it]).fetchall()
        n = min(top_n, G)
        assert top == [(q, k + 1, int(rankings[it][q, k])) for q in range(Q) for k in range(n)]


# ----------------------------------------------------------------- imported distances


def test_imported_cache_sweep_equals_engine(tmp_path: Path, capsys) -> None:
    qg, gg, labels_q, labels_g = write_cache(tmp_path / "cache")
    db = tmp_path / "out" / "r.duckdb"
    argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
            "--kg", 6, 100, "--kq", 5, "--beta", 1.5, "--n-times", 3,
            "--variant", "reference", "paper", "--top-n", 7, "--device", "cpu"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "KG 100 above the gallery size 40: clamped" in err
    assert f"streamlit run dashboard/app.py -- --db {db}" in out
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("SELECT run_id, kg, params FROM runs ORDER BY run_id").fetchall()
        assert len(runs) == 2 * 2
        assert {r[1] for r in runs} == {6, G - 1}
        assert {json.loads(r[2])["asked_kg"] for r in runs} == {6, 100}
        for run_id, *_ in runs:
            check_run_equals_engine(con, run_id, qg, gg, labels_q, labels_g, top_n=7)
        assert con.execute("SELECT name, root, n_query, n_gallery FROM datasets").fetchall() == [
            ("custom", None, Q, G)]
        items = con.execute("SELECT side, idx, path, label FROM items ORDER BY side DESC, idx")
        assert items.fetchall() == (
            [("query", i, None, int(x)) for i, x in enumerate(labels_q)]
            + [("gallery", i, None, int(x)) for i, x in enumerate(labels_g)])
        assert con.execute("SELECT status FROM sweeps").fetchall() == [("done",)]
    finally:
        con.close()
    # the table: one line per configuration, before -> after, one best marked
    lines = [ln for ln in out.splitlines() if re.search(r"\d -> \d", ln)]
    assert len(lines) == 4 and sum(ln.startswith("*") for ln in lines) == 1

    # the same command again: every run skipped and reported, nothing duplicated
    code, out, err = run(argv, capsys)
    assert code == 0 and "skipping 4 configuration(s)" in err
    with connect_reader(db) as con:
        assert con.execute("SELECT count(*), count(DISTINCT config_key) FROM runs").fetchone() \
            == (4, 4)
        assert con.execute("SELECT count(*) FROM sweeps").fetchone() == (2,)
    assert out.count("(skipped)") == 4

    # --force redoes them: still one run per configuration, new ids, old rows gone
    code, out, err = run([*argv, "--force"], capsys)
    assert code == 0, err
    with connect_reader(db) as con:
        ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY 1").fetchall()]
        assert len(ids) == 4 and min(ids) > max(r[0] for r in runs)
        for table in ("run_metrics", "query_metrics", "rankings"):
            left = con.execute(f"SELECT count(*) FROM {table} WHERE run_id NOT IN "
                               "(SELECT run_id FROM runs)").fetchone()[0]
            assert left == 0, table


def test_cache_without_labels(tmp_path: Path, capsys) -> None:
    write_cache(tmp_path / "cache", dataset="mine", labels=False)
    db = tmp_path / "r.duckdb"
    code, out, err = run(["--dataset", "mine", "--cache_root", tmp_path / "cache", "--db", db,
                          "--kg", 8, "--kq", 6, "--n_times", 2], capsys)
    assert code == 0, err
    with connect_reader(db) as con:
        assert con.execute("SELECT count(*) FROM run_metrics WHERE map_all IS NULL").fetchone() \
            == (3,)
        assert con.execute("SELECT count(DISTINCT label) FROM items").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM rankings").fetchone()[0] == 2 * Q * 40
    assert "n/a" in out


# ------------------------------------------------------------------ images, end to end


def _draw(path: Path, cls: int, variant: int, size: int = 32) -> None:
    """A tiny image whose stripes depend on the class (so classes are separable)."""
    rng = np.random.default_rng([cls, variant])
    arr = np.full((size, size, 3), 255, np.uint8)
    period = 3 + 2 * cls
    arr[(np.arange(size) // period % 2 == 0)] = [40 * cls, 90, 200 - 50 * cls]
    arr = np.clip(arr.astype(int) + rng.integers(-30, 30, arr.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr if variant % 2 else arr.transpose(1, 0, 2)).save(path)


def make_folder_dataset(root: Path, classes=("ant", "bee", "cow"), n_q=2, n_g=5) -> Path:
    for c, name in enumerate(classes):
        for i in range(n_q):
            _draw(root / "query" / name / f"{name}_q{i}.png", c, i)
        for i in range(n_g):
            _draw(root / "gallery" / name / f"{name}_g{i}.png", c, 10 + i)
    return root


def test_generated_folder_dataset_end_to_end(tmp_path: Path, capsys) -> None:
    from jobs.artifacts import ArtifactRequest, Compute, Images, ensure_artifacts

    root = make_folder_dataset(tmp_path / "data")
    db = tmp_path / "r.duckdb"
    argv = ["--dataset", "folder", "--data_root", root, "--backbone", "demo", "--cache_root",
            tmp_path / "cache", "--db", db, "--kg", 4, "--kq", 3, 6, "--n_times", 2, "--top-n", 5,
            "--device", "cpu"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    arts = ensure_artifacts(ArtifactRequest("folder", root, source=Images("demo"), cache_root=tmp_path / "cache",
                                            kg_max=4, compute=Compute(progress=False)), lambda m: None)
    assert arts.reused
    qg = arts.qg_dists.numpy()
    gg = torch.cdist(torch.from_numpy(arts.features("gallery")),
                     torch.from_numpy(arts.features("gallery"))).numpy()
    global Q, G
    saved = Q, G
    Q, G = qg.shape
    try:
        with connect_reader(db) as con:
            ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY 1").fetchall()]
            assert len(ids) == 2
            for run_id in ids:
                check_run_equals_engine(con, run_id, qg, gg, arts.labels_q, arts.labels_g, 5)
            root_row, = con.execute("SELECT root FROM datasets").fetchone()
            assert Path(root_row) == root.resolve()
            paths = con.execute("SELECT path FROM items WHERE side = 'gallery' ORDER BY idx")
            assert [p for (p,) in paths.fetchall()] == [it.path for it in arts.dataset.gallery]
            assert all((root / it.path).is_file() for it in arts.dataset.gallery)
            backbone, k, nb_path = con.execute(
                "SELECT backbone, neighbors_k, neighbors_path FROM artifacts").fetchone()
            assert backbone == "demo" and k == G - 1 and Path(nb_path).is_file()
    finally:
        Q, G = saved


def test_two_roots_with_the_same_file_names_get_their_own_runs(tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    """Issue 11: swept one after the other from one folder, the second root must not reuse the first."""
    monkeypatch.chdir(tmp_path)                        # the default cache/ is shared, as for a user
    first = make_folder_dataset(tmp_path / "a")
    second = tmp_path / "b"
    for c, name in enumerate(("ant", "bee", "cow")):   # same names, other pictures (classes rotated)
        for i in range(2):
            _draw(second / "query" / name / f"{name}_q{i}.png", (c + 1) % 3, i + 4)
        for i in range(5):
            _draw(second / "gallery" / name / f"{name}_g{i}.png", c if i < 2 else (c + 2) % 3, 20 + i)
    common = ["--dataset", "folder", "--backbone", "demo", "--kg", 4, "--kq", 3, "--n_times", 2,
              "--top-n", 5, "--device", "cpu"]

    def final_map(db: Path, root: Path) -> list[float]:
        with connect_reader(db) as con:
            return [v for (v,) in con.execute(
                "SELECT m.map_all FROM run_metrics m JOIN runs r USING (run_id) "
                "JOIN sweeps s USING (sweep_id) JOIN datasets d USING (dataset_id) "
                "WHERE d.root = ? ORDER BY m.iteration", [str(root.resolve())]).fetchall()]

    for root in (first, second):
        code, out, err = run([*common, "--data_root", root, "--db", "shared.duckdb"], capsys)
        assert code == 0 and "(new)" in out and "reusing artifacts" not in err, err
    code, _, err = run([*common, "--data_root", second, "--db", "fresh.duckdb", "--cache_root", "fresh"],
                       capsys)
    assert code == 0, err
    truth = final_map(Path("fresh.duckdb"), second)
    assert final_map(Path("shared.duckdb"), second) == truth
    assert final_map(Path("shared.duckdb"), first) != truth
    with connect_reader(Path("shared.duckdb")) as con:
        assert con.execute("SELECT count(DISTINCT dataset_id), count(DISTINCT cache_key) "
                           "FROM artifacts").fetchone() == (2, 2)


# -------------------------------------------------------------- the published flags path


def make_custom_images(root: Path, labels_q: np.ndarray, labels_g: np.ndarray) -> Path:
    """The published custom layout: query/*, gallery/*, labels.json (labels from the cache)."""
    labels = {"query": {}, "gallery": {}}
    for side, labs in (("query", labels_q), ("gallery", labels_g)):
        for i, lab in enumerate(labs):
            name = f"{side[0]}{i:03d}.png"
            _draw(root / side / name, max(int(lab), 0), i)
            labels[side][name] = int(lab)
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def test_published_flags_write_published_files(tmp_path: Path, capsys) -> None:
    qg, gg, labels_q, labels_g = write_cache(tmp_path / "examples")
    data = make_custom_images(tmp_path / "examples" / "custom", labels_q, labels_g)
    out_dir = tmp_path / "res"
    code, out, err = run(["--dataset", "custom", "--cache_root", tmp_path / "examples",
                          "--data_root", data, "--n_times", 3, "--KG", 10, "--KQ", 15,
                          "--beta", 0.5, "--per_class", -1, "--gpu_id", 0, "--batchsize", 8,
                          "--limited_memory", "--cpu_as_metric_device",
                          "--rerank_results_dir", out_dir, "--query_idxs_to_vis", 1, 3,
                          "--num_gallery_ims_to_vis", 5, "--db", tmp_path / "r.duckdb"], capsys)
    assert code == 0, err
    folder = out_dir / "custom" / "-1"
    want = icfrr.rerank(qg, gg, kg=10, kq=15, beta=0.5, n_iter=3, device="cpu")
    for it in range(4):
        ranks = torch.load(folder / "ranks" / f"reranking_iter_{it}.pth", weights_only=True)
        assert torch.equal(ranks, want[it])
        with Image.open(folder / "vis" / f"reranking_iter_{it}.png") as img:
            side = 128 + 2 * 5
            assert img.size == (side * 6, side * 2)
    assert (folder / "map_prec_ICFRR.png").is_file()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5
    for it, line in enumerate(rows[1:]):
        m = icfrr.evaluate(want[it], labels_q, labels_g)
        assert [float(x) for x in line.split(",")[1:]] == pytest.approx(
            [m[k] for k in icfrr.METRIC_NAMES])
    with connect_reader(tmp_path / "r.duckdb") as con:  # with images, items keep their paths
        paths = con.execute("SELECT path FROM items WHERE side = 'query' ORDER BY idx").fetchall()
        assert paths[:2] == [("query/q000.png",), ("query/q001.png",)]


def test_grid_clamps_and_drops_duplicates() -> None:
    args = sweep.build_parser().parse_args(
        ["--dataset", "x", "--kg", "100", "39", "200", "3", "--kq", "50", "60", "--n_times", "2"])
    sweep_flags.check_flags(args)
    entries, warnings = sweep_flags.expand_grid(args, 40)
    got = [(e.kg, e.kq, e.extra["asked_kg"], e.extra["asked_kq"]) for e in entries]
    assert got == [(39, 40, 100, 50), (3, 40, 3, 50)]  # 39/200 and kq 60 clamp onto the same
    assert warnings == ["KG 100, 200 above the gallery size 40: clamped (every gallery item "
                        "takes part)", "KQ 50, 60 above the gallery size 40: clamped (every "
                        "gallery item takes part)"]


# --------------------------------------------------------------------------- bad input


def _tuberlin(root: Path) -> Path:
    """A two-image TU-Berlin file-list layout (to reach the checkpoint check)."""
    base = root / "TUBerlin"
    for sub, lst in (("png", "png_ready_filelist_zero.txt"),
                     ("ImageResized", "ImageResized_ready_filelist_zero.txt")):
        _draw(base / sub / "ant" / "1.png", 0, 1)
        (base / "zeroshot").mkdir(parents=True, exist_ok=True)
        (base / "zeroshot" / lst).write_text(f"{sub}/ant/1.png 0\n")
    return root


BAD = {
    "kg below 1": (["--kg", "4", "0"], "--kg values must be >= 1"),
    "kq below 1": (["--KQ", "-3"], "--kq values must be >= 1"),
    "negative beta": (["--beta", "-0.5"], "--beta values must be finite and >= 0"),
    "nan beta": (["--beta", "nan"], "--beta values must be finite"),
    "infinite beta": (["--beta", "0.5", "inf"], "--beta values must be finite"),
    "empty kg grid": (["--kg"], "expected at least one argument"),
    "empty variant grid": (["--variant"], "expected at least one argument"),
    "unknown variant": (["--variant", "fancy"], "invalid choice"),
    "zero iterations": (["--n_times", "0"], "--n-times values must be >= 1"),
    "vis without dir": (["--query_idxs_to_vis", "1"], "needs --rerank_results_dir"),
    "vis query out of range": (["--rerank_results_dir", "{tmp}/res", "--query_idxs_to_vis", "99"],
                               "outside 0..11"),
    "vis without images": (["--rerank_results_dir", "{tmp}/res", "--query_idxs_to_vis", "1"],
                           "needs the images"),
    "not a number": (["--kg", "ten"], "invalid int value"),
    "bad device": (["--device", "abacus"], "--device"),
    "per_class zero": (["--per_class", "0"], "--per_class must be -1 (all) or >= 1"),
    "top-n zero": (["--top-n", "0"], "--top-n must be >= 1"),
    "too many iterations": (["--n_times", "5", "10000"], "--n-times values must be <= 100"),
}
if not torch.cuda.is_available():
    BAD["cuda missing"] = (["--device", "cuda"], "none is available")


@pytest.mark.parametrize("case", list(BAD))
def test_bad_flags_exit_2_database_untouched(tmp_path: Path, capsys, case: str) -> None:
    write_cache(tmp_path / "cache")
    db = tmp_path / "r.duckdb"
    from store.db import connect_writer
    connect_writer(db).close()
    before = db.read_bytes()
    extra, message = BAD[case]
    argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
            "--device", "cpu", *[a.format(tmp=tmp_path) for a in extra]]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert message in err
    assert db.read_bytes() == before
    assert not (tmp_path / "res").exists()


BAD_DATA = {
    "unknown dataset": (lambda t: ["--dataset", "imagenet"], "unknown dataset"),
    "missing data root": (lambda t: ["--dataset", "tuberlin"], "needs --data_root"),
    "missing file lists": (lambda t: ["--dataset", "tuberlin", "--data_root", t],
                           "file list not found"),
    "missing checkpoint": (lambda t: ["--dataset", "tuberlin", "--data_root", _tuberlin(t / "d"),
                                      "--pretrained_root", t / "none"], "checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exit_2_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    make_args, message = BAD_DATA[case]
    db = tmp_path / "out" / "r.duckdb"
    code, out, err = run([*make_args(tmp_path), "--cache_root", tmp_path / "cache", "--db", db],
                         capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert message in err
    assert not db.exists() and not db.parent.exists()


def test_database_not_duckdb_or_newer(tmp_path: Path, capsys) -> None:
    write_cache(tmp_path / "cache")
    base = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--kg", 5, "--kq", 5]
    bad = tmp_path / "notes.duckdb"
    bad.write_text("my notes, not a database\n")
    code, _, err = run([*base, "--db", bad], capsys)
    assert code == 2 and "is not a DuckDB database" in err and len(err.splitlines()) == 1
    assert bad.read_text() == "my notes, not a database\n"

    newer = tmp_path / "newer.duckdb"
    con = duckdb.connect(str(newer))
    con.execute("CREATE TABLE schema_info (version INTEGER)")
    con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    before = newer.read_bytes()
    code, _, err = run([*base, "--db", newer], capsys)
    assert code == 2 and "newer than this icfrr-lab" in err and len(err.splitlines()) == 1
    assert newer.read_bytes() == before


# ------------------------------------------- a reader polling while a sweep writes; kill; resume

TOP_N = 10
INCOMPLETE_SQL = f"""
WITH m AS (SELECT run_id, count(*) AS n FROM run_metrics GROUP BY run_id),
     q AS (SELECT run_id, count(*) AS n, count(DISTINCT iteration) AS its
           FROM query_metrics GROUP BY run_id),
     k AS (SELECT run_id, count(*) AS n, count(DISTINCT iteration) AS its
           FROM rankings GROUP BY run_id)
SELECT r.run_id FROM runs r LEFT JOIN m USING (run_id) LEFT JOIN q USING (run_id)
                            LEFT JOIN k USING (run_id)
WHERE r.status <> 'done' OR m.n IS DISTINCT FROM r.n_iter + 1
   OR q.its IS DISTINCT FROM r.n_iter + 1 OR q.n <> q.its * {Q}
   OR k.its IS NULL OR k.n IS DISTINCT FROM k.its * {Q} * {TOP_N}
UNION ALL SELECT run_id FROM run_metrics WHERE run_id NOT IN (SELECT run_id FROM runs)
UNION ALL SELECT run_id FROM query_metrics WHERE run_id NOT IN (SELECT run_id FROM runs)
UNION ALL SELECT run_id FROM rankings WHERE run_id NOT IN (SELECT run_id FROM runs)
"""


@pytest.mark.slow
def test_reader_during_sweep_then_resume_after_kill(tmp_path: Path, capsys) -> None:
    import subprocess
    import sys
    import time

    from store.db import connect_writer

    write_cache(tmp_path / "cache")
    db = tmp_path / "r.duckdb"
    argv = ["--dataset", "custom", "--cache_root", tmp_path / "cache", "--db", db,
            "--device", "cpu", "--kg", *range(2, 13), "--kq", 4, 8, 16, "--n_times", 100,
            "--top-n", TOP_N]  # 33 configurations of 100 iterations: the kill lands mid-sweep
    argv = [str(a) for a in argv]
    n_configs = 11 * 3
    connect_writer(db).close()  # an empty store for the reader to open from the start
    repo = Path(__file__).resolve().parents[2]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.sweep", *argv], cwd=repo,
                                stdout=out, stderr=err)
    polls, counts, kill_at = 0, [], None
    try:
        while proc.poll() is None:
            with connect_reader(db, timeout_s=60) as con:  # must never raise
                incomplete = con.execute(INCOMPLETE_SQL).fetchall()
                n_runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            assert incomplete == [], "a reader saw a partial run"
            polls += 1
            counts.append(n_runs)
            if kill_at is None and n_runs >= 2:
                proc.kill()  # SIGKILL mid-sweep: no chance to clean up
                kill_at = n_runs
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert kill_at is not None, (counts, (tmp_path / "err.txt").read_text()[-2000:])
    assert proc.returncode == -9
    assert counts == sorted(counts) and counts[0] < kill_at  # it saw the store grow
    assert polls >= 2
    with connect_reader(db) as con:
        assert con.execute(INCOMPLETE_SQL).fetchall() == []
        done_before = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert kill_at <= done_before < n_configs
        assert con.execute("SELECT status FROM sweeps").fetchall() == [("running",)]

    code, out, err = run(argv, capsys)  # the same command again resumes
    assert code == 0, err
    assert f"skipping {done_before} configuration(s)" in err
    assert out.count("(skipped)") == done_before
    assert out.count("(new)") == n_configs - done_before
    with connect_reader(db) as con:
        assert con.execute(INCOMPLETE_SQL).fetchall() == []
        assert con.execute("SELECT count(*), count(DISTINCT config_key) FROM runs").fetchone() \
            == (n_configs, n_configs)
        assert con.execute("SELECT status FROM sweeps ORDER BY sweep_id").fetchall() == [
            ("interrupted",), ("done",)]     # the next writer saw the killed sweep's process gone
