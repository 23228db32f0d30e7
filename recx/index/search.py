"""Top-k search with excluded items: over-fetch, drop excluded items, widen rows that come back short.

FAISS cannot skip a different set of items for each query, so a search
requests ``k`` plus the largest number of excluded items of any row and
drops the excluded ones afterwards. Exact search then always has ``k``
items left in every row where ``k`` remain. Approximate search may return
fewer candidates than requested, for example when an IVF probe reaches too
few lists or an HNSW beam misses nodes. Rows still short are therefore
searched again with twice the candidates and twice ``nprobe`` or
``efSearch``, until the search is exhaustive. A row that is still short after an exhaustive search, which
happens only when the HNSW graph does not reach every item or a factory
structure never returns some items, is ranked exactly over the vectors
that FAISS reconstructs.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np
import scipy.sparse as sp

from recx.evaluation.metrics import isin_rows
from recx.index.backends import SearchBackend
from recx.index.kinds import SearchKnobs, widen_knobs

logger = logging.getLogger(__name__)

__all__ = ["search_with_exclusion", "select_allowed"]

# The reconstruction fallback scores rows in groups of at most 2**26 query-item
# pairs (256 MiB of float32) and reconstructs items in blocks of 65536 vectors.
_FALLBACK_GROUP_ELEMENTS = 2**26
_FALLBACK_ITEM_BLOCK = 65536


def select_allowed(scores: np.ndarray, labels: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``k`` best allowed candidates of each row, best first, ties by ascending label.

    Parameters
    ----------
    scores : np.ndarray of shape (m, n_fetch), float32
        Candidate scores, higher is better, each row sorted best first.
    labels : np.ndarray of shape (m, n_fetch), int64
    allowed : np.ndarray of shape (m, n_fetch), bool
        False for missing (-1) and excluded candidates.
    k : int

    Returns
    -------
    indices : np.ndarray of shape (m, k), int64
        -1 after the last allowed candidate.
    top_scores : np.ndarray of shape (m, k), float32
        ``-inf`` where the index is -1.
    n_valid : np.ndarray of shape (m,), int64
        Number of allowed candidates kept per row.
    """
    n_rows, n_fetch = labels.shape
    if n_fetch < k:
        pad = k - n_fetch
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        allowed = np.pad(allowed, ((0, 0), (0, pad)), constant_values=False)

    # Most rows need no reordering: the allowed candidates already come first
    # and no two of them tie. Only the other rows pay for a full sort.
    not_prefix = (~allowed[:, :-1] & allowed[:, 1:]).any(axis=1)
    ties = (allowed[:, :-1] & allowed[:, 1:] & (scores[:, :-1] == scores[:, 1:])).any(axis=1)
    reorder = np.flatnonzero(not_prefix | ties)
    if reorder.size:
        scores, labels, allowed = scores.copy(), labels.copy(), allowed.copy()
        order = np.lexsort((labels[reorder], -scores[reorder], ~allowed[reorder]), axis=1)
        scores[reorder] = np.take_along_axis(scores[reorder], order, axis=1)
        labels[reorder] = np.take_along_axis(labels[reorder], order, axis=1)
        allowed[reorder] = np.take_along_axis(allowed[reorder], order, axis=1)

    indices = labels[:, :k].astype(np.int64, copy=True)
    top_scores = scores[:, :k].astype(np.float32, copy=True)
    valid = allowed[:, :k]
    indices[~valid] = -1
    top_scores[~valid] = -np.inf
    return indices, top_scores, valid.sum(axis=1)


def search_with_exclusion(
    backend: SearchBackend,
    index: faiss.Index,
    vectors: np.ndarray,
    k: int,
    blocked: sp.csr_matrix | None,
    knobs: SearchKnobs,
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` best non-excluded items of each query.

    Parameters
    ----------
    backend : SearchBackend
    index : faiss.Index
        The CPU index behind ``backend``, for the reconstruction fallback.
    vectors : np.ndarray of shape (m, d), float32
        Checked queries, normalised for cosine, m >= 1.
    k : int
        1 <= k <= n_items.
    blocked : scipy.sparse.csr_matrix of shape (m, n_items) or None
        Canonical (sorted, no duplicates) exclusion pattern.
    knobs : SearchKnobs
        Search widths of the first attempt.
    metric : str

    Returns
    -------
    indices : np.ndarray of shape (m, k), int64
        Item indices, best first. A row ends with -1 only when fewer than
        ``k`` items remain after exclusion. The exception is a factory
        structure that cannot reconstruct its vectors, whose rows end with
        -1 when its search found fewer items.
    scores : np.ndarray of shape (m, k), float32
        ``-inf`` where the index is -1.
    """
    n_items = int(index.ntotal)
    n_excluded = np.zeros(len(vectors), dtype=np.int64) if blocked is None else np.diff(blocked.indptr).astype(np.int64)
    needed = np.minimum(k, n_items - n_excluded)

    n_fetch = min(n_items, k + int(n_excluded.max(initial=0)))
    indices, scores, n_valid = _search_rows(backend, vectors, n_fetch, knobs, blocked, k)
    short = np.flatnonzero(n_valid < needed)
    while short.size:
        if n_fetch == n_items and backend.exhaustive(knobs, n_fetch):
            _rank_by_reconstruction(index, vectors, short, k, blocked, metric, indices, scores)
            break
        n_fetch = min(n_items, 2 * n_fetch)
        knobs = widen_knobs(knobs, index, n_items)
        logger.debug("%d rows have fewer than min(k=%d, items left) items after exclusion; searching them again with n_fetch=%d, %s", short.size, k, n_fetch, knobs)
        part = None if blocked is None else blocked[short]
        indices[short], scores[short], n_valid_short = _search_rows(backend, vectors[short], n_fetch, knobs, part, k)
        short = short[n_valid_short < needed[short]]
    return indices, scores


def _search_rows(
    backend: SearchBackend, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs, blocked: sp.csr_matrix | None, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    candidate_scores, labels = backend.search(vectors, n_fetch, knobs)
    allowed = labels >= 0
    if blocked is not None and blocked.nnz:
        allowed &= ~isin_rows(labels, blocked)
    return select_allowed(candidate_scores, labels, allowed, k)


def _rank_by_reconstruction(
    index: faiss.Index,
    vectors: np.ndarray,
    rows: np.ndarray,
    k: int,
    blocked: sp.csr_matrix | None,
    metric: str,
    indices: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Rank every item exactly for ``rows``, over the vectors FAISS reconstructs, writing into ``indices`` and ``scores``.

    For an approximate structure the reconstruction is the stored
    approximation (PQ codes decoded, for example), so these scores are what
    the index would have returned had it reached the item. Rows go in
    groups whose score matrix stays near 256 MiB.
    """
    n_items = int(index.ntotal)
    group = max(1, _FALLBACK_GROUP_ELEMENTS // n_items)
    for first in range(0, len(rows), group):
        part = rows[first : first + group]
        try:
            all_scores = _reconstructed_scores(index, vectors[part], metric)
        except RuntimeError as error:
            logger.warning(
                "%d rows have fewer than k=%d items after an exhaustive search, and %s cannot reconstruct its vectors (%s); those rows end with -1",
                len(rows), k, type(index).__name__, str(error).strip().splitlines()[-1],
            )
            return
        if blocked is not None:
            excluded = blocked[part]
            all_scores[np.repeat(np.arange(len(part)), np.diff(excluded.indptr)), excluded.indices] = -np.inf

        # argpartition narrows each row to k candidates; only those are sorted, ties by item index.
        candidates = np.argpartition(-all_scores, k - 1, axis=1)[:, :k] if k < n_items else np.tile(np.arange(n_items), (len(part), 1))
        candidate_scores = np.take_along_axis(all_scores, candidates, axis=1)
        order = np.lexsort((candidates, -candidate_scores), axis=1)
        top_indices = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        top_scores = np.take_along_axis(candidate_scores, order, axis=1)
        top_indices[np.isneginf(top_scores)] = -1
        indices[part] = top_indices
        scores[part] = top_scores
    logger.debug("ranked %d short rows exactly over reconstructed vectors", len(rows))


def _reconstructed_scores(index: faiss.Index, queries: np.ndarray, metric: str) -> np.ndarray:
    """Return the (m, n_items) float32 scores of ``queries`` against every reconstructed item vector."""
    n_items = int(index.ntotal)
    all_scores = np.empty((len(queries), n_items), dtype=np.float32)
    for start in range(0, n_items, _FALLBACK_ITEM_BLOCK):
        items = index.reconstruct_n(start, min(_FALLBACK_ITEM_BLOCK, n_items - start))
        block = queries @ items.T
        if metric == "l2":
            block = 2 * block - (items * items).sum(axis=1)[None, :] - (queries * queries).sum(axis=1, keepdims=True)
        all_scores[:, start : start + len(items)] = block
    return all_scores
