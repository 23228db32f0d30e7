"""Argument checks shared by index construction and search, with errors that name the value and the fix."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INDEX_METRICS", "check_embeddings", "check_k", "check_metric", "check_queries", "normalise"]

#: Similarity measures. "inner_product" scores ``q . e``; "cosine" scores
#: ``q . e / (|q| |e|)``; "l2" scores ``-|q - e|^2``, the negated squared
#: Euclidean distance, so that a higher score is better for every metric.
INDEX_METRICS: tuple[str, ...] = ("inner_product", "cosine", "l2")


def check_metric(metric: Any) -> None:
    if metric not in INDEX_METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {list(INDEX_METRICS)}.")


def check_k(k: Any, n_items: int) -> int:
    """Return ``k`` as an int, raising unless ``1 <= k <= n_items``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer no larger than the catalogue size ({n_items} items), got {k!r}.")
    if k > n_items:
        raise ValueError(f"k={k} exceeds the catalogue size ({n_items} items). Pass k <= {n_items}; k={n_items} ranks every item.")
    return int(k)


def check_embeddings(embeddings: Any) -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 array of shape (n_items, d)."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array of shape (n_items, d), got shape {array.shape}.")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"embeddings must be numeric, got dtype {array.dtype}.")
    if array.shape[0] == 0:
        raise ValueError("cannot build an index over an empty catalogue: embeddings has 0 rows. Pass one row per item.")
    if array.shape[1] == 0:
        raise ValueError(f"embeddings have dimension 0 (shape {array.shape}). Pass vectors with at least one component.")
    # Checked after the cast, because float64 values beyond the float32 range become inf.
    with np.errstate(over="ignore"):
        vectors = np.ascontiguousarray(array, dtype=np.float32)
    not_finite = ~np.isfinite(vectors).all(axis=1)
    if not_finite.any():
        raise ValueError(
            f"embeddings contain NaN or infinite float32 values in {int(not_finite.sum())} rows, first row {int(np.flatnonzero(not_finite)[0])}. "
            f"Check the model that produced them, for example for a diverged training run."
        )
    return vectors


def check_queries(queries: Any, dimension: int, metric: str) -> np.ndarray:
    """Return ``queries`` as a C-contiguous float32 array of shape (m, d), normalised for cosine."""
    array = np.asarray(queries)
    if array.ndim != 2:
        raise ValueError(f"queries must be a 2-D array of shape (m, {dimension}), got shape {array.shape}. For one query, pass query[None, :] or use search().")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"queries must be numeric, got dtype {array.dtype}.")
    if array.shape[1] != dimension:
        raise ValueError(f"queries have dimension {array.shape[1]} but the index contains items of dimension {dimension}. Encode queries with the model that produced the item embeddings.")
    with np.errstate(over="ignore"):
        vectors = np.ascontiguousarray(array, dtype=np.float32)
    not_finite = ~np.isfinite(vectors).all(axis=1)
    if not_finite.any():
        raise ValueError(f"queries contain NaN or infinite values in {int(not_finite.sum())} rows, first row {int(np.flatnonzero(not_finite)[0])}. Check the model that produced them.")
    if metric == "cosine":
        vectors = normalise(vectors, what="query")
    return vectors


def normalise(vectors: np.ndarray, *, what: str) -> np.ndarray:
    """Return unit-length copies of the rows of ``vectors``; a zero row has no direction and is rejected."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise ValueError(f"{what} row {int(np.flatnonzero(zero)[0])} has length 0, so its cosine similarity is undefined. Use metric='inner_product' or drop zero vectors.")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
