"""Chunk sizing shared by the code that works on rows a block at a time."""

from __future__ import annotations


def rows_per_chunk(n_rows: int, bytes_per_row: int, budget: int) -> int:
    """Rows of one chunk whose temporaries (``bytes_per_row`` each) stay within ``budget`` bytes.

    Args:
        n_rows: Rows in all (the chunk never exceeds it).
        bytes_per_row: Temporary bytes one row needs.
        budget: Bytes a chunk may use.

    Returns:
        At least 1 (a row always goes through), at most ``max(n_rows, 1)``.
    """
    return max(1, min(n_rows, budget // max(bytes_per_row, 1)))
