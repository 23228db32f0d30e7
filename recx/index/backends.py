"""Search backends: FAISS on the CPU, FAISS on a GPU, or exact torch search on a GPU.

Every backend returns scores where higher is better (the negated squared
distance for metric "l2") and FAISS labels, which are embedding row
positions, with -1 where it found fewer candidates than asked for.
"""

from __future__ import annotations

import logging
from typing import Protocol

import faiss
import numpy as np

from recx.index.kinds import SearchKnobs, faiss_search_parameters, knobs_exhaustive

logger = logging.getLogger(__name__)

__all__ = ["DEVICES", "FaissCpuBackend", "SearchBackend", "scores_from_distances"]

#: Values of the ``device`` argument of :class:`~recx.index.ItemIndex`.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class SearchBackend(Protocol):
    """A place that runs the top-n search of an index."""

    #: "faiss-cpu", "faiss-gpu" or "torch-cuda".
    name: str

    def search(self, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, labels)`` of shape (m, n_fetch): float32 scores, best first, and int64 labels."""
        ...

    def exhaustive(self, knobs: SearchKnobs, n_fetch: int) -> bool:
        """Return True when a search of ``n_fetch`` candidates with ``knobs`` is as wide as the structure allows."""
        ...


def scores_from_distances(distances: np.ndarray, metric: str) -> np.ndarray:
    """Turn FAISS distances into scores where higher is better: L2 distances are negated."""
    if metric == "l2":
        return np.negative(distances, out=distances)
    return distances


class FaissCpuBackend:
    """Search a CPU FAISS index, passing the search widths per call.

    FAISS CPU indexes are safe to search from several threads at once as
    long as nothing modifies them, and this backend never does: ``nprobe``
    and ``efSearch`` travel in ``faiss.SearchParameters`` objects.
    """

    name = "faiss-cpu"

    def __init__(self, index: faiss.Index, metric: str) -> None:
        self.index = index
        self.metric = metric

    def search(self, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs) -> tuple[np.ndarray, np.ndarray]:
        parameters, keep_alive = faiss_search_parameters(self.index, knobs)
        distances, labels = self.index.search(vectors, n_fetch, params=parameters)
        del keep_alive
        return scores_from_distances(distances, self.metric), labels

    def exhaustive(self, knobs: SearchKnobs, n_fetch: int) -> bool:
        return knobs_exhaustive(knobs, self.index, n_fetch)
