"""The fit/recommend contract shared by recx's models and baselines."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import scipy.sparse as sp

from recx.data.interactions import Interactions


def top_k_from_scores(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Select the ``k`` best items of each row of a dense score matrix.

    Parameters
    ----------
    scores : np.ndarray of shape (n_queries, n_items), float
        Higher is better. The array is modified in place when ``exclude`` is given.
    k : int
        Number of items to return per row, >= 1.
    exclude : scipy.sparse.csr_matrix of shape (n_queries, n_items) or None
        Non-zero pattern of items each row must not return (for example the
        user's training items). Explicit zeros stored in it count as excluded.

    Returns
    -------
    indices : np.ndarray of shape (n_queries, min(k, n_items)), int64
        Item indices, best first. Where fewer than ``k`` items remain after
        exclusion, the row ends with -1.
    top_scores : np.ndarray of the same shape, float32
        Scores of those items; ``-inf`` where the index is -1.
    """
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}.")
    n_queries, n_items = scores.shape
    k_eff = min(k, n_items)
    scores = scores.astype(np.float32, copy=False)
    if exclude is not None:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, expected {scores.shape} (one row per query, one column per item).")
        rows = np.repeat(np.arange(n_queries), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf

    # argpartition finds the k best in O(n_items); only those k are then sorted.
    if k_eff < n_items:
        candidates = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        candidates = np.tile(np.arange(n_items), (n_queries, 1))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # Within the returned k, equal scores are ordered by item index. Which of
    # several items tied at the k-th score get in is left to argpartition
    # (deterministic for the same input, but not always the lowest index).
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(candidate_scores, order, axis=1)
    indices[~np.isfinite(top_scores) & (top_scores < 0)] = -1
    return indices, top_scores


class Recommender(abc.ABC):
    """Base class of everything that ranks the catalogue for a user.

    A recommender is fitted on training :class:`~recx.data.Interactions`
    and then scores every item for given user indices. Ranking, exclusion
    of seen items and translation to external ids are shared here, so every
    model and baseline is evaluated in exactly the same way.

    Subclasses implement :meth:`fit` and :meth:`score_users`; faster
    retrieval (a FAISS index, say) may override :meth:`recommend_indices`.
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
        :func:`top_k_from_scores` for the output layout and padding.
        """
        self._require_fitted()
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
        """
        train = self._require_fitted()
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        user = train.users.to_index([user_id])
        exclude = train.matrix[user] if filter_seen else None
        indices, scores = self.recommend_indices(user, int(k), exclude=exclude)
        valid = indices[0] >= 0
        return train.items.to_id(indices[0][valid]), scores[0][valid]
