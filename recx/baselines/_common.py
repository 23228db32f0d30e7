"""Input checks and matrix helpers shared by the baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recx.data.interactions import Interactions


def check_train(train: Any) -> Interactions:
    """Return ``train`` after checking that it is an Interactions with at least one entry."""
    if not isinstance(train, Interactions):
        raise TypeError(f"train must be an Interactions, got {type(train).__name__}.")
    if train.nnz == 0:
        raise ValueError(f"train has no interactions ({train.n_users} users x {train.n_items} items). Fit on a non-empty training split.")
    return train


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Return the stored non-zero pattern of ``matrix`` as a float32 CSR matrix of ones, same shape."""
    pattern = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    pattern.data = (pattern.data != 0).astype(np.float32)
    pattern.eliminate_zeros()
    return pattern


def check_user_indices(user_indices: Any, n_users: int) -> np.ndarray:
    """Return ``user_indices`` as int64 after checking that it is 1-D and within ``0 .. n_users - 1``."""
    users = np.asarray(user_indices)
    if users.ndim != 1 or (users.size and users.dtype.kind not in "iu"):
        raise ValueError(f"user_indices must be a 1-D array of integers, got shape {users.shape} and dtype {users.dtype}.")
    users = users.astype(np.int64, copy=False)
    if users.size and (users.min() < 0 or users.max() >= n_users):
        bad = users[(users < 0) | (users >= n_users)][:3].tolist()
        raise IndexError(f"user indices {bad} are out of range for {n_users} training users. Map external ids with train.users.to_index(ids).")
    return users


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as int, raising ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_non_negative(value: Any, name: str, *, positive: bool = False) -> float:
    """Return ``value`` as float, raising ValueError unless it is a finite number >= 0 (> 0 with ``positive``)."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def check_seed(value: Any) -> int:
    """Return ``value`` as int, raising ValueError unless it is a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}.")
    return int(value)
