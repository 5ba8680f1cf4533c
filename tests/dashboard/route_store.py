"""A store made the way a user makes one, with the real ``python -m jobs.sweep`` commands of
the README's routes, on data small enough for a test:

- ``feats``: features from ``.npy`` files with ``labels.npz`` (``--query-features
  --gallery-features --labels``), two ICFRR configurations;
- ``custom``: the published example cache (``--dataset custom --cache_root``, a copy of
  ``examples/custom``), one configuration;
- ``nolabels``: the same features without ``--labels`` (runs without metrics).

With ``named=True`` the same routes carry class names (``class_names`` in
``labels.npz``, ``class_names.json`` beside the published cache) and the features'
``labels.npz`` the items' ``query_names``/``gallery_names`` (no ``--data_root``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
#: Class names of the ``feats`` route (label -> name) and of the published example cache.
FEATS_CLASSES = ("ant", "bee", "cat", "dog")
CUSTOM_CLASSES = ("anchor", "bell", "crab", "drum")
N_CLASSES, Q_PER_CLASS, G_PER_CLASS, DIM = 4, 3, 8, 16


def gallery_name(j: int) -> str:
    """The name the ``feats`` route gives gallery item ``j`` (with ``named``)."""
    return f"photos/g{j:03d}.jpg"


def _sweep(args: list[str]) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"jobs.sweep {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def build_routes(folder: Path, *, named: bool = False) -> Path:
    """Write the three routes' sweeps into ``folder/icfrr.duckdb`` and return its path."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(N_CLASSES, DIM))
    lq = np.repeat(np.arange(N_CLASSES), Q_PER_CLASS)
    lg = np.repeat(np.arange(N_CLASSES), G_PER_CLASS)
    q = centres[lq] + 0.9 * rng.normal(size=(len(lq), DIM))
    g = centres[lg] + 0.9 * rng.normal(size=(len(lg), DIM))
    np.save(folder / "q.npy", q.astype(np.float32))
    np.save(folder / "g.npy", g.astype(np.float32))
    extra = {}
    if named:
        extra = {"class_names": np.array(FEATS_CLASSES),
                 "query_names": np.array([f"sketches/q{i:03d}.png" for i in range(len(lq))]),
                 "gallery_names": np.array([gallery_name(j) for j in range(len(lg))])}
    np.savez(folder / "labels.npz", query=lq, gallery=lg, **extra)
    published = folder / "published"
    shutil.copytree(REPO / "examples" / "custom", published / "custom")
    if named:
        (published / "custom" / "-1" / "class_names.json").write_text(json.dumps(CUSTOM_CLASSES))
    db, cache = str(folder / "icfrr.duckdb"), str(folder / "cache")
    feats = ["--query-features", str(folder / "q.npy"), "--gallery-features", str(folder / "g.npy")]
    _sweep(["--dataset", "feats", *feats, "--labels", str(folder / "labels.npz"), "--db", db,
            "--cache_root", cache, "--kg", "4", "8", "--kq", "3", "--beta", "1", "--n-times", "2"])
    _sweep(["--dataset", "custom", "--cache_root", str(published), "--db", db,
            "--KG", "10", "--KQ", "15", "--n_times", "2"])
    _sweep(["--dataset", "nolabels", *feats, "--db", db, "--cache_root", cache,
            "--kg", "4", "--kq", "3", "--n-times", "2"])
    return Path(db)
