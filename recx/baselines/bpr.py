"""Bayesian personalised ranking (BPR) matrix factorisation through the ``implicit`` package."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from recx.baselines._common import check_non_negative, check_positive_int, check_seed
from recx.baselines._factors import FactorModel
from recx.data.interactions import Interactions

# FactorModel.fit logs through this logger, found by the module name.
logger = logging.getLogger(__name__)

__all__ = ["BPRMF"]


class BPRMF(FactorModel):
    """Matrix factorisation trained with the pairwise BPR loss.

    Rendle, Freudenthaler, Gantner and Schmidt-Thieme ("BPR: Bayesian
    Personalized Ranking from Implicit Feedback", UAI 2009) maximise

    ``sum_{(u, i, j)} ln σ(x_u . y_i - x_u . y_j) - λ (||x_u||^2 + ||y_i||^2 + ||y_j||^2)``

    over triples of a user ``u``, an item ``i`` the user has and an item
    ``j`` drawn uniformly from those the user does not have, by stochastic
    gradient ascent. The fit runs ``implicit.cpu.bpr.BayesianPersonalizedRanking``
    (implicit 0.7.3) on the binarised ``user_items`` CSR matrix. implicit
    adds an item bias as one more factor column (the user side has a
    constant 1 there), so ``x_u . y_i`` below includes it, and it rejects a
    sampled ``j`` that the user has.

    A user's scores are ``x_u . y_i`` over all items.

    Parameters
    ----------
    factors : int, default=64
        Dimension of the factors, bias column excluded.
    learning_rate : float, default=0.01
        SGD step size, > 0.
    regularization : float, default=0.01
        ``λ``, >= 0.
    iterations : int, default=100
        Epochs; one epoch draws as many triples as there are training pairs.
    seed : int, default=0
        Seeds the initial factors and the triple sampler.
    num_threads : int, default=1
        SGD threads. implicit updates the factors from several threads
        without locks, so with more than one thread the result depends on
        thread timing and repeated fits differ. One thread gives the same
        factors for the same seed.
    show_progress : bool, default=False
        Show implicit's progress bar over epochs.

    Attributes
    ----------
    model : implicit.cpu.bpr.BayesianPersonalizedRanking or None
        The fitted implicit model.
    user_factors : np.ndarray of shape (n_users, factors + 1), float32
        The last column is implicit's constant 1.
    item_factors : np.ndarray of shape (n_items, factors + 1), float32
        The last column is the item bias.
    """

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 0,
        *,
        num_threads: int = 1,
        show_progress: bool = False,
    ) -> None:
        self.factors = check_positive_int(factors, "factors")
        self.learning_rate = check_non_negative(learning_rate, "learning_rate", positive=True)
        self.regularization = check_non_negative(regularization, "regularization")
        self.iterations = check_positive_int(iterations, "iterations")
        self.seed = check_seed(seed)
        self.num_threads = check_positive_int(num_threads, "num_threads")
        self.show_progress = bool(show_progress)
        self.train: Interactions | None = None
        self.model: Any = None

    def __repr__(self) -> str:
        return (
            f"BPRMF(factors={self.factors}, learning_rate={self.learning_rate:g}, regularization={self.regularization:g}, "
            f"iterations={self.iterations}, seed={self.seed})"
        )

    def _new_model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            dtype=np.float32,
            num_threads=self.num_threads,
            random_state=self.seed,
        )
