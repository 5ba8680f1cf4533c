"""``python -m jobs.report``: the comparison table of the re-ranking methods in a store.

One row per method (its best run on the dataset, of how many configurations,
with its parameters), every metric with its own significance mark against a
baseline (a paired test on the metric's per-query values, Holm-corrected over
rows x metrics), the change from that baseline, and the p-values last; as an
aligned table, CSV or LaTeX (booktabs). The reads are ``store.report``'s, the
analysis ``icfrr.comparison``'s, the formats ``jobs.report_format``'s; this is
its command line.

``--per-query --run ID [--iteration T]`` exports one run's per-query metrics
instead (``store.read.per_query_table``: class, name, every per-query metric
and the first relevant rank), as CSV or Parquet.

Exit status: 0 done, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only: --help must answer without loading the store, scipy or torch.
from icfrr.registry import HEADLINE, METRIC_KEYS
from jobs import report_explain
from jobs.cli import OneLineParser, UsageError, check_output, write_output
from jobs.report_protocols import FORMATTERS as PROTOCOL_FORMATTERS
from jobs.report_protocols import add_protocol_flags, build as build_protocol, flag_problem
from store import DEFAULT_DB

if TYPE_CHECKING:
    import duckdb

FORMATS = ("table", "csv", "latex", "parquet")
#: Formats of the comparison table and of the per-query export.
TABLE_FORMATS, PER_QUERY_FORMATS = ("table", "csv", "latex"), ("csv", "parquet")
#: --test choices, as in icfrr.stats.PAIRED_TESTS (not imported here: it loads scipy).
TESTS = ("randomisation", "t", "wilcoxon")

_EPILOG = f"""\
examples:
  python -m jobs.report --db results/icfrr.duckdb
  python -m jobs.report --db results/icfrr.duckdb --format latex --output table.tex
  python -m jobs.report --dataset demo --metric map_all p_100 --baseline k_reciprocal
  python -m jobs.report --baseline 12 --test wilcoxon --format csv
  python -m jobs.report --confusions --run 3 --k 10 --format csv
  python -m jobs.report --signature --run 3
  python -m jobs.report --format latex --latex-wide --output table.tex
  python -m jobs.report --per-query --run 7 --iteration 0 --format parquet -o run7-it0.parquet

Each method's row is its run with the highest {HEADLINE.label} at the run's last
iteration. Metrics: {", ".join(METRIC_KEYS)}.
"""


def build_parser() -> argparse.ArgumentParser:
    """The report's flags (each ``--x-y`` also spelled ``--x_y``)."""
    p = OneLineParser(prog="python -m jobs.report", allow_abbrev=False,
                epilog=_EPILOG,
                description="Compare the re-ranking methods stored in a results database: "
                            "one row per method, its best run, every metric with a paired "
                            "significance mark, and the change from the baseline.")
    p.add_argument("--db", metavar="FILE", type=Path, default=DEFAULT_DB,
                   help=f"DuckDB results file written by python -m jobs.sweep (default {DEFAULT_DB})")
    p.add_argument("--dataset", metavar="NAME|ID",
                   help="dataset to report (needed when the store holds several)")
    p.add_argument("--backbone", metavar="NAME|ARTIFACT_ID",
                   help="which distances of the dataset (needed when its runs use several)")
    p.add_argument("--metric", "--metrics", dest="metrics", metavar="KEY", nargs="+",
                   help=f"metrics to show, in order (default all: {' '.join(METRIC_KEYS)})")
    p.add_argument("--baseline", metavar="initial|METHOD|RUN_ID",
                   help="what each row is tested and its Δ measured against: initial "
                        "(default: each run's own "
                        "initial ranking), a method key (its best run) or a run id")
    p.add_argument("--test", choices=TESTS, default="randomisation",
                   help="paired test on each metric's per-query values (default "
                        "randomisation: Fisher's sign-flip test)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise level of the significance marks after Holm (default 0.05)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (aligned text, default), csv or latex (booktabs); "
                        "with --per-query: csv (default) or parquet")
    p.add_argument("--latex-wide", "--latex_wide", dest="latex_wide", action="store_true",
                   help="with --format latex: a table* spanning both columns of a two-column "
                        "paper (for tables of more than 8 columns)")
    p.add_argument("--per-query", "--per_query", dest="per_query", action="store_true",
                   help="export one run's per-query metrics (class, name, every metric, first "
                        "relevant rank) instead of the comparison table; needs --run")
    p.add_argument("--output", "-o", metavar="FILE", type=Path,
                   help="write to FILE instead of stdout")
    p.add_argument("--timeout-s", "--timeout_s", dest="timeout_s", metavar="S", type=float,
                   default=5.0, help="how long to wait while a sweep holds the database (default 5)")
    add_protocol_flags(p)
    report_explain.add_flags(p)
    return p


def _fail(message: str) -> int:
    print(f"report: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Print or write the comparison; returns the exit status (0 ok, 2 bad input)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(argv)
        if report_explain.wanted(args):
            return report_explain.main(args)
    except UsageError as exc:
        return _fail(str(exc))
    if (problem := flag_problem(args, argv)) is not None:
        return _fail(problem)
    try:
        _check_flags(args)
        if args.output is not None:
            check_output(args.output)
    except UsageError as exc:
        return _fail(str(exc))

    from icfrr.comparison import ReportError  # heavy imports (duckdb, scipy) only past --help
    from jobs import report_format
    from store import report
    from store.db import StoreError, connect_reader

    try:
        con = connect_reader(args.db, timeout_s=args.timeout_s)
    except StoreError as exc:
        return _fail(str(exc))
    try:
        if args.per_query:
            data = _per_query(con, args)
        else:
            if args.protocol is not None:  # chosen on some classes, reported on the others
                cmp = build_protocol(con, args)
                text = PROTOCOL_FORMATTERS[args.format](cmp)
            else:
                cmp = report.comparison(con, dataset=args.dataset, backbone=args.backbone,
                                        metrics=args.metrics, baseline=args.baseline,
                                        test=args.test, alpha=args.alpha)
                text = (report_format.to_latex(cmp, wide=args.latex_wide) if args.format == "latex"
                        else {"table": report_format.to_text, "csv": report_format.to_csv}[args.format](cmp))
            data = (text if text.endswith("\n") else text + "\n").encode("utf-8")
    except (ReportError, UsageError) as exc:
        return _fail(str(exc))
    finally:
        con.close()
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            write_output(args.output, lambda f: f.write(data))
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}")
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Settle --format and refuse flag combinations that mean nothing.

    Raises:
        UsageError: A format or flag of the other mode, --per-query without
            --run, or Parquet to a terminal.
    """
    if args.per_query:
        args.format = args.format or "csv"
        if args.format not in PER_QUERY_FORMATS:
            raise UsageError(f"--per-query writes {' or '.join(PER_QUERY_FORMATS)}, not "
                             f"{args.format}; pass --format csv or --format parquet")
        if args.run is None:
            raise UsageError("--per-query needs --run ID (python -m jobs.runs list shows them)")
        if args.format == "parquet" and args.output is None and sys.stdout.isatty():
            raise UsageError("Parquet is binary; pass --output FILE")
        for flag, value in (("--dataset", args.dataset), ("--backbone", args.backbone),
                            ("--metric", args.metrics), ("--baseline", args.baseline),
                            ("--latex-wide", args.latex_wide or None),
                            ("--protocol", args.protocol)):
            if value is not None:
                raise UsageError(f"{flag} is for the comparison table; --per-query exports "
                                 "every metric of the one run given by --run")
        return
    args.format = args.format or "table"
    if args.format not in TABLE_FORMATS:
        raise UsageError(f"--format {args.format} is for --per-query; the comparison table "
                         f"is {', '.join(TABLE_FORMATS)}")
    if args.latex_wide and args.format != "latex":
        raise UsageError("--latex-wide is for --format latex")


def _per_query(con: duckdb.DuckDBPyConnection, args: argparse.Namespace) -> bytes:
    """The per-query export of ``args.run`` at ``args.iteration``, as CSV or Parquet bytes.

    Raises:
        UsageError: An unknown run, or an iteration whose per-query metrics were not kept.
    """
    import io

    from store import read

    stored = read.stored_iterations(con, args.run)
    if not stored:
        known = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [args.run]).fetchone()[0]
        if not known:
            raise UsageError(f"no run {args.run} in {args.db}; python -m jobs.runs list "
                             f"--db {args.db} shows the runs")
        raise UsageError(f"run {args.run} holds no per-query metrics (unfinished, or its "
                         "queries had no labels)")
    iteration = stored[-1] if args.iteration is None else args.iteration
    if iteration not in stored:
        raise UsageError(f"iteration {iteration} of run {args.run} is not stored; stored: "
                         f"{', '.join(map(str, stored))}")
    table = read.per_query_table(con, args.run, iteration)
    if args.format == "csv":
        return table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
