"""Persistence: Parquet artifacts, the DuckDB schema, writes and the dashboard's read API."""
