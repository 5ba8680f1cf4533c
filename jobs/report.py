"""``python -m jobs.report``: the comparison table of the re-ranking methods in a store.

One row per method (its best run on the dataset, with its parameters), every
metric, the change from the initial ranking and a significance mark against a
baseline (paired test on per-query AP, Holm-corrected across the rows); as an
aligned table, CSV or LaTeX (booktabs). The work is ``store.report``; this is
its command line.

Exit status: 0 done, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# Light imports only: --help must answer without loading the store, scipy or torch.
from icfrr.registry import HEADLINE, METRIC_KEYS
from jobs.cli import OneLineParser, UsageError, check_output, write_output

DEFAULT_DB = Path("results/icfrr.duckdb")
FORMATS = ("table", "csv", "latex")
#: --test choices, as in icfrr.stats.PAIRED_TESTS (not imported here: it loads scipy).
TESTS = ("randomisation", "t", "wilcoxon")

_EPILOG = f"""\
examples:
  python -m jobs.report --db results/icfrr.duckdb
  python -m jobs.report --db results/icfrr.duckdb --format latex --output table.tex
  python -m jobs.report --dataset demo --metric map_all p_100 --baseline k_reciprocal
  python -m jobs.report --baseline 12 --test wilcoxon --format csv

Each method's row is its run with the highest {HEADLINE.label} at the run's last
iteration. Metrics: {", ".join(METRIC_KEYS)}.
"""


def build_parser() -> argparse.ArgumentParser:
    """The report's flags (each ``--x-y`` also spelled ``--x_y``)."""
    p = OneLineParser(prog="python -m jobs.report", allow_abbrev=False,
                epilog=_EPILOG,
                description="Compare the re-ranking methods stored in a results database: "
                            "one row per method, its best run, every metric, the change from "
                            "the initial ranking and a paired significance test.")
    p.add_argument("--db", metavar="FILE", type=Path, default=DEFAULT_DB,
                   help=f"DuckDB results file written by python -m jobs.sweep (default {DEFAULT_DB})")
    p.add_argument("--dataset", metavar="NAME|ID",
                   help="dataset to report (needed when the store holds several)")
    p.add_argument("--backbone", metavar="NAME|ARTIFACT_ID",
                   help="which distances of the dataset (needed when its runs use several)")
    p.add_argument("--metric", "--metrics", dest="metrics", metavar="KEY", nargs="+",
                   help=f"metrics to show, in order (default all: {' '.join(METRIC_KEYS)})")
    p.add_argument("--baseline", metavar="initial|METHOD|RUN_ID",
                   help="what each row is tested against: initial (default: each run's own "
                        "initial ranking), a method key (its best run) or a run id")
    p.add_argument("--test", choices=TESTS, default="randomisation",
                   help="paired test on per-query AP (default randomisation: Fisher's "
                        "sign-flip test)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise level of the significance marks after Holm (default 0.05)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned text, default), csv or latex (booktabs)")
    p.add_argument("--output", "-o", metavar="FILE", type=Path,
                   help="write to FILE instead of stdout")
    p.add_argument("--timeout-s", "--timeout_s", dest="timeout_s", metavar="S", type=float,
                   default=5.0, help="how long to wait while a sweep holds the database (default 5)")
    return p


def _fail(message: str) -> int:
    print(f"report: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Print or write the comparison; returns the exit status (0 ok, 2 bad input)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc))
    if args.output is not None:
        try:
            check_output(args.output)
        except UsageError as exc:
            return _fail(str(exc))

    from store import report  # heavy imports (duckdb, scipy) only past --help
    from store.db import StoreError, connect_reader

    try:
        con = connect_reader(args.db, timeout_s=args.timeout_s)
    except StoreError as exc:
        return _fail(str(exc))
    try:
        cmp = report.comparison(con, dataset=args.dataset, backbone=args.backbone,
                                metrics=args.metrics, baseline=args.baseline, test=args.test,
                                alpha=args.alpha)
    except report.ReportError as exc:
        return _fail(str(exc))
    finally:
        con.close()
    text = {"table": report.to_text, "csv": report.to_csv, "latex": report.to_latex}[
        args.format](cmp)
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        try:
            write_output(args.output, lambda f: f.write(text.encode("utf-8")))
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
