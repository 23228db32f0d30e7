"""Top-k ranking metrics over a batch of users, computed with vectorised numpy.

Every metric takes the same three arguments:

``ranked`` : np.ndarray of shape (n_users, k_max), integer
    Recommended item indices, best first. -1 marks "no item" at that
    position (a list shorter than ``k_max``). An item may appear at most
    once per row, and a repeat raises ValueError.
``relevant`` : scipy.sparse matrix of shape (n_users, n_items)
    Held-out items of each user: entry ``(u, i)`` is relevant when it is
    stored and non-zero. Explicit zeros are not relevant.
``k`` : int
    Cut-off, >= 1. Only the first ``k`` positions count. When ``k`` exceeds
    ``k_max``, the missing positions count as positions without a hit.

Notation used in the formulas: ``R_u`` is the relevant set of user ``u``,
``hit_u(j)`` is 1 when the item at position ``j`` (1-based) is in ``R_u``
and 0 otherwise (also 0 for -1), and ``H_u = sum_{j=1..k} hit_u(j)``.

Per-user metrics return np.ndarray of shape (n_users,), float64, with NaN
for users whose ``R_u`` is empty: their recall and NDCG are undefined, and
they are excluded from every average (see :func:`average_over_users`) so
that a test split with empty users cannot dilute the scores with zeros.
:func:`coverage_at_k` describes the recommendations rather than their
accuracy and returns one float over all rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "CATALOGUE_METRICS",
    "METRICS",
    "PER_USER_METRICS",
    "average_over_users",
    "coverage_at_k",
    "hit_rate_at_k",
    "isin_rows",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "per_user_metrics",
    "precision_at_k",
    "recall_at_k",
    "recommended_item_mask",
]


# ------------------------------------------------------------------ helpers


def isin_rows(indices: np.ndarray, matrix: sp.spmatrix | sp.sparray) -> np.ndarray:
    """Test whether each entry of ``indices`` is a stored column of the same row of ``matrix``.

    Parameters
    ----------
    indices : np.ndarray of shape (n_rows, m), integer
        Column indices per row; negative entries never match.
    matrix : scipy.sparse matrix of shape (n_rows, n_columns)
        Its stored entries, explicit zeros included, form the sets to test.

    Returns
    -------
    np.ndarray of shape (n_rows, m), bool
        ``True`` where ``indices[u, j]`` is stored in row ``u`` of ``matrix``.
    """
    csr = sp.csr_matrix(matrix)
    n_rows, n_columns = csr.shape
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 2 or indices.shape[0] != n_rows:
        raise ValueError(f"indices must have shape ({n_rows}, m), one row per matrix row, got {indices.shape}.")
    if csr.nnz == 0 or indices.size == 0:
        return np.zeros(indices.shape, dtype=bool)

    # Each stored entry (u, i) becomes the key u * n_columns + i, so one
    # searchsorted over the sorted keys tests all rows at once.
    entry_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
    keys = np.sort(entry_rows * n_columns + csr.indices.astype(np.int64))
    queries = np.arange(n_rows, dtype=np.int64)[:, None] * n_columns + indices
    positions = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return (keys[positions] == queries) & (indices >= 0) & (indices < n_columns)


def recommended_item_mask(ranked: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """Mark the items that appear in the first ``k`` positions of any row of ``ranked``.

    Returns
    -------
    np.ndarray of shape (n_items,), bool
        Evaluation over several batches combines the masks with ``|``.
    """
    ranked = _check_ranked(ranked, n_items)
    k = _check_k(k)
    top = ranked[:, :k]
    mask = np.zeros(n_items, dtype=bool)
    mask[top[top >= 0]] = True
    return mask


def average_over_users(values: np.ndarray) -> float:
    """Average per-user metric values, skipping users without relevant items (NaN).

    Raises
    ------
    ValueError
        If no user has a relevant item, so the average is undefined.
    """
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    if not defined.any():
        raise ValueError(f"no user has a relevant item ({values.size} values, all NaN), so the metric average is undefined. Evaluate users with at least one test item.")
    return float(values[defined].mean())


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def _check_ranked(ranked: Any, n_items: int) -> np.ndarray:
    """Return ``ranked`` as int64 after checking its shape, range and that no row repeats an item."""
    array = np.asarray(ranked)
    if array.ndim != 2:
        raise ValueError(f"ranked must be a 2-D array of shape (n_users, k_max), got shape {array.shape}. For one user, pass ranked[None, :].")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"ranked must contain integer item indices, got dtype {array.dtype}.")
    array = array.astype(np.int64, copy=False)
    if array.size == 0:
        return array
    low, high = int(array.min()), int(array.max())
    if low < -1 or high >= n_items:
        bad = low if low < -1 else high
        raise ValueError(f"ranked contains item index {bad}, outside 0 .. {n_items - 1}; use -1 only to mark an empty position.")

    # A repeated item would be counted as two hits and push recall above 1.
    ordered = np.sort(array, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        item = int(ordered[row, 1:][repeated[row]][0])
        raise ValueError(f"ranked row {row} contains item {item} more than once. Each recommended list must contain distinct items.")
    return array


def _relevance_pattern(relevant: Any) -> sp.csr_matrix:
    """Return the non-zero pattern of ``relevant`` as an int8 CSR matrix, explicit zeros dropped."""
    if not sp.issparse(relevant):
        raise TypeError(f"relevant must be a scipy sparse matrix of shape (n_users, n_items), got {type(relevant).__name__}.")
    pattern = sp.csr_matrix(relevant, copy=True)
    pattern.data = (pattern.data != 0).astype(np.int8)
    pattern.eliminate_zeros()
    return pattern


def _hits(ranked: Any, relevant: Any, k: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate the inputs and return the hit matrix, the relevant counts and ``k``.

    Returns
    -------
    hits : np.ndarray of shape (n_users, min(k, k_max)), bool
        ``hit_u(j)`` for the first ``k`` positions present in ``ranked``.
    n_relevant : np.ndarray of shape (n_users,), int64
        ``|R_u|``, counting non-zero entries only.
    k : int
    """
    k = _check_k(k)
    pattern = _relevance_pattern(relevant)
    ranked = _check_ranked(ranked, pattern.shape[1])
    if ranked.shape[0] != pattern.shape[0]:
        raise ValueError(f"ranked has {ranked.shape[0]} rows but relevant has {pattern.shape[0]}; both need one row per user, in the same order.")
    hits = isin_rows(ranked[:, :k], pattern)
    n_relevant = np.diff(pattern.indptr).astype(np.int64)
    return hits, n_relevant, k


def _undefined_where_empty(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    values[n_relevant == 0] = np.nan
    return values


def _discounts(n: int) -> np.ndarray:
    """Return ``1 / log2(j + 1)`` for positions ``j = 1 .. n``, shape (n,), float64."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


# ------------------------------------------------------------------ per-user metrics


def recall_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute the share of each user's relevant items found in the top ``k``.

    ``recall@k(u) = H_u / |R_u|``

    The denominator is ``|R_u|``, not ``min(k, |R_u|)``: a user with more
    relevant items than ``k`` cannot reach 1. Papers differ on this, so
    compare numbers only under the same convention.

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        In [0, 1]; NaN where ``|R_u| = 0``.
    """
    return _recall_from_hits(*_hits(ranked, relevant, k))


def _recall_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        values = hits.sum(axis=1) / n_relevant
    return _undefined_where_empty(values, n_relevant)


def precision_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute the share of the ``k`` positions that contain a relevant item.

    ``precision@k(u) = H_u / k``

    The denominator is ``k`` even when a row contains fewer than ``k`` items
    (-1 padding or ``k > k_max``): an empty position counts as a miss.

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        In [0, 1]; NaN where ``|R_u| = 0``.
    """
    return _precision_from_hits(*_hits(ranked, relevant, k))


def _precision_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _undefined_where_empty(hits.sum(axis=1) / k, n_relevant)


def hit_rate_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute whether the top ``k`` contains at least one relevant item.

    ``hit_rate@k(u) = 1 if H_u > 0 else 0``

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        0 or 1; NaN where ``|R_u| = 0``.
    """
    return _hit_rate_from_hits(*_hits(ranked, relevant, k))


def _hit_rate_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _undefined_where_empty(hits.any(axis=1), n_relevant)


def ndcg_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute normalised discounted cumulative gain with binary gains.

    ``DCG@k(u)  = sum_{j=1..k} hit_u(j) / log2(j + 1)``

    ``IDCG@k(u) = sum_{j=1..min(k, |R_u|)} 1 / log2(j + 1)``

    ``NDCG@k(u) = DCG@k(u) / IDCG@k(u)``

    IDCG is the DCG of a list that puts ``min(k, |R_u|)`` relevant items
    first, so a perfect list scores 1 whatever the size of ``R_u``.

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        In [0, 1]; NaN where ``|R_u| = 0``.
    """
    return _ndcg_from_hits(*_hits(ranked, relevant, k))


def _ndcg_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    dcg = hits @ _discounts(hits.shape[1])

    # ideal[m] is the IDCG of a user with min(k, |R_u|) = m; |R_u| <= n_items bounds m.
    n_ideal = np.minimum(n_relevant, k)
    ideal = np.concatenate(([0.0], np.cumsum(_discounts(int(n_ideal.max(initial=0))))))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = dcg / ideal[n_ideal]
    return _undefined_where_empty(values, n_relevant)


def map_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute average precision over the hit positions of the top ``k``.

    ``AP@k(u) = (1 / min(k, |R_u|)) * sum_{j=1..k} hit_u(j) * precision@j(u)``

    where ``precision@j(u)`` is the number of hits in the first ``j``
    positions divided by ``j``. The mean over users is MAP@k. Dividing by
    ``min(k, |R_u|)`` lets a perfect list score 1.

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        In [0, 1]; NaN where ``|R_u| = 0``.
    """
    return _map_from_hits(*_hits(ranked, relevant, k))


def _map_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    positions = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    precision_at_position = np.cumsum(hits, axis=1) / positions
    summed = (precision_at_position * hits).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = summed / np.minimum(n_relevant, k)
    return _undefined_where_empty(values, n_relevant)


def mrr_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> np.ndarray:
    """Compute the reciprocal rank of the first relevant item in the top ``k``.

    ``RR@k(u) = 1 / min{j <= k : hit_u(j) = 1}``, or 0 without a hit.

    The mean over users is MRR@k.

    Returns
    -------
    np.ndarray of shape (n_users,), float64
        In [0, 1]; NaN where ``|R_u| = 0``.
    """
    return _mrr_from_hits(*_hits(ranked, relevant, k))


def _mrr_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    values = np.zeros(hits.shape[0], dtype=np.float64)
    has_hit = hits.any(axis=1)
    # argmax returns the first True position, 0-based.
    values[has_hit] = 1.0 / (np.argmax(hits[has_hit], axis=1) + 1)
    return _undefined_where_empty(values, n_relevant)


# ------------------------------------------------------------------ several metrics at once


def per_user_metrics(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, names: Sequence[str], cutoffs: Sequence[int]) -> dict[tuple[str, int], np.ndarray]:
    """Compute several per-user metrics at several cut-offs from one hit matrix.

    The values equal those of the single-metric functions (``METRICS[name](ranked,
    relevant, k)``), but the inputs are checked and the hits found once for
    the largest cut-off, instead of once per metric and cut-off. This is
    what :func:`~recx.evaluation.evaluate` calls for every batch of users.

    Parameters
    ----------
    ranked : np.ndarray of shape (n_users, k_max), integer
    relevant : scipy.sparse matrix of shape (n_users, n_items)
    names : sequence of str
        Names from :data:`PER_USER_METRICS`.
    cutoffs : sequence of int
        Cut-offs, each >= 1.

    Returns
    -------
    dict of (str, int) to np.ndarray of shape (n_users,), float64
        One entry per ``(name, cutoff)``, in the order of ``names`` then
        ``cutoffs``; NaN where ``|R_u| = 0``.
    """
    unknown = [name for name in names if name not in _FROM_HITS]
    if unknown:
        raise ValueError(f"unknown per-user metric(s) {unknown}: expected names from {list(PER_USER_METRICS)}.")
    ks = [_check_k(cutoff) for cutoff in cutoffs]
    if not ks:
        raise ValueError("cutoffs is empty: pass at least one cut-off, for example (10, 20).")
    hits, n_relevant, _ = _hits(ranked, relevant, max(ks))
    return {(name, k): _FROM_HITS[name](hits[:, :k], n_relevant, k) for name in names for k in ks}


# ------------------------------------------------------------------ catalogue metrics


def coverage_at_k(ranked: np.ndarray, relevant: sp.spmatrix | sp.sparray, k: int) -> float:
    """Compute the share of the catalogue recommended to at least one user.

    ``coverage@k = |union over rows u of the first k items of u| / n_items``

    Unlike the per-user metrics, every row of ``ranked`` counts, including
    users without relevant items, because coverage describes the
    recommendations and not their accuracy. ``relevant`` supplies only
    ``n_items`` (its number of columns), which keeps the signature uniform.

    Returns
    -------
    float
        In [0, 1].
    """
    if not sp.issparse(relevant):
        raise TypeError(f"relevant must be a scipy sparse matrix of shape (n_users, n_items), got {type(relevant).__name__}.")
    n_items = relevant.shape[1]
    if n_items == 0:
        raise ValueError("coverage is undefined for an empty catalogue: relevant has 0 columns.")
    return float(recommended_item_mask(ranked, n_items, k).mean())


#: Metric functions by report name; reports label them as ``"<name>@<k>"``.
METRICS: dict[str, Callable[..., Any]] = {
    "recall": recall_at_k,
    "precision": precision_at_k,
    "ndcg": ndcg_at_k,
    "map": map_at_k,
    "mrr": mrr_at_k,
    "hit_rate": hit_rate_at_k,
    "coverage": coverage_at_k,
}

#: The per-user metrics as functions of ``(hits, n_relevant, k)``, for :func:`per_user_metrics`.
_FROM_HITS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "recall": _recall_from_hits,
    "precision": _precision_from_hits,
    "ndcg": _ndcg_from_hits,
    "map": _map_from_hits,
    "mrr": _mrr_from_hits,
    "hit_rate": _hit_rate_from_hits,
}

#: Metrics that return one value per user, averaged with :func:`average_over_users`.
PER_USER_METRICS: tuple[str, ...] = ("recall", "precision", "ndcg", "map", "mrr", "hit_rate")

#: Metrics computed over all users at once, which a batch average would get wrong.
CATALOGUE_METRICS: tuple[str, ...] = ("coverage",)
