"""EASE: a closed-form linear item-item autoencoder (Steck, WWW 2019)."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recx.baselines._common import binarize, check_non_negative, check_positive_int, check_train, check_user_indices
from recx.data.interactions import Interactions
from recx.recommender import Recommender

logger = logging.getLogger(__name__)

__all__ = ["EASE"]

#: Rows of the item-item matrix symmetrised per step after the in-place inverse.
_SYMMETRISE_BLOCK = 1024


class EASE(Recommender):
    """Embarrassingly shallow autoencoder: one dense item-item weight matrix, solved in closed form.

    With ``X`` the binarised user x item training matrix (every stored,
    non-zero entry counts as 1) and ``λ`` the L2 penalty ``l2``, EASE
    minimises ``||X - X B||_F^2 + λ ||B||_F^2`` subject to ``diag(B) = 0``.
    The solution is

    ``P = (X^T X + λ I)^-1``, ``B = I - P diag(1 / diag(P))``

    that is ``B_ij = -P_ij / P_jj`` off the diagonal and ``B_ii = 0``. A
    user's scores are ``x_u B``. Source: H. Steck, "Embarrassingly Shallow
    Autoencoders for Sparse Data", WWW 2019.

    ``B`` is dense, ``n_items x n_items``, and held in float32 to halve its
    memory: 18,000 items take 1.3 GB, and fitting needs about one more
    copy of that size. The inverse goes through a float32 Cholesky
    factorisation. ``X^T X + λ I`` is symmetric positive definite for any
    ``λ > 0``, and the penalties that suit recommendation data (tens to
    thousands) keep it well conditioned, so float32 loses little accuracy.

    Parameters
    ----------
    l2 : float, default=500.0
        ``λ``, the L2 penalty on ``B``; > 0.
    max_items : int, default=20000
        Catalogue size above which :meth:`fit` raises instead of allocating
        ``4 * n_items^2`` bytes.

    Attributes
    ----------
    weights : np.ndarray of shape (n_items, n_items), float32, or None
        ``B``, with a zero diagonal. None before :meth:`fit`.
    """

    def __init__(self, l2: float = 500.0, *, max_items: int = 20_000) -> None:
        self.l2 = check_non_negative(l2, "l2", positive=True)
        self.max_items = check_positive_int(max_items, "max_items")
        self.train: Interactions | None = None
        self.weights: np.ndarray | None = None
        self._user_items: sp.csr_matrix | None = None

    def __repr__(self) -> str:
        return f"EASE(l2={self.l2:g})"

    def fit(self, train: Interactions) -> EASE:
        """Solve for ``B`` on the binarised training matrix and return ``self``.

        Raises
        ------
        ValueError
            If the catalogue has more than ``max_items`` items.
        """
        train = check_train(train)
        n_items = train.n_items
        if n_items > self.max_items:
            gigabytes = 4 * n_items**2 / 1e9
            raise ValueError(
                f"EASE needs a dense {n_items} x {n_items} float32 matrix ({gigabytes:.1f} GB, about twice that while fitting), "
                f"but max_items is {self.max_items}. Pass EASE(max_items={n_items}) if the memory is there, or use ItemKNN or IALS."
            )
        started = time.perf_counter()
        x = binarize(train.matrix)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)
        self.weights = gram_to_weights(gram, self.l2)
        self._user_items = x
        self.train = train
        logger.debug("fitted EASE (l2=%g) on %d items in %.1f s", self.l2, n_items, time.perf_counter() - started)
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Return ``x_u B`` for each user, shape (n, n_items), float32."""
        train = self._require_fitted()
        users = check_user_indices(user_indices, train.n_users)
        assert self._user_items is not None and self.weights is not None
        return np.asarray(self._user_items[users] @ self.weights, dtype=np.float32)


def gram_to_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """Turn the item Gram matrix ``X^T X`` into EASE's ``B``, overwriting ``gram``.

    Parameters
    ----------
    gram : np.ndarray of shape (n_items, n_items), float32
        ``X^T X``; its memory is reused for the result.
    l2 : float
        ``λ`` > 0.

    Returns
    -------
    np.ndarray of shape (n_items, n_items), float32
        ``B`` with ``B_ij = -P_ij / P_jj`` and a zero diagonal.
    """
    n_items = gram.shape[0]
    gram[np.diag_indices(n_items)] += np.float32(l2)

    # Cholesky factor, then its inverse, both in place: LAPACK spotrf/spotri
    # touch only the upper triangle, so no second n x n array is needed.
    # gram.T is the same symmetric matrix in Fortran order, which LAPACK
    # can overwrite without the copy that a C-ordered array would cost.
    factor, info = scipy.linalg.lapack.spotrf(gram.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"X^T X + {l2:g} I is not positive definite (LAPACK spotrf info={info}). Use a larger l2.")
    inverse, info = scipy.linalg.lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverting X^T X + {l2:g} I failed (LAPACK spotri info={info}). Use a larger l2.")

    # Copy the upper triangle into the lower one, block by block.
    for start in range(0, n_items, _SYMMETRISE_BLOCK):
        end = min(start + _SYMMETRISE_BLOCK, n_items)
        inverse[start:end, :start] = inverse[:start, start:end].T
        block = inverse[start:end, start:end]
        lower = np.tril_indices(end - start, -1)
        block[lower] = block.T[lower]

    # The buffer is in Fortran order. Its transpose is the same symmetric P in
    # C order, which sparse-times-dense products read without a copy.
    inverse = inverse.T
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal[None, :]
    inverse[np.diag_indices(n_items)] = 0.0
    return inverse
