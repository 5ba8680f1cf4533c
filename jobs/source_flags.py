"""The command-line flags that bring distances or features, shared by ``jobs.sweep`` and ``jobs.extract``.

Plain argparse, no heavy imports, so that ``--help`` and parse errors answer at
once; :func:`jobs.artifacts.source_from_args` reads them.
"""

from __future__ import annotations

import argparse

#: Largest gallery whose neighbour graph is exact by default; above it an ivf index builds it (--graph
#: chooses). Measured on this 2-core machine (D = 256, k = 512): exact 12.8 s at G = 10,000, growing as G²
#: (about 20 minutes at 100,000, hours at a million); ivf 4.8 s at 10,000 and 7.3 s at 20,000.
EXACT_GRAPH_MAX_ITEMS = 100_000


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


def add_graph_flags(group: argparse._ActionsContainer) -> None:
    """How the gallery neighbour graph is built from features (shared by ``jobs.sweep`` and ``jobs.extract``)."""
    group.add_argument("--graph", choices=("exact", "ivf", "hnsw"), default=None,
                       help="gallery graph from features: exact (brute force), ivf or hnsw (FAISS, approximate; "
                            "their recall against exact neighbours is measured and stored). Default: exact up "
                            f"to {EXACT_GRAPH_MAX_ITEMS:,} gallery items, ivf above. Not for imported distances")
    group.add_argument("--graph-recall-sample", "--graph_recall_sample", dest="graph_recall_sample", metavar="N",
                       type=int, default=None,
                       help="gallery items on which an approximate graph's recall is measured (default 1000, "
                            "or all when fewer; seeded)")
