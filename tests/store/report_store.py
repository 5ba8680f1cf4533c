"""A results store for the comparison report, written with the real writer (store.writes).

Dataset ``demo`` (Q = 24 queries, the last of unknown label) on one backbone,
with per-query APs chosen so that the expected table is known:

* ``icfrr`` run A (KG 8, KQ 10, beta 1, T 5): last iteration = initial + 0.10
  (+- 0.01 noise), significantly better; iteration 2 is higher still (+0.20).
* ``icfrr`` run B (KG 4, KQ 5, beta 0.5, T 3): last = initial + 0.05 but
  iteration 1 = initial + 0.30: the best *iteration* of all, yet not the best
  run by the last-iteration rule.
* ``k_reciprocal`` run C (k1 20, k2 6, lambda 0.3): last = initial +- 0.01
  alternating: no significant change; the best k-reciprocal run.
* ``k_reciprocal`` run D (k1 10, k2 3, lambda 0.5): last = initial - 0.02.
* ``dba`` run E (n 10, alpha 3): last = initial - 0.05 (+- 0.01): significantly worse.

Dataset ``other`` holds runs on two backbones (``bb_a``, ``bb_b``), one each.
Every per-query metric is derived from AP (``ap * factor``); every summary is
the mean over queries of known label, as the engine computes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest

from icfrr.registry import METRICS
from store import writes
from icfrr.run_config import RunConfig
from store.db import connect_reader, connect_writer

Q = 24
#: per-query column -> factor applied to AP (so every metric has its own numbers).
FACTORS = {m.column: 1.0 - 0.1 * i for i, m in enumerate(METRICS)}
#: Class names of dataset ``demo`` (``other`` has none).
CLASS_NAMES = {0: "cat", 1: "dog", 2: "owl"}


@dataclass(frozen=True)
class StoredRun:
    """What one stored run holds: its APs per iteration (NaN: unknown label)."""

    run_id: int
    method: str
    ap: dict[int, np.ndarray]  # iteration -> AP [Q]; every iteration 0..T

    @property
    def last(self) -> int:
        return max(self.ap)

    def metric(self, key: str, iteration: int) -> float:
        """The summary the store holds: mean of the per-query values of known label."""
        column = next(m.column for m in METRICS if m.key == key)
        return float(np.nanmean(self.ap[iteration] * FACTORS[column]))


def _per_query(ap: np.ndarray) -> dict[str, np.ndarray]:
    out = {col: ap * f for col, f in FACTORS.items()}
    out["first_relevant_rank"] = np.where(np.isnan(ap), 0, 1)
    return out


def _write(con, sweep_id: int, artifact_id: int, key: str, config: RunConfig,
           ap: dict[int, np.ndarray]) -> int:
    metrics = [{m.key: float(np.nanmean(ap[it] * FACTORS[m.column])) for m in METRICS}
               for it in range(config.n_iter + 1)]
    top = np.zeros((Q, 1), dtype=np.int64)
    kept = {it: writes.KeptIteration(_per_query(ap[it]), top, top.astype(float))
            for it in (0, config.n_iter)}
    run_id = writes.write_run(con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=key,
                              config=config, device="cpu", seconds=0.1, metrics=metrics,
                              kept=kept)
    assert run_id is not None
    return run_id


def _baseline_config(method: str, **params: object) -> RunConfig:
    return RunConfig.for_method(method, params)


def _open_dataset(con, name: str, backbones: tuple[str, ...]) -> list[tuple[int, int, str]]:
    labels_q = np.arange(Q) % 3
    labels_q[-1] = -1
    # the demo dataset has query names and class names (the per-query export shows them)
    named = name == "demo"
    items = writes.items_table(labels_q, np.arange(30) % 3,
                               paths_q=[f"sketch/{q:02d}.png" for q in range(Q)] if named else None,
                               class_names=CLASS_NAMES if named else None)
    dataset_id = writes.upsert_dataset(con, name=name, root=None, items=items)
    out = []
    for bb in backbones:
        key = f"{name}-{bb}"
        artifact_id = writes.upsert_artifact(con, dataset_id, writes.ArtifactInfo(
            key=key, backbone=bb, checkpoint_sha256=None, per_class=-1))
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                      command="test")
        out.append((sweep_id, artifact_id, key))
    return out


def build(folder: Path, *, other: bool = True) -> tuple[Path, dict[str, StoredRun]]:
    """Write the store (``folder/report.duckdb``); returns it and runs A-E by letter."""
    rng = np.random.default_rng(7)
    initial = rng.uniform(0.2, 0.6, size=Q)
    initial[-1] = np.nan
    sign = np.where(np.arange(Q) % 2 == 0, 1.0, -1.0)

    def noisy(shift: float) -> np.ndarray:
        return initial + shift + rng.uniform(-0.01, 0.01, size=Q)

    db = folder / "report.duckdb"
    con = connect_writer(db)
    runs: dict[str, StoredRun] = {}
    try:
        [(sweep, art, key)] = _open_dataset(con, "demo", ("synthetic",))
        plans = {
            "A": (RunConfig(kg=8, kq=10, beta=1.0, n_iter=5),
                  {0: initial, 1: noisy(0.05), 2: noisy(0.20), 3: noisy(0.15), 4: noisy(0.12),
                   5: noisy(0.10)}),
            "B": (RunConfig(kg=4, kq=5, beta=0.5, n_iter=3),
                  {0: initial, 1: noisy(0.30), 2: noisy(0.10), 3: noisy(0.05)}),
            "C": (_baseline_config("k_reciprocal", k1=20, k2=6, lambda_value=0.3),
                  {0: initial, 1: initial + 0.01 * sign}),
            "D": (_baseline_config("k_reciprocal", k1=10, k2=3, lambda_value=0.5),
                  {0: initial, 1: noisy(-0.02)}),
            "E": (_baseline_config("dba", dba_n=10, dba_alpha=3.0),
                  {0: initial, 1: noisy(-0.05)}),
        }
        for letter, (cfg, ap) in plans.items():
            runs[letter] = StoredRun(_write(con, sweep, art, key, cfg, ap), cfg.method, ap)
        writes.finish_sweep(con, sweep, "done")
        if other:
            for (sweep, art, key), shift in zip(_open_dataset(con, "other", ("bb_a", "bb_b")),
                                                (0.1, 0.2)):
                cfg = RunConfig(kg=8, kq=8, beta=1.0, n_iter=1)
                ap = {0: initial, 1: noisy(shift)}
                runs[key] = StoredRun(_write(con, sweep, art, key, cfg, ap), "icfrr", ap)
                writes.finish_sweep(con, sweep, "done")
    finally:
        con.close()
    return db, runs


# Fixtures of the test modules that read this store (import them by name).


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, StoredRun]]:
    """The store built once per test module: its path and its runs by letter."""
    return build(tmp_path_factory.mktemp("report"))


@pytest.fixture()
def con(store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A reader connection to :func:`store`."""
    c = connect_reader(store[0])
    yield c
    c.close()


@pytest.fixture()
def runs(store) -> dict[str, StoredRun]:
    """The runs of :func:`store` by letter."""
    return store[1]
