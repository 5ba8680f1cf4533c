"""Synthetic results stores for the dashboard's tests and benchmark.

Writes a dataset, an artifact, a sweep and its runs straight into the
schema of ``store.schema`` (through Arrow), without running the engine: each
query gets a fixed candidate pool whose items carry base scores (iteration 0,
identical for every run, like a real sweep over one set of distances);
every configuration adds a smooth, query-dependent boost to the relevant
candidates over the iterations, so some queries gain and others lose. The
metrics are computed from the generated rankings with the spec's
definitions (the pool is the whole list; items outside it count as
irrelevant), so the store is internally consistent. Optionally writes tiny
images under a dataset root, leaving out a few to exercise placeholders.

This is a development tool (the dashboard itself never writes).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from store.schema import create_schema

_NAMES = (
    "airplane", "alarm clock", "angel", "ant", "apple", "armchair", "banana", "barn",
    "bear", "bed", "bee", "bicycle", "binoculars", "blimp", "book", "bottle", "bowl",
    "bridge", "bus", "butterfly", "cactus", "camel", "candle", "car", "castle", "cat",
    "chair", "church", "cow", "crab",
)


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        name: Dataset name.
        n_query: Queries (Q).
        n_gallery: Gallery items (G).
        n_classes: Classes; query q and gallery g get labels ``q % C``, ``g % C``.
        n_unknown: Queries (the last ones) whose label is -1.
        configs: (variant, kg, kq, beta) per run.
        n_iter: Iterations per run (metrics for 0..n_iter).
        top_n: Stored ranks per query and stored iteration.
        pool: Candidates per query (the whole gallery when >= G).
        images: Write images under ``root`` (else paths are NULL, as for
            imported distances).
        missing: Indices of query images left unwritten (placeholders).
        keep_iterations: Iterations stored besides 0, the best and the last.
        seed: Random seed.
    """

    name: str = "synthetic"
    n_query: int = 12
    n_gallery: int = 30
    n_classes: int = 3
    n_unknown: int = 1
    configs: tuple[tuple[str, int, int, float], ...] = field(
        default_factory=lambda: tuple(
            ("reference", kg, kq, 0.5) for kg, kq in itertools.product((4, 8), (3, 6))
        )
    )
    n_iter: int = 4
    top_n: int = 10
    pool: int = 30
    images: bool = True
    missing: tuple[int, ...] = (1,)
    keep_iterations: tuple[int, ...] = ()
    seed: int = 0


def class_name(label: int) -> str:
    """Display name of a synthetic class."""
    base = _NAMES[label % len(_NAMES)]
    return base if label < len(_NAMES) else f"{base} {label // len(_NAMES)}"


def _pools(spec: SyntheticSpec, labels_q: np.ndarray, labels_g: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate gallery items [Q, M], their relevance [Q, M] and base scores [Q, M]."""
    q, g = spec.n_query, spec.n_gallery
    m = min(spec.pool, g)
    ease = rng.uniform(0.05, 0.6, size=q)
    items = np.empty((q, m), dtype=np.int64)
    for i in range(q):
        if m == g:
            items[i] = rng.permutation(g)
            continue
        same = np.flatnonzero(labels_g == labels_q[i])
        other = np.flatnonzero(labels_g != labels_q[i])
        k = min(same.size, rng.binomial(m, ease[i]), m)
        items[i, :k] = rng.choice(same, k, replace=False)
        items[i, k:] = rng.choice(other, m - k, replace=False)
    relevant = (labels_g[items] == labels_q[:, None]) & (labels_q[:, None] != -1)
    base = rng.normal(size=(q, m)) + (0.4 + ease[:, None]) * relevant
    return items, relevant, base


def _metrics(rel_sorted: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Spec metrics of each row of a relevance matrix sorted best first [Q, M]."""
    q, m = rel_sorted.shape
    hits = np.cumsum(rel_sorted, axis=1)
    prec = hits / np.arange(1, m + 1)
    contrib = prec * rel_sorted
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(n_relevant > 0, contrib.sum(1) / np.maximum(n_relevant, 1), 0.0)
        k200 = min(200, m)
        r200 = hits[:, k200 - 1]
        ap_200 = np.where(r200 > 0, contrib[:, :k200].sum(1) / np.maximum(r200, 1), 0.0)
    out = {"ap": ap, "ap_200": ap_200}
    for k in (25, 100, 200):
        out[f"p_{k}"] = hits[:, min(k, m) - 1] / k
    first = np.where(rel_sorted.any(1), rel_sorted.argmax(1) + 1, -1)
    out["first_relevant_rank"] = first
    return out


def _write_images(root: Path, spec: SyntheticSpec, labels_q: np.ndarray,
                  labels_g: np.ndarray) -> None:
    """Tiny sketch-like queries and photo-like gallery images, coloured by class."""
    palette = np.random.default_rng(123).integers(40, 220, size=(max(spec.n_classes, 1), 3))
    (root / "query").mkdir(parents=True, exist_ok=True)
    (root / "gallery").mkdir(parents=True, exist_ok=True)
    for side, labels in (("query", labels_q), ("gallery", labels_g)):
        for i, lab in enumerate(labels):
            if side == "query" and i in spec.missing:
                continue
            col = tuple(int(c) for c in palette[max(int(lab), 0) % len(palette)])
            if side == "query":
                img = Image.new("RGB", (48, 48), "white")
                ImageDraw.Draw(img).ellipse((8 + i % 5, 8, 40, 40 - i % 7), outline=col, width=3)
            else:
                img = Image.new("RGB", (48, 48), col)
                ImageDraw.Draw(img).rectangle((10 + i % 9, 12, 36, 30 + i % 11), fill="white")
            img.save(root / side / f"{i:05d}.png")


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: dict[str, object]) -> None:
    arrow = pa.table(data)
    con.register("_synthetic_rows", arrow)
    try:
        cols = ", ".join(data)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _synthetic_rows")
    finally:
        con.unregister("_synthetic_rows")


def _boost(spec: SyntheticSpec, kg: int, kq: int, beta: float) -> float:
    """How strongly a configuration helps: peaks at mid KG and KQ."""
    lg = np.log2(max(kg, 1) / max(spec.n_gallery ** 0.5, 1.0))
    lq = np.log2(max(kq, 1) / max(spec.n_gallery ** 0.4, 1.0))
    return float(beta * 1.5 * np.exp(-(lg**2) / 6 - (lq**2) / 4))


def generate(db_path: str | Path, spec: SyntheticSpec, root: str | Path | None = None) -> int:
    """Append one synthetic dataset, artifact, sweep and its runs to a store.

    Args:
        db_path: The DuckDB file (created with the schema if missing).
        spec: What to generate.
        root: Dataset root for the images (required when ``spec.images``).

    Returns:
        The new sweep's id.
    """
    rng = np.random.default_rng(spec.seed)
    labels_q = np.arange(spec.n_query) % spec.n_classes
    if spec.n_unknown:
        labels_q[-spec.n_unknown:] = -1
    labels_g = np.arange(spec.n_gallery) % spec.n_classes
    items, relevant, base = _pools(spec, labels_q, labels_g, rng)
    n_rel = relevant.sum(1)
    known = labels_q != -1
    response = rng.normal(0.6, 1.0, size=(spec.n_query, 1))
    if spec.images:
        if root is None:
            raise ValueError("spec.images needs a dataset root")
        root = Path(root).resolve()
        _write_images(root, spec, labels_q, labels_g)
    now = datetime.now()

    con = duckdb.connect(str(db_path))
    try:
        create_schema(con)
        con.execute("BEGIN TRANSACTION")
        dataset_id = con.execute(
            "INSERT INTO datasets (name, root, n_query, n_gallery, n_classes, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING dataset_id",
            [spec.name, str(root) if spec.images else None, spec.n_query, spec.n_gallery,
             spec.n_classes, now]).fetchone()[0]
        for side, labels in (("query", labels_q), ("gallery", labels_g)):
            n = len(labels)
            _insert(con, "items", {
                "dataset_id": np.full(n, dataset_id, dtype=np.int32),
                "side": [side] * n,
                "idx": np.arange(n, dtype=np.int32),
                "path": [f"{side}/{i:05d}.png" if spec.images else None for i in range(n)],
                "label": labels.astype(np.int32),
                "class_name": [class_name(int(x)) if x >= 0 else None for x in labels],
            })
        artifact_id = con.execute(
            "INSERT INTO artifacts (dataset_id, backbone, per_class, created_at) "
            "VALUES (?, 'synthetic', -1, ?) RETURNING artifact_id", [dataset_id, now]).fetchone()[0]
        sweep_id = con.execute(
            "INSERT INTO sweeps (dataset_id, artifact_id, command, started_at, finished_at, status)"
            " VALUES (?, ?, ?, ?, ?, 'done') RETURNING sweep_id",
            [dataset_id, artifact_id, f"synthetic {spec.name}", now, now]).fetchone()[0]
        for variant, kg, kq, beta in spec.configs:
            _generate_run(con, spec, sweep_id, artifact_id, (variant, kg, kq, beta), items,
                          relevant, base, n_rel, known, response, rng, now)
        con.execute("COMMIT")
    finally:
        con.close()
    return int(sweep_id)


def _generate_run(con, spec, sweep_id, artifact_id, config, items, relevant, base, n_rel,
                  known, response, rng, now) -> None:
    variant, kg, kq, beta = config
    params = {"variant": variant, "kg": kg, "kq": kq, "beta": beta, "n_iter": spec.n_iter}
    run_id = con.execute(
        "INSERT INTO runs (sweep_id, method, variant, kg, kq, beta, n_iter, params, device, "
        "seconds, status, finished_at, artifact_id, config_key) VALUES "
        "(?, 'icfrr', ?, ?, ?, ?, ?, ?, 'cpu', ?, 'done', ?, ?, ?) RETURNING run_id",
        [sweep_id, variant, kg, kq, beta, spec.n_iter, json.dumps(params),
         float(rng.uniform(0.5, 5.0)), now, artifact_id, json.dumps(params)]).fetchone()[0]
    strength = _boost(spec, kg, kq, beta)
    q, m = items.shape
    per_iter = []
    for t in range(spec.n_iter + 1):
        grow = 1.0 - np.exp(-t / 2.0)
        noise = rng.normal(scale=0.15 * grow, size=(q, m)) if t else 0.0
        score = base + strength * grow * response * (relevant - 0.25) + noise
        order = np.argsort(-score, axis=1, kind="stable")
        per_iter.append((order, np.take_along_axis(score, order, 1),
                         _metrics(np.take_along_axis(relevant, order, 1), n_rel)))
    summary = {k: np.array([it[2][k][known].mean() for it in per_iter])
               for k in ("ap", "ap_200", "p_25", "p_100", "p_200")}
    n_it = spec.n_iter + 1
    _insert(con, "run_metrics", {
        "run_id": np.full(n_it, run_id, dtype=np.int32),
        "iteration": np.arange(n_it, dtype=np.int32),
        "map_all": summary["ap"], "map_200": summary["ap_200"],
        "p_25": summary["p_25"], "p_100": summary["p_100"], "p_200": summary["p_200"],
    })
    best = int(np.argmax(summary["ap"]))
    top = min(spec.top_n, m)
    for t in sorted({0, best, spec.n_iter, *spec.keep_iterations}):
        order, score, met = per_iter[t]
        nullable = {k: pa.array(np.where(known, met[k], np.nan), from_pandas=True)
                    for k in ("ap", "ap_200", "p_25", "p_100", "p_200")}
        first = met["first_relevant_rank"]
        _insert(con, "query_metrics", {
            "run_id": np.full(q, run_id, dtype=np.int32),
            "iteration": np.full(q, t, dtype=np.int32),
            "query_idx": np.arange(q, dtype=np.int32),
            **nullable,
            "first_relevant_rank": pa.array(first, mask=(first < 0) | ~known, type=pa.int32()),
        })
        _insert(con, "rankings", {
            "run_id": np.full(q * top, run_id, dtype=np.int32),
            "iteration": np.full(q * top, t, dtype=np.int32),
            "query_idx": np.repeat(np.arange(q, dtype=np.int32), top),
            "rank": np.tile(np.arange(1, top + 1, dtype=np.int32), q),
            "gallery_idx": np.take_along_axis(items, order[:, :top], 1).astype(np.int32).ravel(),
            "score": score[:, :top].ravel(),
        })
