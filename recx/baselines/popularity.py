"""The most-popular baseline: one ranking by interaction count, shared by all users."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from recx.baselines._common import check_user_indices
from recx.data.interactions import Interactions
from recx.evaluation.metrics import isin_rows
from recx.recommender import Recommender, check_k

logger = logging.getLogger(__name__)

__all__ = ["MostPopular"]


class MostPopular(Recommender):
    """Recommend the items that the most training users interacted with.

    Every user gets the same ranking, minus the items they have seen. It is
    the floor that a personalised model has to beat under the same
    evaluation protocol.

    An item's score is the number of distinct training users who
    interacted with it (interaction weights are ignored). Items with equal
    counts are ranked by item index ascending, so results are reproducible
    and, for ids loaded with :meth:`~recx.data.Interactions.from_dataframe`,
    follow ascending external id.

    Attributes
    ----------
    item_counts : np.ndarray of shape (n_items,), int64, or None
        Users per item in the training data; None before :meth:`fit`.
    ranking : np.ndarray of shape (n_items,), int64, or None
        All item indices, most popular first.

    Examples
    --------
    >>> model = MostPopular().fit(train)  # doctest: +SKIP
    >>> item_ids, scores = model.recommend(user_id, k=10)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.train: Interactions | None = None
        self.item_counts: np.ndarray | None = None
        self.ranking: np.ndarray | None = None

    def __repr__(self) -> str:
        fitted = "unfitted" if self.item_counts is None else f"n_items={len(self.item_counts)}"
        return f"MostPopular({fitted})"

    def fit(self, train: Interactions) -> MostPopular:
        """Count the users of each item and rank the items once."""
        if not isinstance(train, Interactions):
            raise TypeError(f"train must be an Interactions, got {type(train).__name__}.")
        counts = train.item_counts()
        # np.lexsort sorts by its last key first: count descending, then index ascending.
        self.ranking = np.lexsort((np.arange(len(counts)), -counts)).astype(np.int64)
        self.item_counts = counts
        self.train = train
        logger.debug("fitted MostPopular on %d items; the top item has %d users", len(counts), int(counts.max(initial=0)))
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Return the item counts for each user, shape (n, n_items), float32.

        This materialises a dense matrix; :meth:`recommend_indices` does not
        call it.
        """
        users = self._check_users(user_indices)
        _, counts = self._fitted_arrays()
        return np.tile(counts.astype(np.float32), (len(users), 1))

    def recommend_indices(self, user_indices: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rank the most popular items for each user, skipping that user's excluded items.

        Walks the shared ranking instead of scoring the whole catalogue per
        user. The output layout matches
        :func:`~recx.recommender.top_k_from_scores`.

        Parameters
        ----------
        user_indices : np.ndarray of shape (n,), integer
        k : int
            Number of items per user, ``1 <= k <= n_items``.
        exclude : scipy.sparse matrix of shape (n, n_items) or None
            Stored entries of row ``u`` are items user ``u`` must not get.

        Returns
        -------
        indices : np.ndarray of shape (n, k), int64
            Item indices, best first; -1 pads a row only when fewer than
            ``k`` items remain after exclusion.
        scores : np.ndarray of the same shape, float32
            Item counts; ``-inf`` where the index is -1.

        Raises
        ------
        ValueError
            If ``k`` is outside ``1 .. n_items`` (see :func:`~recx.recommender.check_k`).
        """
        users = self._check_users(user_indices)
        ranking, counts = self._fitted_arrays()
        n_users, n_items = len(users), len(ranking)
        k_returned = check_k(k, n_items)
        blocked = None if exclude is None else _check_exclude(exclude, n_users, n_items)

        # A user can lose at most their excluded count from the head of the ranking,
        # so k plus the largest count in the batch always leaves k candidates where k remain.
        extra = 0 if blocked is None else int(np.diff(blocked.indptr).max(initial=0))
        n_candidates = min(n_items, k_returned + extra)
        candidates = np.broadcast_to(ranking[:n_candidates], (n_users, n_candidates))
        allowed = np.ones(candidates.shape, dtype=bool) if blocked is None else ~isin_rows(candidates, blocked)

        # A stable sort on "not allowed" moves allowed items first and keeps their popularity order.
        order = np.argsort(~allowed, axis=1, kind="stable")[:, :k_returned]
        indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        empty = ~np.take_along_axis(allowed, order, axis=1)
        scores = counts[indices].astype(np.float32)
        indices[empty] = -1
        scores[empty] = -np.inf
        return indices, scores

    def _fitted_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ranking, item_counts)``, raising if :meth:`fit` has not run."""
        self._require_fitted()
        if self.ranking is None or self.item_counts is None:
            raise RuntimeError("MostPopular is not fitted: call fit(train) first.")
        return self.ranking, self.item_counts

    def _check_users(self, user_indices: Any) -> np.ndarray:
        return check_user_indices(user_indices, self._require_fitted().n_users)


def _check_exclude(exclude: Any, n_users: int, n_items: int) -> sp.csr_matrix:
    if not sp.issparse(exclude):
        raise TypeError(f"exclude must be a scipy sparse matrix of shape ({n_users}, {n_items}) or None, got {type(exclude).__name__}.")
    if exclude.shape != (n_users, n_items):
        raise ValueError(f"exclude has shape {exclude.shape}, expected ({n_users}, {n_items}): one row per user, one column per item.")
    return sp.csr_matrix(exclude)
