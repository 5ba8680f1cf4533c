"""``python -m jobs.runs list|show|delete``: the runs of a results store.

``list`` prints one line per finished run, ``show ID`` one run's parameters
and every stored iteration's metrics, ``delete ID [ID ...]`` removes runs
and what only they referred to (``store.manage``), in one transaction, after
asking (``--yes`` skips the question).

Exit status: 0 done, 1 a deletion declined, 2 bad input (one line on stderr,
nothing changed).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only: --help must answer without loading the store.
from icfrr.registry import HEADLINE, LABELS, METRIC_KEYS
from jobs.cli import OneLineParser, UsageError
from store import DEFAULT_DB

if TYPE_CHECKING:
    import duckdb

    from store.manage import Deletion

_EPILOG = """\
examples:
  python -m jobs.runs list --db results/icfrr.duckdb
  python -m jobs.runs show 12
  python -m jobs.runs delete 12 13          # asks first
  python -m jobs.runs delete 12 --yes

delete removes the runs' metrics and rankings, their sweeps once empty, and
the artifacts and datasets no remaining run refers to; the cache folders on
disk are kept (other stores may reuse them).
"""


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their flags (each ``--x-y`` also spelled ``--x_y``)."""
    p = OneLineParser(prog="python -m jobs.runs", allow_abbrev=False, epilog=_EPILOG,
                      description="List, show and delete the runs of a results database.")
    p.add_argument("--db", metavar="FILE", type=Path, default=DEFAULT_DB,
                   help=f"DuckDB results file (default {DEFAULT_DB})")
    p.add_argument("--timeout-s", "--timeout_s", dest="timeout_s", metavar="S", type=float,
                   default=5.0, help="how long to wait while a sweep holds the database "
                                     "(default 5)")
    sub = p.add_subparsers(dest="command", metavar="list|show|delete",
                           parser_class=OneLineParser)
    sub.add_parser("list", help="one line per finished run")
    show = sub.add_parser("show", help="one run's parameters and metrics per iteration")
    show.add_argument("run", metavar="ID", type=int)
    delete = sub.add_parser("delete", help="delete runs (asks first unless --yes)")
    delete.add_argument("runs", metavar="ID", type=int, nargs="+")
    delete.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    return p


def _fail(message: str) -> int:
    print(f"runs: error: {message}", file=sys.stderr)
    return 2


def _num(v: object) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _columns(rows: list[list[str]], left: int) -> list[str]:
    """Rows of cells aligned: the first ``left`` columns left-justified, the others right."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if c < left else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def _list(con: duckdb.DuckDBPyConnection) -> str:
    from store import read
    from icfrr.labels import params_text

    runs = read.runs(con)
    if runs.empty:
        return "no finished runs"
    h = HEADLINE.key
    rows = [["run", "sweep", "dataset", "backbone", "method", "params", "T",
             f"{LABELS[h]} before", "after", "finished"]]
    for r in runs.itertuples():
        rows.append([str(r.run_id), str(r.sweep_id), str(r.dataset), str(r.backbone),
                     str(r.method), params_text(str(r.method), _params(r.params)) or "-",
                     str(r.last_iteration), _num(getattr(r, f"{h}_before")),
                     _num(getattr(r, f"{h}_after")), str(r.finished_at)[:19]])
    return "\n".join(_columns(rows, 6))


def _params(text: object) -> dict[str, object]:
    import json

    try:
        parsed = json.loads(str(text)) if text else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _show(con: duckdb.DuckDBPyConnection, run_id: int) -> str:
    import pandas as pd

    from store import read
    from icfrr.labels import params_text

    runs = read.runs(con)
    hit = runs[runs.run_id == run_id]
    if hit.empty:
        raise UsageError(f"no finished run {run_id}; python -m jobs.runs list shows the runs")
    r = next(hit.itertuples())
    kept = read.stored_iterations(con, run_id)
    lines = [f"run {r.run_id} · sweep {r.sweep_id} · {r.dataset} · backbone {r.backbone} "
             f"(artifact {r.artifact_id}, per_class {r.per_class})",
             f"method {r.method}: {params_text(str(r.method), _params(r.params)) or '-'}",
             f"device {r.device}, "
             f"{'n/a' if pd.isna(r.seconds) else f'{r.seconds:.1f}'} s, "
             f"finished {str(r.finished_at)[:19]}",
             f"per-query metrics and rankings kept for iterations "
             f"{', '.join(map(str, kept)) or 'none'}", ""]
    table = read.metrics_by_iteration(con, [run_id])
    rows = [["iteration", *(LABELS[m] for m in METRIC_KEYS)]]
    for t in table.itertuples():
        rows.append([str(t.iteration), *(_num(getattr(t, m)) for m in METRIC_KEYS)])
    return "\n".join(lines + _columns(rows, 0))


def _describe(plan: Deletion) -> str:
    rows = plan.rows
    parts = [f"{len(plan.run_ids)} run{'s' if len(plan.run_ids) != 1 else ''} "
             f"({', '.join(map(str, plan.run_ids))})",
             f"{rows['run_metrics']} metric rows, {rows['query_metrics']} per-query rows, "
             f"{rows['rankings']} ranking rows"]
    for table, noun in (("sweeps", "emptied sweep"), ("artifacts", "unused artifact"),
                        ("datasets", "unused dataset")):
        if rows[table]:
            parts.append(f"{rows[table]} {noun}{'s' if rows[table] != 1 else ''}")
    return ", ".join(parts)


def _delete(args: argparse.Namespace) -> int:
    from store import manage
    from store.db import StoreError, connect_reader, writer

    try:
        with connect_reader(args.db, timeout_s=args.timeout_s) as con:
            plan = manage.deletion(con, args.runs)
    except StoreError as exc:
        return _fail(str(exc))
    except manage.UnknownRunError as exc:
        return _fail(f"{exc}; python -m jobs.runs list --db {args.db} shows the runs; "
                     "nothing deleted")
    if not args.yes:
        print(f"delete {_describe(plan)} from {args.db}? [y/N] ", end="", file=sys.stderr,
              flush=True)
        line = sys.stdin.readline()
        if not line.endswith("\n"):  # end of input: finish the prompt's line
            print(file=sys.stderr)
        if line.strip().lower() not in ("y", "yes"):
            print("runs: nothing deleted", file=sys.stderr)
            return 1
    try:
        with writer(args.db, timeout_s=args.timeout_s) as con:
            done = manage.delete_runs(con, plan.run_ids)
    except StoreError as exc:
        return _fail(str(exc))
    except manage.UnknownRunError as exc:  # deleted by someone else meanwhile
        return _fail(f"{exc}; nothing deleted")
    print(f"deleted {_describe(done)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 ok, 1 declined, 2 bad input)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("say what to do: list, show ID or delete ID "
                             "(see python -m jobs.runs --help)")
    except UsageError as exc:
        return _fail(str(exc))
    if args.command == "delete":
        return _delete(args)

    from store.db import StoreError, connect_reader

    try:
        with connect_reader(args.db, timeout_s=args.timeout_s) as con:
            text = _list(con) if args.command == "list" else _show(con, args.run)
    except (StoreError, UsageError) as exc:
        return _fail(str(exc))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
