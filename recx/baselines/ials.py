"""Implicit alternating least squares (iALS) through the ``implicit`` package."""

from __future__ import annotations

import logging
import os
from typing import Any, ContextManager

import numpy as np
from threadpoolctl import threadpool_limits

from recx.baselines._common import check_non_negative, check_positive_int, check_seed
from recx.baselines._factors import FactorModel
from recx.data.interactions import Interactions

# FactorModel.fit logs through this logger, found by the module name.
logger = logging.getLogger(__name__)

__all__ = ["IALS", "default_threads"]


def default_threads() -> int:
    """Return the number of CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class IALS(FactorModel):
    """Matrix factorisation for implicit feedback, fitted by alternating least squares.

    Hu, Koren and Volinsky ("Collaborative Filtering for Implicit Feedback
    Datasets", ICDM 2008) minimise over user factors ``x_u`` and item
    factors ``y_i``

    ``sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + λ (sum_u ||x_u||^2 + sum_i ||y_i||^2)``

    where ``p_ui`` is 1 for an observed pair and 0 otherwise. The fit runs
    ``implicit.cpu.als.AlternatingLeastSquares`` (implicit 0.7.3) with its
    conjugate-gradient solver, on the binarised training matrix in
    ``user_items`` CSR orientation. implicit sets the confidence of an
    observed pair to ``c_ui = alpha * r_ui``, which here is ``alpha``
    because ``r_ui = 1``, and of an unobserved pair to 1. The paper uses
    ``1 + alpha * r_ui`` instead, so implicit's ``alpha`` equals the paper's
    ``alpha + 1``. ``λ`` is not scaled by user or item frequency.

    A user's scores are ``x_u . y_i`` over all items.

    Parameters
    ----------
    factors : int, default=64
        Dimension of the user and item factors.
    regularization : float, default=0.01
        ``λ``, >= 0.
    alpha : float, default=1.0
        Confidence of an observed pair, > 0 (implicit's scaling, see above).
    iterations : int, default=15
        ALS sweeps; each solves all users, then all items.
    seed : int, default=0
        Seeds the random initial factors. Each user (and item) solve uses
        only the other side's factors, so the result does not depend on the
        number of threads, and a fixed seed repeats it.
    num_threads : int or None, default=None
        Threads of implicit's solver; None uses every core this process may
        run on. BLAS is limited to one thread during the fit, because
        implicit's own threads already use the cores and a second thread
        pool slows it down.
    show_progress : bool, default=False
        Show implicit's progress bar over iterations.

    Attributes
    ----------
    model : implicit.cpu.als.AlternatingLeastSquares or None
        The fitted implicit model, for calls into implicit itself.
    user_factors : np.ndarray of shape (n_users, factors), float32
    item_factors : np.ndarray of shape (n_items, factors), float32
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        *,
        num_threads: int | None = None,
        show_progress: bool = False,
    ) -> None:
        self.factors = check_positive_int(factors, "factors")
        self.regularization = check_non_negative(regularization, "regularization")
        self.alpha = check_non_negative(alpha, "alpha", positive=True)
        self.iterations = check_positive_int(iterations, "iterations")
        self.seed = check_seed(seed)
        self.num_threads = default_threads() if num_threads is None else check_positive_int(num_threads, "num_threads")
        self.show_progress = bool(show_progress)
        self.train: Interactions | None = None
        self.model: Any = None

    def __repr__(self) -> str:
        return f"IALS(factors={self.factors}, regularization={self.regularization:g}, alpha={self.alpha:g}, iterations={self.iterations}, seed={self.seed})"

    def _new_model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            dtype=np.float32,
            num_threads=self.num_threads,
            random_state=self.seed,
        )

    def _fit_context(self) -> ContextManager[Any]:
        # implicit checks the BLAS thread count in the constructor and warns
        # unless it is 1, so the limit covers construction and fit.
        return threadpool_limits(1, "blas")
