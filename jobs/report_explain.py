"""``python -m jobs.report --confusions | --signature --run ID``: failure analysis of one run.

- ``--confusions [--iteration T] [--k 10]``: for each query class, the share of
  its queries' top-k slots held by each other class, before (iteration 0) and
  after (iteration T, default the run's last stored one), and the change.
- ``--signature [--iteration T]``: each query's precision in its initial
  top-KQ (capped by the stored top-N) against its AP change, binned, and the
  sentence the data supports ("queries whose initial top-KQ precision is below
  X lose AP on average").

The numbers are ``icfrr.failures`` on the stored rankings (``store.read``);
this module checks the flags, reads and formats. ``jobs.report`` only wires
the flags (:func:`add_flags`, :func:`wanted`) and hands over (:func:`main`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Sequence

from typing import TYPE_CHECKING

from jobs.cli import UsageError
from jobs.report_cells import align

if TYPE_CHECKING:
    from icfrr.registry import Method

DEFAULT_K = 10
#: Flags of the comparison that mean nothing here (refused rather than ignored).
_COMPARISON_ONLY = (("dataset", "--dataset"), ("backbone", "--backbone"), ("metrics", "--metric"),
                    ("baseline", "--baseline"), ("output", "--output"))


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--confusions``, ``--signature``, ``--run``, ``--iteration`` and ``--k`` to the report's parser."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--confusions", action="store_true",
                      help="instead of the comparison: for each query class, the share of its "
                           "queries' top-k held by each other class, before and after (needs --run)")
    mode.add_argument("--signature", action="store_true",
                      help="instead of the comparison: initial top-KQ precision against AP change, "
                           "binned, for an ICFRR run (needs --run)")
    parser.add_argument("--run", metavar="ID", type=int,
                        help="the run for --per-query, --confusions or --signature "
                             "(python -m jobs.runs list shows them)")
    parser.add_argument("--iteration", metavar="T", type=int,
                        help="with --per-query or --confusions/--signature: the iteration (the "
                             "'after' one for the latter; default the run's last stored one)")
    parser.add_argument("--k", metavar="K", type=int,
                        help=f"--confusions cut-off (default {DEFAULT_K}; at most the stored top-N)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether the flags ask for this module's reports; checks them.

    Raises:
        UsageError: flags that do not go together (one line).
    """
    if not (args.confusions or args.signature):
        explain_only = (("k", "--k"),) if args.per_query else (
            ("run", "--run"), ("iteration", "--iteration"), ("k", "--k"))
        for name, flag in explain_only:
            if getattr(args, name) is not None:
                raise UsageError(f"{flag} is for --per-query, --confusions or --signature; add one of them")
        return False
    mode = "--confusions" if args.confusions else "--signature"
    if args.run is None:
        raise UsageError(f"{mode} needs --run ID (the run ids are in the comparison: python -m jobs.report)")
    for name, flag in _COMPARISON_ONLY:
        if getattr(args, name, None) is not None:
            hint = "; redirect stdout to save it" if name == "output" else ""
            raise UsageError(f"{flag} is for the comparison, not {mode}{hint}")
    if args.per_query or args.latex_wide or args.protocol is not None:
        flag = ("--per-query" if args.per_query else
                "--latex-wide" if args.latex_wide else "--protocol")
        raise UsageError(f"{flag} is for the comparison, not {mode}")
    args.format = args.format or "table"
    if args.format not in ("table", "csv"):
        raise UsageError(f"{mode} prints --format table or csv, not {args.format}")
    if args.signature and args.k is not None:
        raise UsageError("--k is the --confusions cut-off; --signature uses the run's KQ")
    if args.k is not None and args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if args.iteration is not None and args.iteration < 0:
        raise UsageError(f"--iteration must be 0 or more, got {args.iteration}")
    return True


def main(args: argparse.Namespace) -> int:
    """Print the report asked for; returns 0.

    Raises:
        UsageError: bad input (unknown run, iteration not stored, k above the
            stored top-N, an unreadable store): ``jobs.report`` prints it as one
            line and exits with status 2.
    """
    from store.db import StoreError, connect_reader  # heavy imports only past --help

    try:
        con = connect_reader(args.db, timeout_s=args.timeout_s)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    try:
        text = _confusions(con, args) if args.confusions else _signature(con, args)
    finally:
        con.close()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


class _Run:
    """A finished run's stored before/after rankings and its dataset's labels."""

    def __init__(self, con, args: argparse.Namespace) -> None:
        import numpy as np

        from store import read

        info = read.run_info(con, args.run)
        if info is None:
            ids = read.runs(con).run_id.tolist()
            known = f"its finished runs are {_id_ranges(ids)}" if ids else "it holds no finished run"
            raise UsageError(f"there is no run {args.run} in {args.db}; {known}")
        if info["status"] != "done":
            raise UsageError(f"run {args.run} is not finished (status {info['status']!r}); "
                             "wait for its sweep or pick a finished run")
        stored = read.ranking_iterations(con, args.run)
        if 0 not in stored:
            raise UsageError(f"run {args.run} has no stored initial ranking (iteration 0); "
                             "it was written without rankings")
        self.iteration = max(stored) if args.iteration is None else args.iteration
        if self.iteration not in stored:
            raise UsageError(f"run {args.run} has no stored rankings for iteration {self.iteration}; "
                             f"stored: {', '.join(map(str, stored))}")
        self.info = info
        self.query_idx, self.before = read.top_rankings(con, args.run, 0)
        after_idx, self.after = read.top_rankings(con, args.run, self.iteration)
        if not np.array_equal(after_idx, self.query_idx):
            raise UsageError(f"run {args.run} stores rankings of different queries at iterations 0 "
                             f"and {self.iteration}; the store is inconsistent")
        self.names: dict[int, str] = {}
        labels = {}
        for side in ("query", "gallery"):
            items = read.dataset_items(con, args.run, side)
            full = np.full(int(items.idx.max()) + 1 if len(items) else 0, -1, dtype=np.int64)
            full[items.idx.to_numpy()] = items.label.to_numpy()
            labels[side] = full
            for label, name in zip(items.label.tolist(), items.class_name.tolist()):
                if label != -1:
                    self.names.setdefault(int(label), name if isinstance(name, str) and name else str(label))
        if self.query_idx.size and self.query_idx.max() >= labels["query"].size:
            raise UsageError(f"run {args.run} stores rankings of queries its dataset does not hold; "
                             "the store is inconsistent")
        self.labels_q = labels["query"][self.query_idx]
        self.labels_g = labels["gallery"]
        self.stored_n = int(min(self.before.shape[1], self.after.shape[1]))

    def describe(self) -> str:
        """``run 3 (icfrr, reference, KG 8, KQ 6, beta 0.5)``."""
        i = self.info
        spec = _explainable(i["method"])
        if spec is None:
            return f"run {i['run_id']} ({i['method']})"
        # registry order, str parameters first as bare values; the iteration is said elsewhere
        shown = [p for p in spec.params if p.name in i and not (spec.iterative and p.name == "n_iter")]
        parts = [str(i[p.name]) for p in shown if p.kind is str]
        parts += [f"{p.flags[-1].lstrip('-')} {i[p.name]:g}" for p in shown if p.kind is not str]
        return f"run {i['run_id']} ({', '.join([i['method'], *parts])})"


def _explainable(method_key: str) -> Method | None:
    """The registry entry of a method the failure analysis applies to (``Method.explainable``), else None."""
    from icfrr.registry import method

    try:
        spec = method(method_key)
    except KeyError:
        return None
    return spec if spec.explainable else None


def _id_ranges(ids: Sequence[int]) -> str:
    """``1-4, 7, 9-10`` from sorted run ids."""
    parts, start = [], None
    for a, b in zip(ids, list(ids[1:]) + [None]):
        start = a if start is None else start
        if b != a + 1:
            parts.append(str(a) if start == a else f"{start}-{a}")
            start = None
    return ", ".join(parts)


CONFUSION_COLUMNS = ("query_class", "other_class", "share_before", "share_after", "change")


def _confusions(con, args: argparse.Namespace) -> str:
    from icfrr.failures import confusions

    run = _Run(con, args)
    k = DEFAULT_K if args.k is None else args.k
    if k > run.stored_n:
        raise UsageError(f"--k {k} exceeds the stored top-{run.stored_n} of run {args.run}; "
                         f"pick --k {run.stored_n} or less")
    try:
        c = confusions(run.before, run.after, run.labels_q, run.labels_g, k)
    except ValueError as exc:  # rankings that name items the store does not hold
        raise UsageError(f"run {args.run}'s stored rankings do not fit its dataset: {exc}") from None
    rows = sorted(
        ((run.names[int(q)], run.names[int(o)], float(b), float(a), float(d))
         for q, o, b, a, d in zip(c.query_label, c.other_label, c.share_before, c.share_after, c.change)),
        key=lambda r: (r[0], -r[4], r[1]))
    if args.format == "csv":
        return _csv(CONFUSION_COLUMNS, rows)
    table = _aligned(["query class", "other class", "share before", "share after", "change"],
                     [[q, o, f"{b:.4f}", f"{a:.4f}", f"{d:+.4f}"] for q, o, b, a, d in rows], left=2)
    return "\n".join([
        f"{run.describe()}: top-{k} confusions, iteration 0 -> {run.iteration}",
        table,
        f"share: the fraction of the query class's top-{k} slots (its queries x {k}) held by items "
        "of the other class; pairs without a slot on either side are left out, and so are "
        "queries of unknown label",
    ])


SIGNATURE_COLUMNS = ("precision_from", "precision_to", "n_queries", "mean_ap_change", "n_losing")


def _signature(con, args: argparse.Namespace) -> str:
    import numpy as np

    from icfrr.failures import failure_signature, signature_sentence
    from store import read

    run = _Run(con, args)
    if _explainable(run.info["method"]) is None or run.info["kq"] is None:
        raise UsageError(f"run {args.run} is a {run.info['method']} run; the failure signature "
                         "measures ICFRR's initial top-KQ: pick an ICFRR run")
    kq = int(run.info["kq"])
    if not {0, run.iteration} <= set(read.stored_iterations(con, args.run)):
        raise UsageError(f"run {args.run} has no stored per-query AP for iterations 0 and {run.iteration}")
    ap = read.query_changes(con, args.run, run.iteration)
    at = {int(q): i for i, q in enumerate(run.query_idx.tolist())}
    ap_before = np.full(run.query_idx.size, np.nan)
    ap_after = np.full(run.query_idx.size, np.nan)
    for q, b, a in zip(ap.query_idx.tolist(), ap.ap_before.tolist(), ap.ap_after.tolist()):
        if int(q) in at:
            ap_before[at[int(q)]], ap_after[at[int(q)]] = b, a
    try:
        s = failure_signature(run.before, run.labels_q, run.labels_g, ap_before, ap_after, kq=kq)
    except ValueError as exc:
        raise UsageError(f"run {args.run}'s stored rankings do not fit its dataset: {exc}") from None
    last = s.bin_lo.size - 1
    bins = [(float(lo), float(hi), int(n), float(m), int(x))
            for lo, hi, n, m, x in zip(s.bin_lo, s.bin_hi, s.bin_n, s.bin_mean_change, s.bin_losing)]
    if args.format == "csv":
        return _csv(SIGNATURE_COLUMNS, bins)
    top = f"top-{s.cutoff}" if s.cutoff == kq else f"top-{s.cutoff} (KQ {kq}, capped by the stored top-{s.cutoff})"
    table = _aligned(
        [f"initial {top.split(' ')[0]} precision", "queries", "mean AP change", "losing AP"],
        [[f"[{lo:.2f}, {hi:.2f}{']' if i == last else ')'}", str(n),
          "-" if math.isnan(m) else f"{m:+.4f}", str(x)] for i, (lo, hi, n, m, x) in enumerate(bins)],
        left=1)
    return "\n".join([
        f"{run.describe()}: initial {top} precision against the AP change of iteration "
        f"{run.iteration}, {s.precision.size} queries",
        table,
        signature_sentence(s, top),
    ])


def _csv(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def _aligned(header: list[str], rows: list[list[str]], left: int) -> str:
    """Aligned text columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    return "\n".join(align([header, *rows], set(range(left))))
