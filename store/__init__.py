"""Persistence: Parquet artifacts, the DuckDB schema, writes and the dashboard's read API.

This package's own import stays light (no duckdb, pyarrow or torch): the
commands' ``--help`` and the dashboard read :data:`DEFAULT_DB` from here.
"""

from pathlib import Path

#: The results store the commands and the dashboard use when none is named.
DEFAULT_DB = Path("results/icfrr.duckdb")
