"""The fit/recommend contract shared by recx's models and baselines."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import scipy.sparse as sp

from recx.data.interactions import Interactions

__all__ = ["Recommender", "check_k", "top_k_from_scores"]


def check_k(k: Any, n_items: int) -> int:
    """Return ``k`` as an int, raising ValueError unless ``1 <= k <= n_items``.

    Every recommender applies this rule, with these messages, so asking for
    more items than the catalogue contains fails the same way for the dense
    baselines, MostPopular and the FAISS-backed two-tower model.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer no larger than the catalogue size ({n_items} items), got {k!r}.")
    if k > n_items:
        raise ValueError(f"k={k} exceeds the catalogue size ({n_items} items). Pass k <= {n_items}; k={n_items} ranks every item.")
    return int(k)


def top_k_from_scores(scores: np.ndarray, k: int, exclude: sp.spmatrix | sp.sparray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Select the ``k`` best items of each row of a dense score matrix.

    Items are ranked by score, higher first, and items with equal scores by
    item index, lower first. The order is total, so the result is fully
    determined by the scores, including which of several items tied at the
    ``k``-th score are returned (the lower indices).

    Parameters
    ----------
    scores : np.ndarray of shape (n_queries, n_items), float
        Higher is better. A writeable C-contiguous float32 array is modified
        in place when ``exclude`` is given; other arrays are copied into one first.
    k : int
        Number of items to return per row, ``1 <= k <= n_items``.
    exclude : scipy sparse matrix of shape (n_queries, n_items) or None
        Stored entries of row ``u`` are items row ``u`` must not return
        (for example the user's training items). Explicit zeros stored in
        it count as excluded.

    Returns
    -------
    indices : np.ndarray of shape (n_queries, k), int64
        Item indices, best first. Where fewer than ``k`` items remain after
        exclusion, the row ends with -1.
    top_scores : np.ndarray of the same shape, float32
        Scores of those items; ``-inf`` where the index is -1.

    Raises
    ------
    ValueError
        If ``k`` is outside ``1 .. n_items``, ``exclude`` has another shape,
        or a row contains NaN (a diverged model, say), which has no rank.

    Notes
    -----
    ``torch.topk`` selects ``k + 1`` candidates per row on torch's intra-op
    threads (``torch.set_num_threads``); unlike ``numpy.argpartition`` it
    runs rows in parallel and needs no negated copy of the scores. The extra
    candidate shows whether items tie at the ``k``-th score across the cut,
    and only such rows are resolved again with numpy.
    """
    import torch

    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D array of shape (n_queries, n_items), got shape {scores.shape}.")
    n_queries, n_items = scores.shape
    k = check_k(k, n_items)
    if scores.dtype != np.float32 or not scores.flags.c_contiguous or not scores.flags.writeable:
        scores = np.array(scores, dtype=np.float32, order="C")
    if exclude is not None:
        _mask_excluded(scores, exclude)
    if n_queries == 0:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)

    # With k + 1 candidates, the (k+1)-th score shows whether the cut at k splits a tie.
    n_candidates = min(k + 1, n_items)
    values, candidates = torch.topk(torch.from_numpy(scores), n_candidates, dim=1, largest=True, sorted=True)
    values, candidates = values.numpy(), candidates.numpy()
    # torch ranks NaN above every number, so a NaN anywhere in a row shows up in its first column.
    nan_rows = np.flatnonzero(np.isnan(values[:, 0]))
    if nan_rows.size:
        raise ValueError(f"scores contain NaN in {nan_rows.size} of {n_queries} rows (first: row {int(nan_rows[0])}); NaN has no rank. Check the model for divergence or NaN inputs.")
    top_values, top_indices = values[:, :k].copy(), candidates[:, :k].copy()
    if n_candidates > k:
        # A tie at -inf involves only excluded (or -inf scored) items, which come back as -1 whichever they are.
        split_tie = (values[:, k] == values[:, k - 1]) & (values[:, k - 1] != -np.inf)
        for row in np.flatnonzero(split_tie):
            _resolve_tie(scores[row], top_values[row], top_indices[row])

    # Within the k selected, equal scores are ordered by item index.
    order = np.lexsort((top_indices, -top_values), axis=1)
    indices = np.take_along_axis(top_indices, order, axis=1).astype(np.int64, copy=False)
    top_scores = np.take_along_axis(top_values, order, axis=1)
    indices[top_scores == -np.inf] = -1
    return indices, top_scores


def _mask_excluded(scores: np.ndarray, exclude: Any) -> None:
    """Write ``-inf`` into ``scores`` (C-contiguous float32) at the stored entries of ``exclude``."""
    if not sp.issparse(exclude):
        raise TypeError(f"exclude must be a scipy sparse matrix of shape {scores.shape} or None, got {type(exclude).__name__}.")
    if exclude.shape != scores.shape:
        raise ValueError(f"exclude has shape {exclude.shape}, expected {scores.shape} (one row per query, one column per item).")
    csr = exclude if exclude.format == "csr" else sp.csr_matrix(exclude)
    # Flat positions row * n_items + column address the entries through one view, without a fancy 2-D index.
    rows = np.repeat(np.arange(scores.shape[0], dtype=np.int64), np.diff(csr.indptr))
    scores.reshape(-1)[rows * scores.shape[1] + csr.indices] = -np.inf


def _resolve_tie(row_scores: np.ndarray, top_values: np.ndarray, top_indices: np.ndarray) -> None:
    """Refill one row's top k where items tie at the ``k``-th score: all better items, then the lowest tied indices.

    ``top_values`` and ``top_indices`` (shape (k,)) are overwritten in place.
    """
    k = len(top_values)
    threshold = top_values[k - 1]
    better = top_values > threshold
    n_better = int(better.sum())
    tied = np.flatnonzero(row_scores == threshold)[: k - n_better]
    top_indices[:n_better] = top_indices[better]
    top_indices[n_better:] = tied
    top_values[:n_better] = top_values[better]
    top_values[n_better:] = threshold


class Recommender(abc.ABC):
    """Base class of everything that ranks the catalogue for a user.

    A recommender is fitted on training :class:`~recx.data.Interactions`
    and then scores every item for given user indices. Ranking, exclusion
    of seen items and translation to external ids are shared here, so every
    model and baseline is evaluated in exactly the same way.

    Subclasses implement :meth:`fit` and :meth:`score_users`; faster
    retrieval (a FAISS index, say) may override :meth:`recommend_indices`,
    keeping its output layout and rejecting ``k`` outside ``1 .. n_items``
    with :func:`check_k`'s messages.
    """

    #: Training interactions seen by :meth:`fit`; their items are excluded by default.
    train: Interactions | None = None

    @abc.abstractmethod
    def fit(self, train: Interactions) -> Recommender:
        """Learn from training interactions and return ``self``."""

    @abc.abstractmethod
    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Score every item for each user.

        Parameters
        ----------
        user_indices : np.ndarray of shape (n,), int64
            User indices in the training id map.

        Returns
        -------
        np.ndarray of shape (n, n_items), float32
            Higher is better.
        """

    def _require_fitted(self) -> Interactions:
        if self.train is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train) first.")
        return self.train

    def recommend_indices(self, user_indices: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the top-``k`` item indices and scores for each user index.

        ``exclude`` is a CSR matrix with one row per entry of ``user_indices``
        (use ``train.matrix[user_indices]`` to exclude training items). See
        :func:`top_k_from_scores` for the output layout, padding and ties.

        Raises
        ------
        ValueError
            If ``k`` is outside ``1 .. n_items`` (see :func:`check_k`).
        """
        train = self._require_fitted()
        k = check_k(k, train.n_items)
        users = np.asarray(user_indices, dtype=np.int64)
        return top_k_from_scores(self.score_users(users), k, exclude)

    def recommend(self, user_id: Any, k: int = 10, *, filter_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Recommend ``k`` items for one user given by external id.

        Returns
        -------
        item_ids : np.ndarray of shape (<= k,)
            External item ids, best first. Shorter than ``k`` only when fewer
            items remain after excluding the user's training items.
        scores : np.ndarray of shape (<= k,), float32

        Raises
        ------
        ValueError
            If ``k`` is outside ``1 .. n_items`` (see :func:`check_k`).
        """
        train = self._require_fitted()
        k = check_k(k, train.n_items)
        user = train.users.to_index([user_id])
        exclude = train.matrix[user] if filter_seen else None
        indices, scores = self.recommend_indices(user, k, exclude=exclude)
        valid = indices[0] >= 0
        return train.items.to_id(indices[0][valid]), scores[0][valid]
