"""Keep a fraction of each user's interactions, to study how models fare on scarce data."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recx.data.interactions import Interactions


def sample_per_user(interactions: Interactions, fraction: float, *, seed: int = 0) -> Interactions:
    """Keep ``ceil(fraction * n)`` of each user's ``n`` interactions, drawn at random.

    Every user who had interactions keeps at least one, so no user drops
    out of training. Id maps, timestamps and metadata are kept.

    Parameters
    ----------
    interactions : Interactions
    fraction : float
        In (0, 1]; 1 returns ``interactions`` unchanged.
    seed : int, default=0
        Seeds the draw, so the same seed keeps the same interactions.

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1].
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction!r}. Use 0.25 to keep a quarter of each user's training interactions.")
    if fraction == 1:
        return interactions
    matrix = interactions.matrix
    indptr = matrix.indptr
    lengths = np.diff(indptr)
    generator = np.random.default_rng(seed)

    # A random key per entry; within each user, the entries with the smallest
    # keys are kept. Sorting by (user, key) ranks each user's entries at once.
    keys = generator.random(matrix.nnz)
    rows = np.repeat(np.arange(interactions.n_users), lengths)
    order = np.lexsort((keys, rows))
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - indptr[rows[order]]
    quota = np.ceil(lengths * fraction).astype(np.int64)
    return _keep_entries(interactions, rank < quota[rows])


def drop_items(interactions: Interactions, items: np.ndarray) -> Interactions:
    """Return ``interactions`` without any entry of the item indices ``items``.

    The catalogue (id maps and metadata) is unchanged, so the dropped items
    can still be ranked: this is how items without interactions (cold
    items) are simulated.
    """
    dropped = np.zeros(interactions.n_items, dtype=bool)
    dropped[np.asarray(items, dtype=np.int64)] = True
    return _keep_entries(interactions, ~dropped[interactions.matrix.indices])


def keep_items(interactions: Interactions, items: np.ndarray) -> Interactions:
    """Return only the entries of ``interactions`` whose item index is in ``items``."""
    others = np.setdiff1d(np.arange(interactions.n_items), np.asarray(items, dtype=np.int64))
    return drop_items(interactions, others)


def _keep_entries(interactions: Interactions, keep: np.ndarray) -> Interactions:
    """Return the stored entries where ``keep`` (one bool per entry, CSR order) is true, with their timestamps."""
    matrix = interactions.matrix
    rows = np.repeat(np.arange(interactions.n_users), np.diff(matrix.indptr))
    kept_lengths = np.bincount(rows[keep], minlength=interactions.n_users)
    indptr = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(matrix.indptr.dtype)
    filtered = sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)
    timestamps = None if interactions.timestamps is None else interactions.timestamps[keep]
    return interactions.with_entries(filtered, timestamps)
