"""How many rows the engine works on at once: one memory budget and the helpers that size chunks by it.

Every chunked path (re-ranking, the baselines, feature distances) sizes its
chunks of rows here, from one constant, :data:`CHUNK_BYTES`, that bounds the
temporaries of a chunk. Each row is computed on its own, so the results do not
depend on the chunks, except for float rounding: a float32 matrix product may
round a row differently in a chunk of another size. The paths whose chunks
were sized larger (query expansion, the ANN graph) therefore keep their sizes
as a multiple of the budget, so that their results stay bitwise as stored.
"""

from __future__ import annotations

#: Bytes of temporaries one chunk of rows may use: the default of every ``chunk_bytes``/``budget`` (128 MiB).
CHUNK_BYTES = 1 << 27
#: Most queries ``icfrr.rerank_chunks`` takes in one chunk by default.
MAX_QUERY_CHUNK = 4096


def rows_per_chunk(n_rows: int, bytes_per_row: int, budget: int = CHUNK_BYTES) -> int:
    """Rows of one chunk whose temporaries (``bytes_per_row`` each) stay within ``budget`` bytes.

    Args:
        n_rows: Rows in all (the chunk never exceeds it).
        bytes_per_row: Temporary bytes one row needs.
        budget: Bytes a chunk may use.

    Returns:
        At least 1 (a row always goes through), at most ``max(n_rows, 1)``.

    Example:
        >>> rows_per_chunk(10_000, 1 << 20)   # 1 MiB a row: 128 rows in 128 MiB
        128
        >>> rows_per_chunk(50, 8, budget=100), rows_per_chunk(50, 1 << 40)
        (12, 1)
    """
    return max(1, min(n_rows, budget // max(bytes_per_row, 1)))


def rerank_chunk_size(n_gallery: int, n_betas: int, n_iter: int, top_n: int) -> int:
    """Queries per chunk of ``icfrr.rerank_chunks`` when none is given.

    A query needs its float32 [G] distances and, per beta and ranking
    (``n_iter + 1`` of them), ``top_n`` kept items at about 16 bytes each
    (index and score).

    Args:
        n_gallery: G.
        n_betas: Update strengths re-ranked together.
        n_iter: Updates T.
        top_n: Items kept per query and ranking (at most G).

    Returns:
        Between 1 and :data:`MAX_QUERY_CHUNK`.
    """
    per_query = 4 * n_gallery + 16 * n_betas * (n_iter + 1) * top_n
    return rows_per_chunk(MAX_QUERY_CHUNK, per_query)
