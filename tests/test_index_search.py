"""Tests of the search semantics behind ItemIndex: candidate selection, widening and the reconstruction fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recx.index.kinds import SearchKnobs
from recx.index.search import search_with_exclusion, select_allowed


class TruncatingBackend:
    """A backend that returns only the first ``limit`` items of an exact ranking, like a search that misses items."""

    name = "truncating"

    def __init__(self, items: np.ndarray, limit: int) -> None:
        self.items = items
        self.limit = limit
        self.calls: list[int] = []

    def search(self, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(n_fetch)
        scores = vectors @ self.items.T
        labels = np.argsort(-scores, axis=1, kind="stable")[:, :n_fetch]
        top = np.take_along_axis(scores, labels, axis=1).astype(np.float32)
        labels[:, self.limit :] = -1
        top[:, self.limit :] = -np.inf
        return top, labels.astype(np.int64)

    def exhaustive(self, knobs: SearchKnobs, n_fetch: int) -> bool:
        return True


class ReconstructingIndex:
    """The part of a FAISS index the fallback uses: ``ntotal`` and ``reconstruct_n``."""

    def __init__(self, items: np.ndarray, fails: bool = False) -> None:
        self.items = items
        self.ntotal = len(items)
        self.fails = fails

    def reconstruct_n(self, start: int, count: int) -> np.ndarray:
        if self.fails:
            raise RuntimeError("Error in reconstruct: not implemented for this type of index")
        return self.items[start : start + count]


@pytest.fixture
def items() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)


@pytest.fixture
def queries() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)


class TestSelectAllowed:
    def test_drops_excluded_and_missing(self) -> None:
        scores = np.array([[5.0, 4.0, 3.0, 2.0, -np.inf]], dtype=np.float32)
        labels = np.array([[10, 11, 12, 13, -1]])
        allowed = np.array([[True, False, True, True, False]])
        indices, top, n_valid = select_allowed(scores, labels, allowed, 4)
        assert indices[0].tolist() == [10, 12, 13, -1]
        assert top[0, :3].tolist() == [5.0, 3.0, 2.0]
        assert np.isneginf(top[0, 3])
        assert n_valid.tolist() == [3]

    def test_ties_by_ascending_label(self) -> None:
        scores = np.array([[2.0, 2.0, 2.0, 1.0]], dtype=np.float32)
        labels = np.array([[7, 3, 5, 1]])
        indices, _, _ = select_allowed(scores, labels, np.ones((1, 4), dtype=bool), 4)
        assert indices[0].tolist() == [3, 5, 7, 1]

    def test_pads_when_fewer_candidates_than_k(self) -> None:
        scores = np.array([[1.0, 0.5]], dtype=np.float32)
        labels = np.array([[4, 2]])
        indices, top, n_valid = select_allowed(scores, labels, np.ones((1, 2), dtype=bool), 4)
        assert indices[0].tolist() == [4, 2, -1, -1]
        assert n_valid.tolist() == [2]
        assert np.isneginf(top[0, 2:]).all()

    def test_untouched_rows_keep_order(self) -> None:
        """Rows without exclusions or ties come back exactly as the backend ranked them."""
        scores = np.array([[3.0, 2.0, 1.0], [9.0, 8.0, 7.0]], dtype=np.float32)
        labels = np.array([[2, 0, 1], [5, 4, 3]])
        allowed = np.array([[True, True, True], [False, True, True]])
        indices, _, _ = select_allowed(scores, labels, allowed, 2)
        assert indices.tolist() == [[2, 0], [4, 3]]


class TestWidening:
    def test_short_rows_widen_then_fall_back(self, items: np.ndarray, queries: np.ndarray) -> None:
        """A backend that never returns more than 5 items is widened to the whole catalogue, then rows are ranked over reconstructions."""
        backend = TruncatingBackend(items, limit=5)
        exclude = sp.csr_matrix((np.ones(2), ([0, 0], [3, 9])), shape=(3, 50))
        indices, scores = search_with_exclusion(backend, ReconstructingIndex(items), queries, 20, exclude, SearchKnobs(), "inner_product")
        expected = np.argsort(-(queries @ items.T), axis=1, kind="stable")
        assert indices[0].tolist() == [i for i in expected[0].tolist() if i not in (3, 9)][:20]
        assert indices[1].tolist() == expected[1, :20].tolist()
        np.testing.assert_allclose(scores[1], np.sort(queries[1] @ items.T)[::-1][:20], rtol=1e-5)
        # Fetches 22 (k plus two excluded), then 44, then the whole catalogue.
        assert backend.calls == [22, 44, 50]

    def test_fallback_l2_scores(self, items: np.ndarray, queries: np.ndarray) -> None:
        backend = TruncatingBackend(items, limit=1)
        indices, scores = search_with_exclusion(backend, ReconstructingIndex(items), queries, 5, None, SearchKnobs(), "l2")
        distances = ((queries[:, None, :] - items[None, :, :]) ** 2).sum(axis=2)
        assert indices.tolist() == np.argsort(distances, axis=1)[:, :5].tolist()
        np.testing.assert_allclose(scores, -np.sort(distances, axis=1)[:, :5], rtol=1e-4)

    def test_fallback_without_reconstruction_warns(self, items: np.ndarray, queries: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
        """When the structure cannot reconstruct its vectors, short rows keep -1 padding and a warning is logged."""
        backend = TruncatingBackend(items, limit=5)
        with caplog.at_level(logging.WARNING, logger="recx.index.search"):
            indices, _ = search_with_exclusion(backend, ReconstructingIndex(items, fails=True), queries, 10, None, SearchKnobs(), "inner_product")
        assert (indices[:, :5] >= 0).all()
        assert (indices[:, 5:] == -1).all()
        assert "3 rows have fewer than k=10 items after an exhaustive search, and ReconstructingIndex cannot reconstruct its vectors (Error in reconstruct: not implemented for this type of index); those rows end with -1" in caplog.text

    def test_no_widening_when_rows_are_full(self, items: np.ndarray, queries: np.ndarray) -> None:
        backend = TruncatingBackend(items, limit=50)
        search_with_exclusion(backend, ReconstructingIndex(items), queries, 10, None, SearchKnobs(), "inner_product")
        assert backend.calls == [10]
