"""The command-line flags that bring distances or features, shared by ``jobs.sweep`` and ``jobs.extract``.

Plain argparse, no heavy imports, so that ``--help`` and parse errors answer at
once; :func:`jobs.artifacts.source_from_args` reads them.
"""

from __future__ import annotations

import argparse


def add_source_flags(group: argparse._ActionsContainer) -> None:
    """The flags that bring distances or features (shared by ``jobs.sweep`` and ``jobs.extract``)."""
    group.add_argument("--qg", metavar="FILE", help="query-gallery distances to import (.npy or .pth, [Q, G])")
    group.add_argument("--gg", metavar="FILE", help="gallery-gallery distances to import (.npy or .pth, [G, G])")
    group.add_argument("--qq", metavar="FILE",
                       help="query-query distances of imported distances (.npy or .pth, [Q, Q]), for the "
                            "methods that need them (k_reciprocal, ecn); kept as qq_dists.parquet")
    group.add_argument("--query-features", "--query_features", dest="query_features", metavar="FILE",
                       help="query features [Q, D] (.npy, or .parquet: one list column or one column "
                            "per dimension); with --gallery-features, no images needed")
    group.add_argument("--gallery-features", "--gallery_features", dest="gallery_features", metavar="FILE",
                       help="gallery features [G, D] (.npy or .parquet)")
    group.add_argument("--labels", metavar="FILE",
                       help="labels of imported distances or feature files (.npz/.json/.pth with int "
                            "'query' and 'gallery'; optional string 'query_names', 'gallery_names')")
    group.add_argument("--no-normalise", "--no_normalise", dest="no_normalise", action="store_true",
                       help="use feature files as they are (default: L2-normalise every vector)")
