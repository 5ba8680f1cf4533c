"""``python -m jobs.report --protocol <key of icfrr.protocols.PROTOCOLS>``: its flags and its three formats.

The table is ``store.protocol_report.protocol_comparison`` (the store's reads
handed to ``icfrr.protocol_comparison``); this module adds the flags to the
report's parser and builds the table from the parsed flags. Its formats
(aligned text, CSV, LaTeX) are ``jobs.report_protocol_format``'s: every format
names the protocol and its split; the ``test`` protocol is labelled "tuned on
the reported queries (optimistic)" in each.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

# Light imports only: --help must answer without loading the store or scipy.
from icfrr.protocols import PROTOCOL_ENTRIES, PROTOCOLS
from jobs.report_protocol_format import FORMATTERS

if TYPE_CHECKING:
    import duckdb

    from icfrr.protocol_comparison import ProtocolComparison

#: --ci choices (as icfrr.protocol_comparison.CI_UNITS; not imported here: it loads scipy).
CI_UNITS = ("class", "query", "none")


def add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--protocol --tune-fraction --folds --seed --ci --n-boot`` to the report's parser."""
    *first, last = [f"{p.key} ({p.flag_help})" for p in PROTOCOL_ENTRIES]
    offered = f"{', '.join(first)} or {last}" if first else last
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help=f"how each method's configuration and iteration are chosen: {offered}; "
                             "without it, each method's best run at its last iteration")
    parser.add_argument("--tune-fraction", "--tune_fraction", dest="tune_fraction", type=float,
                        default=0.5, metavar="F",
                        help="holdout: share of the query classes that tune, in (0, 1) (default 0.5)")
    parser.add_argument("--folds", type=int, default=5, metavar="K",
                        help="cv: folds of query classes, 2 .. classes (default 5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the class split and of the bootstrap (default 0)")
    parser.add_argument("--ci", choices=CI_UNITS, default="class",
                        help="95%% bootstrap intervals resampling classes (default), queries, or none")
    parser.add_argument("--n-boot", "--n_boot", dest="n_boot", type=int, default=2000, metavar="N",
                        help="bootstrap resamples (default 2000)")


def flag_problem(args: argparse.Namespace, argv: list[str]) -> str | None:
    """A one-line complaint when a protocol flag is given without ``--protocol``, else None."""
    if args.protocol is not None:
        return None
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in _PROTOCOL_ONLY:
            return f"{flag} needs --protocol ({', '.join(PROTOCOLS)}); without it the report shows each method's best run"
    return None


_PROTOCOL_ONLY = frozenset({"--tune-fraction", "--tune_fraction", "--folds", "--seed", "--ci",
                            "--n-boot", "--n_boot"})


def build(con: duckdb.DuckDBPyConnection, args: argparse.Namespace) -> ProtocolComparison:
    """The protocol table for the parsed report flags (raises ``icfrr.comparison.ReportError``)."""
    from store.protocol_report import protocol_comparison

    return protocol_comparison(
        con, protocol=args.protocol, dataset=args.dataset, backbone=args.backbone,
        metrics=args.metrics, baseline=args.baseline, test=args.test, alpha=args.alpha,
        tune_fraction=args.tune_fraction, folds=args.folds, seed=args.seed, ci=args.ci,
        n_boot=args.n_boot)


__all__ = ["CI_UNITS", "FORMATTERS", "add_protocol_flags", "build", "flag_problem"]
