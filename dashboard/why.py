"""Why a query's ranking moved: its ICFRR votes, replayed from the run's artifacts (issue 18).

``icfrr.explain`` is the dashboard's one call into the engine. It needs the
query's distances and the gallery's neighbour graph, which only the run's
artifact files hold (``store.read.artifact_files`` says where; the files are
checked against the artifact key by ``store.artifacts``). The replay is
cached per (store, run, query) with ``st.cache_data``, the graph per file with
``st.cache_resource``.

Like the thumbnails, a store does not choose what the server reads: the
artifact files are read only inside the folders of ``dashboard.data.image_roots``
(the launch working directory, ``--image-root``). Everything else gets a
one-line reason instead (:class:`Unavailable`).

Pure helpers (:func:`purity`, :func:`voters_of`, :func:`intruder_sentence`)
turn the votes into what the inspector shows.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.data import Db
from icfrr import NeighborGraph, explain
from icfrr.explaining import VoteStep
from store.artifacts import read_graph, read_query_distances
from store.read import explainable, registered

_log = logging.getLogger("icfrr.dashboard")


@dataclass(frozen=True)
class Replay:
    """One query's votes through every update of a run.

    Attributes:
        steps: ``icfrr.explain``'s VoteSteps, iteration t at ``steps[t - 1]``.
        initial: int64 [G] the initial ranking (distances sorted ascending, stable,
            as the engine sorts them).
    """

    steps: list[VoteStep]
    initial: np.ndarray

    def ranking(self, t: int) -> np.ndarray:
        """int64 [G] the ranking after ``t`` updates (t = 0: the initial one)."""
        return self.initial if t == 0 else self.steps[t - 1].ranking

    def positions(self, t: int) -> np.ndarray:
        """int64 [G] each gallery item's 1-based rank after ``t`` updates."""
        order = self.ranking(t)
        pos = np.empty(order.size, dtype=np.int64)
        pos[order] = np.arange(1, order.size + 1)
        return pos


@dataclass(frozen=True)
class Unavailable:
    """Why the votes cannot be replayed (one line)."""

    reason: str


def _inside(path: str, roots: tuple[Path, ...]) -> bool:
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return any(real.is_relative_to(r) for r in roots)


@st.cache_resource(show_spinner=False, max_entries=4)
def _graph(path: str, key: str, stamp: tuple[int, int]) -> NeighborGraph:
    """The neighbour graph of ``path`` (one per file and change stamp, shared by the sessions)."""
    return read_graph(path, key)


def _stamp(path: str) -> tuple[int, int]:
    s = Path(path).stat()
    return s.st_mtime_ns, s.st_size


@st.cache_data(show_spinner=False, max_entries=256)
def replay(db: Db, run_id: int, query_idx: int, roots: tuple[Path, ...]) -> Replay | Unavailable:
    """The run's ICFRR votes for one query, or why they cannot be shown.

    Args:
        db: The store.
        run_id: An ICFRR run (callers show baselines without votes).
        query_idx: The query.
        roots: The folders the artifact files may lie in (``dashboard.data.image_roots()``).
    """
    info = queries.run_row(db, run_id)
    if info is None or not explainable(info["method"]):
        return Unavailable("vote provenance is an ICFRR view: this run's method casts no votes.")
    files = queries.artifact_files(db, run_id)
    used = [] if files is None else [files.get("neighbors_path"), *(
        [files["qg_dists_path"]] if files.get("qg_dists_path") else
        [files.get("query_features_path"), files.get("gallery_features_path")])]
    if not used or not all(used):
        return Unavailable("the store records no artifact files for this run's distances (kept in memory "
                           "with --no-cache, or not made by jobs.sweep), so its votes cannot be replayed.")
    if not all(_inside(p, roots) for p in used):
        return Unavailable(f"this run's artifact files ({files['cache_dir'] or used[0]}) lie outside the "
                           "folders the dashboard may read; launch it with --image-root on a folder above them.")
    try:
        graph = _graph(files["neighbors_path"], files["cache_key"], _stamp(files["neighbors_path"]))
        row = read_query_distances(files, query_idx)
        # the run's registry parameters, each as its kind (``runs`` holds an explainable method's as columns)
        params = {p.name: p.kind(info[p.name]) for p in registered(info["method"]).params}
        steps = explain(row, graph, **params)
    except (OSError, ValueError, KeyError) as exc:
        _log.warning("run %s query %s: votes not replayed: %s", run_id, query_idx, exc)
        return Unavailable(f"this run's artifact files in {files['cache_dir'] or 'the cache'} cannot be read "
                           "(missing, damaged or made again since the run); re-run its sweep to replay the votes.")
    return Replay(steps, np.argsort(row, kind="stable").astype(np.int64))


def purity(step: VoteStep, labels_g: np.ndarray, label: int) -> float:
    """The share of an update's vote mass that went to items of class ``label`` (NaN without votes)."""
    total = float(step.amount.sum())
    if total <= 0:
        return float("nan")
    return float(step.amount[labels_g[step.item] == label].sum()) / total


def voters_of(step: VoteStep, item: int) -> pd.DataFrame:
    """The votes ``item`` received in one update: voter, rank (1-based, in the ranking the
    voters were taken from), amount; largest amount first, then best voter."""
    hit = step.item == item
    where = {int(v): i + 1 for i, v in enumerate(step.voters.tolist())}
    voters = step.voter[hit]
    out = pd.DataFrame({"voter": voters, "rank": [where[int(v)] for v in voters], "amount": step.amount[hit]})
    return out.sort_values(["amount", "rank"], ascending=[False, True], kind="stable").reset_index(drop=True)


def intruder_sentence(rank_before: int, rank_after: int, voter_classes: list[str]) -> str:
    """``"rose 41 places (#52 -> #11): 7 of its 10 voters are 'angel' items that count it among
    their nearest neighbours"``; the class named is the voters' most common one."""
    moved = rank_before - rank_after
    head = (f"rose {moved} place{'s' if moved != 1 else ''} (#{rank_before} → #{rank_after})" if moved > 0
            else f"entered at #{rank_after}")
    if not voter_classes:
        return f"{head}: no voter counts it among its nearest neighbours"
    name, n = Counter(voter_classes).most_common(1)[0]
    if len(voter_classes) == 1:
        return f"{head}: its one voter, a '{name}' item, counts it among its nearest neighbours"
    return (f"{head}: {n} of its {len(voter_classes)} voters are '{name}' items that count it among "
            "their nearest neighbours")
