"""The shared part of the matrix factorisation baselines fitted through the ``implicit`` package."""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from typing import Any, ContextManager, Self

import numpy as np

from recx.baselines._common import binarize, check_train, check_user_indices
from recx.data.interactions import Interactions
from recx.recommender import Recommender

__all__ = ["FactorModel"]


class FactorModel(Recommender):
    """A recommender whose scores are inner products of user and item factors learnt by implicit.

    Subclasses set their hyperparameters in ``__init__`` (with
    ``show_progress``), build the unfitted implicit model in
    :meth:`_new_model` and, where the fit needs it, a context in
    :meth:`_fit_context` (IALS limits BLAS threads there). Fitting on the
    binarised ``user_items`` CSR matrix and scoring are shared.

    A user's scores are ``x_u . y_i`` over all items, with ``x_u`` a row of
    :attr:`user_factors` and ``y_i`` a row of :attr:`item_factors`.

    Attributes
    ----------
    model : implicit model or None
        The fitted implicit model, for calls into implicit itself.
    """

    show_progress: bool = False
    model: Any = None

    @abc.abstractmethod
    def _new_model(self) -> Any:
        """Return an unfitted implicit model built from this object's hyperparameters."""

    def _fit_context(self) -> ContextManager[Any]:
        """Return the context that construction and fitting of the implicit model run in."""
        return contextlib.nullcontext()

    @property
    def user_factors(self) -> np.ndarray:
        """implicit's user factors, shape (n_users, n_columns), float32."""
        self._require_fitted()
        return self.model.user_factors

    @property
    def item_factors(self) -> np.ndarray:
        """implicit's item factors, shape (n_items, n_columns), float32."""
        self._require_fitted()
        return self.model.item_factors

    def fit(self, train: Interactions) -> Self:
        """Fit the factors on the binarised training matrix and return ``self``."""
        train = check_train(train)
        started = time.perf_counter()
        with self._fit_context():
            model = self._new_model()
            model.fit(binarize(train.matrix), show_progress=self.show_progress)
        self.model = model
        self.train = train
        # The subclass's module logger, so messages keep the logger name of the model's module.
        logging.getLogger(type(self).__module__).debug(
            "fitted %r on %d users x %d items in %.1f s", self, train.n_users, train.n_items, time.perf_counter() - started
        )
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        """Return ``user_factors[users] @ item_factors.T``, shape (n, n_items), float32."""
        train = self._require_fitted()
        users = check_user_indices(user_indices, train.n_users)
        return np.asarray(self.model.user_factors[users] @ self.model.item_factors.T, dtype=np.float32)
