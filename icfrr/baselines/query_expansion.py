"""Query expansion (αQE) and database-side augmentation (DBA), from features or from distances.

References:
    - F. Radenović, G. Tolias, O. Chum, "Fine-tuning CNN Image Retrieval with No
      Human Annotation", TPAMI 2018 (αQE, α-weighted DBA).
    - R. Arandjelović, A. Zisserman, "Three things everyone should know to improve
      object retrieval", CVPR 2012 (database-side augmentation).
    - O. Chum et al., "Total Recall", ICCV 2007 (average query expansion, α = 0 here).

All vectors are L2-normalised and ``sim(x, y) = xᵀy``. Weights are
``w = max(sim, 0)^α``: a neighbour with a negative similarity gets weight 0
(a negative number has no real non-integer power), except at α = 0, where
``0^0 = 1`` and every neighbour counts once (plain average QE/DBA).

- **αQE**: with ``N(q)`` the query's ``n`` nearest gallery items,
  ``q' = normalise(q + Σ_{i∈N(q)} max(qᵀg_i, 0)^α g_i)`` and the result is
  ``‖q' - g‖`` for every gallery item g.
- **DBA**: with ``N(j)`` the ``n`` nearest OTHER gallery items of item j (the item
  itself is excluded by index, so a duplicate at distance 0 is a neighbour),
  ``g'_j = normalise(g_j + Σ_{k∈N(j)} max(g_jᵀg_k, 0)^α g_k)``: the item always
  counts with weight 1, so n + 1 vectors are summed (as in common implementations
  that take the top n + 1 with the item itself first, self weight 1^α = 1).
  The result is ``‖q - g'_j‖``.
- **DBA + αQE**: αQE run on the DBA'd gallery ``g'`` (neighbours and weights
  taken from ``q`` against ``g'``); the query itself is not augmented.

Nearest means smallest Euclidean distance, ties by gallery index (the order a
stable sort gives). ``n`` is clamped to G for αQE and to G - 1 for DBA; ``n = 0``
leaves the query (or the gallery) unchanged.

**Distance form.** Only ``qg = ‖q - g‖`` and ``gg = ‖g - g‖`` are known, between
unit vectors, so ``sim = 1 - d²/2`` and every quantity above is bilinear in
the sims. With the DBA'd gallery written ``g'_j = Σ_m A_jm g_m`` (A sparse, one
row per item: the item and its n neighbours, weights divided by
``‖g_j + Σ w g_k‖ = sqrt(wᵀ S_{N'(j)} w)``), and ``u = q + Σ_i w_i g'_i``:

    sim(q, g'_j)  = Σ_m A_jm sim(q, g_m)                  (P = s_qg Aᵀ)
    sim(u, g'_j)  = P_j + Σ_i w_i (A S Aᵀ)_{i j}          (rows of S gathered per query)
    ‖u‖²          = 1 + 2 Σ_i w_i P_i + Σ_i w_i Σ_i' w_i' (A S Aᵀ)_{i i'}
    d(q', g'_j)   = sqrt(2 - 2 sim(u, g'_j) / ‖u‖)

which equals the feature form exactly when the distances are Euclidean between
L2-normalised features (A = I without DBA). Distances that visibly break that
assumption are refused with a ValueError: NaN/inf, below -1e-3, above 2 + 1e-3,
a gg diagonal beyond 1e-2, or d(i,j)² and d(j,i)² differing by more than 2e-3
(on a fixed sample of 200,000 pairs when G² is larger).

Memory: queries are processed in row chunks whose temporaries stay near
``_BLOCK_BYTES`` (256 MiB, twice ``icfrr.chunks.CHUNK_BYTES``); only the at
most ``qe_n (dba_n + 1)`` rows of gg a query needs are copied (into one reused
buffer), so nothing of size [(Q+G), (Q+G)] or [G, G] beyond the given gg is built. The feature form never builds [G, G].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from icfrr._checks import as_matrix
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr._sorting import smallest_rows
from icfrr.neighbors import neighbor_graph, neighbor_graph_from_features

Array = np.ndarray | torch.Tensor

#: How far a distance may fall below 0 or rise above 2 (float rounding) before it is refused.
_DIST_TOL = 1e-3
#: How far gg's diagonal may be from 0 (float32 Euclidean distances of an item to itself).
_DIAG_TOL = 1e-2
#: How far d(i, j)² and d(j, i)² may differ before gg counts as not symmetric.
_SYM_TOL = 2e-3
#: Bytes of temporaries one chunk of rows may use: twice the common budget, the size these
#: chunks always had (a float32 product may round a row differently in chunks of another size).
_BLOCK_BYTES = 2 * CHUNK_BYTES


def alpha_qe(
    qg: Array | None,
    gg: Array | None,
    *,
    qe_n: int = 10,
    qe_alpha: float = 3.0,
    fq: Array | None = None,
    fg: Array | None = None,
) -> Array:
    """αQE re-ranking (Radenović, Tolias & Chum, TPAMI 2018).

    ``q' = normalise(q + Σ_{i=1..qe_n} max(qᵀg_(i), 0)^α g_(i))`` over the query's qe_n
    nearest gallery items; α = 0 is average QE. Returns ``‖q' - g‖``.

    Example:
        The query at 0 degrees, the gallery at 40, -45, 55 and 70 (unit
        vectors). The expanded query turns toward the three items at positive
        angles, so item 2 (55 degrees) passes item 1 (-45):

        >>> import numpy as np, icfrr
        >>> from icfrr.baselines import alpha_qe
        >>> def unit(degrees):  # unit vectors in the plane
        ...     a = np.radians(degrees)
        ...     return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)
        >>> fq, fg = unit([0.0]), unit([40.0, -45.0, 55.0, 70.0])
        >>> qg, gg = icfrr.pairwise_distances(fq, fg).numpy(), icfrr.pairwise_distances(fg, fg).numpy()
        >>> qg.argsort(axis=1).tolist(), alpha_qe(qg, gg).argsort(axis=1).tolist()
        ([[0, 1, 2, 3]], [[0, 2, 1, 3]])

    Args:
        qg: float [Q, G] Euclidean distances between L2-normalised features
            (ignored, only its shape checked, when fq and fg are given).
        gg: float [G, G] the same between gallery items (likewise).
        qe_n: neighbours to expand with, >= 0; clamped to G; 0 returns the initial distances.
        qe_alpha: weight exponent, finite and >= 0.
        fq: float [Q, D] query features (L2-normalised here); with fg, used instead of distances.
        fg: float [G, D] gallery features.

    Returns:
        float32 [Q, G] re-ranked distances, smaller = closer: a numpy array or a
        torch tensor (on the input's device) like qg, or like fq when qg is None.

    Raises:
        ValueError: bad qe_n or qe_alpha, shapes that disagree, NaN/inf, or distances that
            cannot be Euclidean between unit vectors (negative, above 2, a nonzero
            gg diagonal, an asymmetric gg).
    """
    return _chain(qg, gg, fq, fg, 0, 0.0, _check_n(qe_n, "qe_n"), _check_alpha(qe_alpha, "qe_alpha"))


def dba(
    qg: Array | None,
    gg: Array | None,
    *,
    dba_n: int = 10,
    dba_alpha: float = 3.0,
    fq: Array | None = None,
    fg: Array | None = None,
) -> Array:
    """α-weighted database-side augmentation (Arandjelović & Zisserman, CVPR 2012; Radenović et al.).

    ``g'_j = normalise(g_j + Σ_{k∈N(j)} max(g_jᵀg_k, 0)^α g_k)`` over the dba_n nearest
    OTHER gallery items of j (the item itself counts once, weight 1). Returns ``‖q - g'_j‖``.

    Example:
        ``alpha_qe``'s example. Item 0 (40 degrees) is augmented with its close
        neighbours at 55 and 70 and turns away from the query at 0; item 1
        (-45) has no close neighbour, barely moves, and passes item 0:

        >>> import numpy as np, icfrr
        >>> from icfrr.baselines import dba
        >>> def unit(degrees):  # unit vectors in the plane
        ...     a = np.radians(degrees)
        ...     return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)
        >>> fq, fg = unit([0.0]), unit([40.0, -45.0, 55.0, 70.0])
        >>> qg, gg = icfrr.pairwise_distances(fq, fg).numpy(), icfrr.pairwise_distances(fg, fg).numpy()
        >>> qg.argsort(axis=1).tolist(), dba(qg, gg).argsort(axis=1).tolist()
        ([[0, 1, 2, 3]], [[1, 0, 2, 3]])

    Args:
        qg, gg, fq, fg: as in ``alpha_qe``.
        dba_alpha: weight exponent, finite and >= 0.
        dba_n: neighbours per gallery item, >= 0; clamped to G - 1; 0 returns the initial distances.

    Returns:
        float32 [Q, G] distances from each query to the augmented gallery, typed as in ``alpha_qe``.

    Raises:
        ValueError: as in ``alpha_qe``.
    """
    return _chain(qg, gg, fq, fg, _check_n(dba_n, "dba_n"), _check_alpha(dba_alpha, "dba_alpha"), 0, 0.0)


def dba_alpha_qe(
    qg: Array | None,
    gg: Array | None,
    *,
    dba_n: int = 10,
    dba_alpha: float = 3.0,
    qe_n: int = 10,
    qe_alpha: float = 3.0,
    fq: Array | None = None,
    fg: Array | None = None,
) -> Array:
    """DBA on the gallery, then αQE of each query over the augmented gallery (Radenović et al.).

    ``g'`` as in ``dba`` (dba_n, dba_alpha); then ``q' = normalise(q + Σ_{i=1..qe_n}
    max(qᵀg'_(i), 0)^α_qe g'_(i))`` over the query's qe_n nearest augmented items.
    Returns ``‖q' - g'_j‖``. ``dba_n = 0`` is ``alpha_qe``; ``qe_n = 0`` is ``dba``.

    Args:
        qg, gg, fq, fg: as in ``alpha_qe``.
        dba_n, dba_alpha: DBA neighbours (clamped to G - 1) and exponent.
        qe_n, qe_alpha: αQE neighbours (clamped to G) and exponent.

    Returns:
        float32 [Q, G], typed as in ``alpha_qe``.

    Raises:
        ValueError: as in ``alpha_qe``.
    """
    return _chain(
        qg, gg, fq, fg,
        _check_n(dba_n, "dba_n"), _check_alpha(dba_alpha, "dba_alpha"),
        _check_n(qe_n, "qe_n"), _check_alpha(qe_alpha, "qe_alpha"),
    )


def alpha_qe_chunks(
    fq: Array, fg: Array, *, qe_n: int = 10, qe_alpha: float = 3.0, chunk_bytes: int = _BLOCK_BYTES
) -> Iterator[tuple[slice, np.ndarray]]:
    """``alpha_qe`` from features, one chunk of queries at a time: [Q, G] is never held.

    Args:
        fq, fg, qe_n, qe_alpha: as in ``alpha_qe``.
        chunk_bytes: bytes of temporaries one chunk of queries may use.

    Yields:
        (the chunk's query slice, float32 numpy [B, G] distances), in query order;
        the rows equal ``alpha_qe``'s (up to float rounding of the chunked products).

    Raises:
        ValueError: as in ``alpha_qe`` (on the first chunk).
    """
    return _chain_chunks(fq, fg, 0, 0.0, _check_n(qe_n, "qe_n"), _check_alpha(qe_alpha, "qe_alpha"), chunk_bytes)


def dba_chunks(
    fq: Array, fg: Array, *, dba_n: int = 10, dba_alpha: float = 3.0, chunk_bytes: int = _BLOCK_BYTES
) -> Iterator[tuple[slice, np.ndarray]]:
    """``dba`` from features, one chunk of queries at a time (see ``alpha_qe_chunks``)."""
    return _chain_chunks(fq, fg, _check_n(dba_n, "dba_n"), _check_alpha(dba_alpha, "dba_alpha"), 0, 0.0, chunk_bytes)


def dba_alpha_qe_chunks(
    fq: Array, fg: Array, *, dba_n: int = 10, dba_alpha: float = 3.0, qe_n: int = 10, qe_alpha: float = 3.0,
    chunk_bytes: int = _BLOCK_BYTES,
) -> Iterator[tuple[slice, np.ndarray]]:
    """``dba_alpha_qe`` from features, one chunk of queries at a time (see ``alpha_qe_chunks``)."""
    return _chain_chunks(
        fq, fg, _check_n(dba_n, "dba_n"), _check_alpha(dba_alpha, "dba_alpha"),
        _check_n(qe_n, "qe_n"), _check_alpha(qe_alpha, "qe_alpha"), chunk_bytes,
    )


def _chain_chunks(
    fq: Array, fg: Array, n_dba: int, alpha_dba: float, n_qe: int, alpha_qe_: float, budget: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """The feature form of ``_chain``, yielding chunks of query rows as numpy."""
    inputs = _inputs(None, None, fq, fg)
    gallery = _dba_features(inputs.fg, n_dba, alpha_dba)   # [G, D]: the augmented gallery is kept whole
    for rows, dists in _qe_feature_chunks(inputs.fq, gallery, n_qe, alpha_qe_, budget):
        yield rows, dists.cpu().numpy()


# --- parameters and inputs -------------------------------------------------------------------


def _check_n(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (neighbours to expand with), got {value!r}")
    return int(value)


def _check_alpha(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (the similarity exponent), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Inputs:
    """Validated float32 tensors on one device: either (fq, fg) or (qg, gg)."""

    like: Array
    fq: torch.Tensor | None = None
    fg: torch.Tensor | None = None
    qg: torch.Tensor | None = None
    gg: torch.Tensor | None = None

    def output(self, out: torch.Tensor) -> Array:
        """``out`` as the caller's type: numpy, or a tensor on the caller's device."""
        if isinstance(self.like, torch.Tensor):
            return out.to(self.like.device)
        return out.cpu().numpy()


def _shape(x: Array) -> tuple[int, ...]:
    return tuple(np.shape(x)) if not isinstance(x, torch.Tensor) else tuple(x.shape)


def _inputs(qg: Array | None, gg: Array | None, fq: Array | None, fg: Array | None) -> _Inputs:
    if (fq is None) != (fg is None):
        raise ValueError("pass both fq and fg (query and gallery features), or neither")
    like = qg if qg is not None else fq
    if like is None:
        raise ValueError("pass the distances qg and gg, or the features fq and fg")
    device = like.device if isinstance(like, torch.Tensor) else torch.device("cpu")
    if fq is not None:
        fq_t = as_matrix(fq, "fq").to(device)
        fg_t = as_matrix(fg, "fg").to(device)
        if fq_t.shape[1] != fg_t.shape[1]:
            raise ValueError(f"fq and fg must have the same width, got {fq_t.shape[1]} and {fg_t.shape[1]}")
        _check_sizes(fq_t.shape[0], fg_t.shape[0])
        q, g = fq_t.shape[0], fg_t.shape[0]
        for name, x, want in (("qg", qg, (q, g)), ("gg", gg, (g, g))):
            if x is not None and _shape(x) != want:
                raise ValueError(f"{name} has shape {_shape(x)} but the features give {want}")
        return _Inputs(like, fq=_unit_rows(fq_t, "fq"), fg=_unit_rows(fg_t, "fg"))
    if qg is None or gg is None:
        raise ValueError("pass both qg [Q, G] and gg [G, G] distances (or the features fq and fg)")
    qg_t = as_matrix(qg, "qg")
    gg_t = as_matrix(gg, "gg").to(device)
    _check_sizes(qg_t.shape[0], qg_t.shape[1])
    if tuple(gg_t.shape) != (qg_t.shape[1], qg_t.shape[1]):
        raise ValueError(f"gg must be [G, G] with G = {qg_t.shape[1]} (qg's columns), got shape {tuple(gg_t.shape)}")
    _check_unit_distances(qg_t, "qg")
    _check_unit_distances(gg_t, "gg")
    _check_self_distances(gg_t)
    return _Inputs(like, qg=qg_t, gg=gg_t)


def _check_sizes(q: int, g: int) -> None:
    if q == 0 or g == 0:
        raise ValueError(f"need at least one query and one gallery item, got Q={q}, G={g}")


def _unit_rows(f: torch.Tensor, name: str) -> torch.Tensor:
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    zero = torch.nonzero(norms.flatten() <= 1e-12).flatten()
    if zero.numel():
        raise ValueError(f"{name} row {int(zero[0])} is all zeros, so it has no direction; drop or recompute it")
    return f / norms


def _check_unit_distances(d: torch.Tensor, name: str) -> None:
    lo, hi = torch.aminmax(d)
    if float(lo) < -_DIST_TOL:
        raise ValueError(f"{name} holds a negative distance ({float(lo):.4g}); distances must be >= 0")
    if float(hi) > 2.0 + _DIST_TOL:
        raise ValueError(
            f"{name} holds a distance of {float(hi):.4g} > 2, so it is not Euclidean between L2-normalised "
            "features as the distance form of αQE/DBA needs; pass the features fq and fg instead"
        )


def _check_self_distances(gg: torch.Tensor, n_samples: int = 200_000) -> None:
    """gg's diagonal must be ~0 and gg symmetric (checked on a fixed sample of pairs when large)."""
    diag = float(gg.diagonal().abs().max())
    if diag > _DIAG_TOL:
        raise ValueError(
            f"gg's diagonal is not 0 (up to {diag:.4g}), so gg is not a Euclidean distance matrix; "
            "pass the gallery-gallery distances (or the features fq and fg)"
        )
    g = gg.shape[0]
    if g * g <= n_samples:
        gap = float((gg.square() - gg.T.square()).abs().max())
    else:
        gen = torch.Generator().manual_seed(0)
        i = torch.randint(0, g, (n_samples,), generator=gen).to(gg.device)
        j = torch.randint(0, g, (n_samples,), generator=gen).to(gg.device)
        gap = float((gg[i, j].square() - gg[j, i].square()).abs().max())
    if gap > _SYM_TOL:
        raise ValueError(
            f"gg is not symmetric (d(i,j)² and d(j,i)² differ by up to {gap:.4g}), so it is not a Euclidean "
            "distance matrix; pass symmetric distances (or the features fq and fg)"
        )


# --- shared pieces ---------------------------------------------------------------------------


def _chain(
    qg: Array | None, gg: Array | None, fq: Array | None, fg: Array | None,
    n_dba: int, alpha_dba: float, n_qe: int, alpha_qe_: float,
) -> Array:
    """DBA (n_dba neighbours, 0 = none) then αQE (n_qe, 0 = none), in the form the inputs allow."""
    inputs = _inputs(qg, gg, fq, fg)
    if inputs.fq is not None:
        gallery = _dba_features(inputs.fg, n_dba, alpha_dba)
        out = _qe_from_features(inputs.fq, gallery, n_qe, alpha_qe_)
    else:
        mix = _dba_mix_from_distances(inputs.gg, n_dba, alpha_dba)
        out = _qe_from_distances(inputs.qg, inputs.gg, mix, n_qe, alpha_qe_)
    return inputs.output(out)


def _weights(sims: torch.Tensor, alpha: float) -> torch.Tensor:
    """``max(sim, 0)^α`` (``0^0 = 1``: at α = 0 every neighbour weighs 1)."""
    return sims.clamp(min=0).pow(alpha)


def _distance_from_sim(sims: torch.Tensor) -> torch.Tensor:
    """``‖x - y‖ = sqrt(2 - 2 xᵀy)`` for unit vectors (in place)."""
    return sims.mul_(-2.0).add_(2.0).clamp_(min=0).sqrt_()


def _nearest(dists: torch.Tensor, n: int) -> torch.Tensor:
    """Columns of the n smallest entries of each row, nearest first, ties by column index."""
    if dists.device.type == "cpu":
        idx, _ = smallest_rows(dists.contiguous().numpy(), n)
        return torch.from_numpy(idx)
    return torch.sort(dists, dim=1, stable=True).indices[:, :n]


# --- feature form ----------------------------------------------------------------------------


def _dba_features(fg: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """``g'_j = normalise(g_j + Σ_{k∈N(j)} max(g_jᵀg_k, 0)^α g_k)``, N(j) the n nearest other items."""
    n = min(n, fg.shape[0] - 1)
    if n == 0:
        return fg
    neighbours = neighbor_graph_from_features(fg, n).indices.to(fg.device)
    acc = fg.clone()
    for c in range(n):  # one neighbour rank at a time: [G, D] temporaries only
        other = fg[neighbours[:, c]]
        acc.addcmul_(other, _weights((fg * other).sum(1, keepdim=True), alpha))
    return torch.nn.functional.normalize(acc, dim=1)


def _qe_from_features(fq: torch.Tensor, fg: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """αQE of unit queries fq over unit gallery fg; returns float32 [Q, G] distances."""
    out = torch.empty(fq.shape[0], fg.shape[0], dtype=torch.float32, device=fq.device)
    for rows, dists in _qe_feature_chunks(fq, fg, n, alpha, _BLOCK_BYTES):
        out[rows] = dists
    return out


def _qe_feature_chunks(
    fq: torch.Tensor, fg: torch.Tensor, n: int, alpha: float, budget: int
) -> Iterator[tuple[slice, torch.Tensor]]:
    """αQE of unit queries fq over unit gallery fg, one chunk of queries at a time.

    Yields (the queries' slice, float32 [B, G] distances); a chunk's temporaries stay near ``budget`` bytes.
    """
    q, g = fq.shape[0], fg.shape[0]
    n = min(n, g)
    step = rows_per_chunk(q, 4 * (3 * g + n * fg.shape[1]), budget)
    for s in range(0, q, step):
        rows = slice(s, min(s + step, q))
        sims = fq[rows] @ fg.T
        if n == 0:
            yield rows, _distance_from_sim(sims)
            continue
        idx = _nearest(_distance_from_sim(sims.clone()), n)
        w = _weights(sims.gather(1, idx), alpha)
        expanded = fq[rows] + torch.einsum("bn,bnd->bd", w, fg[idx])
        expanded = torch.nn.functional.normalize(expanded, dim=1)
        yield rows, _distance_from_sim(expanded @ fg.T)


# --- distance form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mix:
    """The DBA'd gallery as sparse combinations: ``g'_j = Σ_m weights[j, m] g_{items[j, m]}``."""

    items: torch.Tensor  # int64 [G, n + 1]: the item, then its n neighbours
    weights: torch.Tensor  # float32 [G, n + 1], normalised so that ‖g'_j‖ = 1

    def apply_t(self, x: torch.Tensor) -> torch.Tensor:
        """``x Aᵀ`` for x [B, G]: column j becomes ``Σ_m A_jm x[:, items[j, m]]``."""
        return _weighted_row_sums(self.items, self.weights, x.T.contiguous()).T


def _sims_from_distances(d: torch.Tensor) -> torch.Tensor:
    """``1 - d²/2`` (a new tensor)."""
    return d.square().mul_(-0.5).add_(1.0)


def _dba_mix_from_distances(gg: torch.Tensor, n: int, alpha: float) -> _Mix | None:
    """The DBA combination weights, from gg alone; None when nothing is augmented (n = 0 or G = 1)."""
    g = gg.shape[0]
    n = min(n, g - 1)
    if n == 0:
        return None
    graph = neighbor_graph(gg, n, check_symmetry=False)  # symmetry was checked (and refused) already
    items = torch.cat([torch.arange(g, device=gg.device)[:, None], graph.indices.to(gg.device)], 1)
    w = torch.cat(
        [torch.ones(g, 1, device=gg.device), _weights(_sims_from_distances(graph.distances.to(gg.device)), alpha)], 1
    )
    norm2 = torch.empty(g, dtype=torch.float32, device=gg.device)
    step = rows_per_chunk(g, 3 * 4 * (n + 1) ** 2, _BLOCK_BYTES)
    for s in range(0, g, step):  # ‖g_j + Σ w g_k‖² = wᵀ S w over the item and its neighbours
        it, ws = items[s : s + step], w[s : s + step]
        sims = _sims_from_distances(gg[it[:, :, None], it[:, None, :]])
        norm2[s : s + step] = torch.einsum("bi,bij,bj->b", ws, sims, ws)
    return _Mix(items, w / norm2.clamp(min=1e-12).sqrt()[:, None])


def _weighted_row_sums(keys: torch.Tensor, coef: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``out[b] = Σ_l coef[b, l] table[keys[b, l]]``: keys int64 [B, L], table [N, G] -> [B, G]."""
    return torch.nn.functional.embedding_bag(keys, table, per_sample_weights=coef, mode="sum")


def _weighted_sim_rows(keys: torch.Tensor, coef: torch.Tensor, gg: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``Σ_l coef[b, l] (1 - gg[keys[b, l], :]²/2)`` for each row b: [B, L] keys -> [B, G].

    Each needed row of gg is copied once into ``scratch`` (>= B·L rows, reused: fresh
    pages for every chunk would cost more than the arithmetic) and squared in place;
    ``Σ c (1 - r²/2) = Σ c - ½ Σ c r²``.
    """
    rows, where = torch.unique(keys, return_inverse=True)
    squares = torch.index_select(gg, 0, rows, out=scratch[: rows.numel()]).square_()
    return _weighted_row_sums(where, coef, squares).mul_(-0.5).add_(coef.sum(1, keepdim=True))


def _qe_from_distances(qg: torch.Tensor, gg: torch.Tensor, mix: _Mix | None, n: int, alpha: float) -> torch.Tensor:
    """αQE over the gallery ``mix`` describes (None: the original gallery), from distances only."""
    q, g = qg.shape
    n = min(n, g)
    width = 1 if mix is None else mix.items.shape[1]
    out = torch.empty(q, g, dtype=torch.float32, device=qg.device)
    step = rows_per_chunk(q, 4 * g * (n * width + 6), _BLOCK_BYTES)
    scratch = torch.empty(step * n * width, g, dtype=torch.float32, device=qg.device)
    for s in range(0, q, step):
        dists = qg[s : s + step]
        sims = _sims_from_distances(dists)  # sim(q, g'_j) = P
        if mix is not None:
            sims = mix.apply_t(sims)
            dists = _distance_from_sim(sims.clone())
        if n == 0:
            out[s : s + step] = dists
            continue
        idx = _nearest(dists, n).to(qg.device)
        s_top = sims.gather(1, idx)
        w = _weights(s_top, alpha)
        if mix is None:
            expansion = _weighted_sim_rows(idx, w, gg, scratch)  # Σ_i w_i sim(g_i, g_j)
        else:
            keys = mix.items[idx].flatten(1)
            coef = (w[:, :, None] * mix.weights[idx]).flatten(1)
            expansion = mix.apply_t(_weighted_sim_rows(keys, coef, gg, scratch))  # Σ_i w_i sim(g'_i, g'_j)
        norm2 = 1.0 + 2.0 * (w * s_top).sum(1) + (w * expansion.gather(1, idx)).sum(1)
        sims.add_(expansion).div_(norm2.clamp(min=1e-12).sqrt()[:, None])
        out[s : s + step] = _distance_from_sim(sims)
    return out
