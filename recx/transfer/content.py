"""A content baseline: rank items by the similarity of their text to the user's history."""

from __future__ import annotations

import numpy as np

from recx.data.interactions import Interactions
from recx.recommender import Recommender


class TextSimilarity(Recommender):
    """Score each item by the cosine between its text vector and the mean text vector of the user's history.

    It needs no training interactions beyond the history, so it also ranks
    items without any interaction. A model that uses text must beat it on
    such cold items.

    Parameters
    ----------
    item_vectors : np.ndarray of shape (n_items, T), float32
        One text vector per item index (for example from
        :func:`~recx.transfer.encode_items`); zero rows score 0.
    """

    def __init__(self, item_vectors: np.ndarray) -> None:
        vectors = np.asarray(item_vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"item_vectors must be 2-D (n_items, dim), got shape {vectors.shape}.")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.item_vectors = vectors / np.maximum(norms, 1e-12)
        self.train: Interactions | None = None

    def fit(self, train: Interactions, validation: Interactions | None = None) -> TextSimilarity:
        """Store the history; ``validation`` is not used. Returns ``self``."""
        if train.n_items != len(self.item_vectors):
            raise ValueError(f"the interactions have {train.n_items} items but {len(self.item_vectors)} item vectors were given; pass one vector per item index.")
        self.train = train
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Return (n, n_items) float32 cosine scores."""
        train = self._require_fitted()
        history = train.matrix[np.asarray(user_indices, dtype=np.int64)]
        history.data = np.ones_like(history.data, dtype=np.float32)
        profiles = np.asarray(history @ self.item_vectors, dtype=np.float32)
        profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
        return profiles @ self.item_vectors.T
