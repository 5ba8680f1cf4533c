"""Training-free re-ranking baselines beside ICFRR.

Each method is a pure function of distance matrices that returns re-ranked
query-gallery distances ``[Q, G]`` (smaller = closer), numpy or torch in, the
same type out:

- ``k_reciprocal(qg, gg, qq, *, k1=20, k2=6, lambda_value=0.3)``: k-reciprocal
  encoding with Jaccard distance (Zhong et al., CVPR 2017);
- ``ecn(qg, gg, qq, *, t=3, q=8, k=25)``: Expanded Cross Neighborhood distance,
  rank-list variant (Sarfraz et al., CVPR 2018);
- ``alpha_qe``, ``dba``, ``dba_alpha_qe``: query expansion and database-side
  augmentation (``icfrr.baselines.query_expansion``).

From features, ``<name>_chunks(fq, fg, **same keywords, chunk_bytes=...)``
gives the same distances one chunk of queries at a time, as ``(slice, float32
[B, G])`` pairs, without holding [Q, G] (or any [N, N]) matrix.

Names are imported on first use (PEP 562), like ``icfrr`` itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "k_reciprocal": "icfrr.baselines.k_reciprocal_encoding",
    "ecn": "icfrr.baselines.expanded_cross_neighbourhood",
    "alpha_qe": "icfrr.baselines.query_expansion",
    "dba": "icfrr.baselines.query_expansion",
    "dba_alpha_qe": "icfrr.baselines.query_expansion",
    "k_reciprocal_chunks": "icfrr.baselines.k_reciprocal_encoding",
    "ecn_chunks": "icfrr.baselines.expanded_cross_neighbourhood",
    "alpha_qe_chunks": "icfrr.baselines.query_expansion",
    "dba_chunks": "icfrr.baselines.query_expansion",
    "dba_alpha_qe_chunks": "icfrr.baselines.query_expansion",
}

__all__ = ["alpha_qe", "alpha_qe_chunks", "dba", "dba_alpha_qe", "dba_alpha_qe_chunks", "dba_chunks", "ecn", "ecn_chunks",
           "k_reciprocal", "k_reciprocal_chunks"]

if TYPE_CHECKING:
    from icfrr.baselines.expanded_cross_neighbourhood import ecn, ecn_chunks
    from icfrr.baselines.k_reciprocal_encoding import k_reciprocal, k_reciprocal_chunks
    from icfrr.baselines.query_expansion import (alpha_qe, alpha_qe_chunks, dba, dba_alpha_qe, dba_alpha_qe_chunks,
                                                 dba_chunks)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'icfrr.baselines' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
