"""Item-based k-nearest-neighbour baseline with cosine similarity."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recx.baselines._common import binarize, check_non_negative, check_positive_int, check_train, check_user_indices
from recx.data.interactions import Interactions
from recx.recommender import Recommender

logger = logging.getLogger(__name__)

__all__ = ["ItemKNN"]

#: Items whose similarity rows are computed at once; bounds the memory of the co-occurrence block.
SIMILARITY_BLOCK = 2048


class ItemKNN(Recommender):
    """Score items by their cosine similarity to the items a user already has.

    With ``X`` the binarised user x item training matrix (every stored,
    non-zero entry counts as 1) and ``c_i`` the number of users of item
    ``i``, the similarity of items ``i`` and ``j`` is the shrunk cosine

    ``s(i, j) = (X^T X)_ij / (sqrt(c_i) * sqrt(c_j) + shrink)``

    and ``s(i, i) = 0``. For each item only its ``k_neighbors`` most
    similar items are kept (ties broken by lower item index), giving a
    sparse matrix ``W`` whose column ``i`` contains the neighbours of item
    ``i``. A user's scores are ``x_u W``: the summed similarity of each
    item to the user's items among its neighbours. This is the item-based
    top-N scheme of Deshpande and Karypis ("Item-Based Top-N Recommendation
    Algorithms", ACM TOIS 2004); the shrink term follows the neighbourhood
    models of Koren ("Factorization Meets the Neighborhood", KDD 2008).

    Parameters
    ----------
    k_neighbors : int, default=100
        Neighbours kept per item.
    shrink : float, default=0.0
        Added to the cosine denominator; it lowers similarities that rest on
        few co-occurrences.
    show_progress : bool, default=False
        Show a progress bar over blocks of items while fitting.

    Attributes
    ----------
    similarity : scipy.sparse.csr_matrix of shape (n_items, n_items), float32, or None
        ``W``: column ``i`` contains the kept neighbours of item ``i``. None before :meth:`fit`.
    """

    def __init__(self, k_neighbors: int = 100, shrink: float = 0.0, *, show_progress: bool = False) -> None:
        self.k_neighbors = check_positive_int(k_neighbors, "k_neighbors")
        self.shrink = check_non_negative(shrink, "shrink")
        self.show_progress = bool(show_progress)
        self.train: Interactions | None = None
        self.similarity: sp.csr_matrix | None = None
        self._user_items: sp.csr_matrix | None = None

    def __repr__(self) -> str:
        return f"ItemKNN(k_neighbors={self.k_neighbors}, shrink={self.shrink:g})"

    def fit(self, train: Interactions) -> ItemKNN:
        """Compute the pruned cosine similarity matrix of the training items and return ``self``."""
        train = check_train(train)
        x = binarize(train.matrix)
        item_users = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
        n_items = train.n_items

        # Row block [start, end) of X^T X, pruned to k entries per row before the next
        # block, so memory stays at one block of co-occurrences however large the catalogue.
        blocks = []
        starts = range(0, n_items, SIMILARITY_BLOCK)
        for start in tqdm(starts, desc="ItemKNN", unit="block", disable=not self.show_progress):
            end = min(start + SIMILARITY_BLOCK, n_items)
            blocks.append(self._similarity_rows(item_users[start:end], x, norms, start))
        neighbours = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_items), dtype=np.float32)

        # Row i of `neighbours` lists item i's neighbours; W wants them in column i.
        self.similarity = neighbours.T.tocsr().astype(np.float32)
        self._user_items = x
        self.train = train
        logger.debug("fitted ItemKNN on %d items: %d similarities kept", n_items, self.similarity.nnz)
        return self

    def _similarity_rows(self, block_users: sp.csr_matrix, x: sp.csr_matrix, norms: np.ndarray, start: int) -> sp.csr_matrix:
        """Return the top-``k_neighbors`` cosine similarities of items ``start .. start + len(block) - 1``."""
        co_counts = (block_users @ x).tocoo()
        rows, columns, counts = co_counts.row, co_counts.col, co_counts.data.astype(np.float32)
        keep = (rows + start) != columns
        rows, columns, counts = rows[keep], columns[keep], counts[keep]
        values = counts / (norms[rows + start] * norms[columns] + np.float32(self.shrink))

        # Sort each row by similarity descending, then item index ascending, and keep the first k.
        order = np.lexsort((columns, -values, rows))
        rows, columns, values = rows[order], columns[order], values[order]
        row_starts = np.searchsorted(rows, np.arange(block_users.shape[0]))
        rank = np.arange(len(rows)) - row_starts[rows]
        kept = (rank < self.k_neighbors) & (values > 0)
        return sp.csr_matrix((values[kept], (rows[kept], columns[kept])), shape=(block_users.shape[0], x.shape[1]), dtype=np.float32)

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Return ``x_u W`` for each user, shape (n, n_items), float32."""
        train = self._require_fitted()
        users = check_user_indices(user_indices, train.n_users)
        assert self._user_items is not None and self.similarity is not None
        return np.asarray((self._user_items[users] @ self.similarity).toarray(), dtype=np.float32)
