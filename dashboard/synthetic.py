"""Synthetic results stores for the dashboard's tests and benchmark.

Simulates a sweep cheaply instead of running the engine, and writes it with
the real writer (``store.writes``: the same transactions, keys and tables a
``python -m jobs.sweep`` writes). Each query gets a fixed candidate pool of
gallery items with base scores (iteration 0, identical for every run, like a
real sweep over one set of distances); every configuration adds a smooth,
query-dependent boost to the relevant candidates over the iterations, so some
queries gain and others lose. Each iteration's ranking is the pool sorted by
score followed by the rest of the gallery (in index order), and it is
evaluated by ``icfrr.metrics`` on that full ranking, so every metric follows
the registry's definitions (R counts the relevant items of the whole
gallery) and the best iteration follows ``icfrr.registry.best_iteration``.
Optionally writes tiny images under a dataset root, leaving out a few to
exercise placeholders.

This is a development tool (the dashboard itself never writes).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from icfrr.metrics import per_query, summarize
from icfrr.registry import best_iteration
from store import writes
from icfrr.run_config import RunConfig
from store.db import connect_writer

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


def _boost(spec: SyntheticSpec, kg: int, kq: int, beta: float) -> float:
    """How strongly a configuration helps: peaks at mid KG and KQ."""
    lg = np.log2(max(kg, 1) / max(spec.n_gallery ** 0.5, 1.0))
    lq = np.log2(max(kq, 1) / max(spec.n_gallery ** 0.4, 1.0))
    return float(beta * 1.5 * np.exp(-(lg**2) / 6 - (lq**2) / 4))


def _full_rankings(items: np.ndarray, n_gallery: int) -> np.ndarray:
    """int32 [Q, G]: each query's pool (as given) followed by the rest of the gallery in index order."""
    q, m = items.shape
    full = np.empty((q, n_gallery), dtype=np.int32)
    full[:, :m] = items
    if m < n_gallery:
        rest = np.ones(n_gallery, dtype=bool)
        for i in range(q):
            rest[items[i]] = False
            full[i, m:] = np.flatnonzero(rest)
            rest[items[i]] = True
    return full


def _iteration(full: np.ndarray, items: np.ndarray, score: np.ndarray, labels_q: np.ndarray,
               labels_g: np.ndarray, top: int) -> tuple[dict[str, float], writes.KeptIteration]:
    """Rank each query's pool by ``score`` [Q, M] (best first) inside ``full`` and evaluate it.

    Returns:
        The iteration's summary metrics and its per-query results with the top ``top``.
    """
    order = np.argsort(-score, axis=1, kind="stable")
    full[:, :items.shape[1]] = np.take_along_axis(items, order, 1)
    pq = per_query(full, labels_q, labels_g)
    kept = writes.KeptIteration(pq, full[:, :top].copy(),
                                np.take_along_axis(score, order[:, :top], 1))
    return summarize(pq), kept


def artifact_key(spec: SyntheticSpec) -> str:
    """The synthetic distances' identity (sha256 hex, like a real artifact key): the whole spec."""
    text = json.dumps({"synthetic": asdict(spec)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def generate(db_path: str | Path, spec: SyntheticSpec, root: str | Path | None = None) -> int:
    """Append one synthetic dataset, artifact, sweep and its runs to a store, through ``store.writes``.

    The dataset and artifact rows are reused when the store already has them
    (same fingerprint, same key); a configuration that already has a finished
    run on them is skipped, as in a real sweep. Each run is one transaction;
    the sweep ends ``'done'``, or ``'failed'`` when a run could not be written.

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
    response = rng.normal(0.6, 1.0, size=(spec.n_query, 1))
    if spec.images:
        if root is None:
            raise ValueError("spec.images needs a dataset root")
        root = Path(root).resolve()
        _write_images(root, spec, labels_q, labels_g)
    paths = {side: [f"{side}/{i:05d}.png" for i in range(n)] if spec.images else None
             for side, n in (("query", spec.n_query), ("gallery", spec.n_gallery))}
    table = writes.items_table(labels_q, labels_g, paths_q=paths["query"], paths_g=paths["gallery"],
                               class_names={c: class_name(c) for c in range(spec.n_classes)})
    key = artifact_key(spec)
    top = min(spec.top_n, items.shape[1])
    full = _full_rankings(items, spec.n_gallery)
    initial = _iteration(full, items, base, labels_q, labels_g, top)

    with connect_writer(db_path) as con:
        dataset_id = writes.upsert_dataset(con, name=spec.name,
                                           root=str(root) if spec.images else None, items=table)
        artifact_id = writes.upsert_artifact(con, dataset_id, writes.ArtifactInfo(
            key=key, backbone="synthetic", checkpoint_sha256=None, per_class=-1))
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                      command=f"synthetic {spec.name}")
        try:
            for variant, kg, kq, beta in spec.configs:
                config = RunConfig(kg=kg, kq=kq, beta=beta, n_iter=spec.n_iter,
                                          variant=variant)
                metrics, kept = _simulate_run(spec, config, full, items, relevant, base, response,
                                              labels_q, labels_g, top, initial, rng)
                writes.write_run(con, sweep_id=sweep_id, artifact_id=artifact_id,
                                 artifact_key=key, config=config, device="cpu",
                                 seconds=float(rng.uniform(0.5, 5.0)), metrics=metrics, kept=kept)
                writes.heartbeat(con, sweep_id)
        except BaseException:
            writes.finish_sweep(con, sweep_id, "failed")
            raise
        writes.finish_sweep(con, sweep_id, "done")
    return sweep_id


def _simulate_run(spec: SyntheticSpec, config: RunConfig, full: np.ndarray,
                  items: np.ndarray, relevant: np.ndarray, base: np.ndarray,
                  response: np.ndarray, labels_q: np.ndarray, labels_g: np.ndarray, top: int,
                  initial: tuple[dict[str, float], writes.KeptIteration],
                  rng: np.random.Generator,
                  ) -> tuple[list[dict[str, float]], dict[int, writes.KeptIteration]]:
    """One configuration's iterations 0..n_iter: summaries and the kept iterations.

    Keeps iteration 0, the best (registry rule), the last and ``spec.keep_iterations``,
    like a real sweep (which keeps 0, the best and the last).
    """
    strength = _boost(spec, config.kg, config.kq, config.beta)
    q, m = items.shape
    metrics, per_iter = [initial[0]], {0: initial[1]}
    for t in range(1, spec.n_iter + 1):
        grow = 1.0 - np.exp(-t / 2.0)
        noise = rng.normal(scale=0.15 * grow, size=(q, m))
        score = base + strength * grow * response * (relevant - 0.25) + noise
        summary, kept = _iteration(full, items, score, labels_q, labels_g, top)
        metrics.append(summary)
        per_iter[t] = kept
    keep = {0, best_iteration(metrics), spec.n_iter, *spec.keep_iterations}
    return metrics, {t: per_iter[t] for t in sorted(keep)}
