"""A small results store for the read-API and dashboard tests.

Two datasets: ``demo`` (12 queries, one of unknown label, 30 gallery items,
3 classes, tiny images on disk with query 1's image missing) swept over
KG {4, 8} x KQ {3, 6} x beta {0.5, 1}; and ``imported`` (no images, as for
imported distances) with one run. Plus one unfinished run that every reader
must ignore.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pandas as pd

from dashboard.synthetic import SyntheticSpec, generate

DEMO = SyntheticSpec(
    name="demo",
    configs=tuple(("reference", kg, kq, beta)
                  for beta, kg, kq in itertools.product((0.5, 1.0), (4, 8), (3, 6))),
)
IMPORTED = SyntheticSpec(name="imported", images=False, configs=(("reference", 5, 5, 1.0),),
                         seed=3)


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
    return db


def raw_tables(db: Path) -> dict[str, pd.DataFrame]:
    """Plain ``SELECT *`` dumps of the store's tables: the tests' oracle input."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t}").df()
                for t in ("datasets", "items", "sweeps", "runs", "run_metrics",
                          "query_metrics", "rankings")}
    finally:
        con.close()
