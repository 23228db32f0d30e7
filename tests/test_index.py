"""Tests of ItemIndex against brute-force numpy search, with exclusion, saving and input checks."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recx.data.idmap import IdMap
from recx.index import INDEX_FORMAT_VERSION, ItemIndex

# Scores computed by FAISS (float32, blocked BLAS) and numpy (float64) differ in the last bits.
SCORE_TOLERANCE = 1e-4
L2_SCORE_TOLERANCE = 1e-3

N_ITEMS, DIMENSION = 300, 16


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_ITEMS, DIMENSION)).astype(np.float32)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, DIMENSION)).astype(np.float32)


@pytest.fixture(scope="module")
def index(embeddings: np.ndarray) -> ItemIndex:
    return ItemIndex(embeddings, IdMap(np.arange(N_ITEMS) * 10 + 7))


def random_exclusion(rng: np.random.Generator, n_rows: int, n_items: int, max_count: int) -> sp.csr_matrix:
    """Draw up to ``max_count`` excluded items per row, different counts per row."""
    rows, columns = [], []
    for row in range(n_rows):
        chosen = rng.choice(n_items, size=int(rng.integers(0, max_count + 1)), replace=False)
        rows.extend([row] * len(chosen))
        columns.extend(chosen.tolist())
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(n_rows, n_items))


def assert_exact_top_k(indices: np.ndarray, scores: np.ndarray, true_scores: np.ndarray, k: int, atol: float = SCORE_TOLERANCE) -> None:
    """Check one row against brute force, tolerating any choice among tied items.

    ``true_scores`` contains the brute-force score of every item, ``-inf`` for
    excluded ones. The returned scores must equal the k best true scores,
    each returned item must have the score reported for it, and no item
    may repeat.
    """
    available = int(np.isfinite(true_scores).sum())
    expected = np.sort(true_scores[np.isfinite(true_scores)])[::-1][:k]
    valid = indices >= 0
    assert valid.sum() == min(k, available)
    assert np.all(valid[: valid.sum()])  # padding only at the end
    np.testing.assert_allclose(scores[valid], expected, atol=atol)
    np.testing.assert_allclose(true_scores[indices[valid]], scores[valid], atol=atol)
    assert len(set(indices[valid].tolist())) == valid.sum()
    assert np.all(np.isneginf(scores[~valid]))


class TestExactSearch:
    @pytest.mark.parametrize("k", [1, 10, 57])
    def test_matches_brute_force(self, index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray, k: int) -> None:
        """Inner-product search returns the true top k of q . e for every query."""
        indices, scores = index.search_indices(queries, k)
        assert indices.shape == (len(queries), k)
        assert indices.dtype == np.int64
        assert scores.dtype == np.float32
        brute = queries.astype(np.float64) @ embeddings.T.astype(np.float64)
        for row in range(len(queries)):
            assert_exact_top_k(indices[row], scores[row], brute[row], k)

    def test_matches_argsort_without_ties(self, index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray) -> None:
        """With continuous random data, the ids equal numpy's argsort order."""
        indices, _ = index.search_indices(queries, 20)
        brute = queries.astype(np.float64) @ embeddings.T.astype(np.float64)
        expected = np.argsort(-brute, axis=1)[:, :20]
        assert np.array_equal(indices, expected)

    def test_cosine_matches_brute_force(self, embeddings: np.ndarray, queries: np.ndarray) -> None:
        """Cosine search ranks by normalised inner product and returns cosine scores."""
        cosine = ItemIndex(embeddings * np.arange(1, N_ITEMS + 1)[:, None], IdMap(np.arange(N_ITEMS)), metric="cosine")
        indices, scores = cosine.search_indices(queries * 3.0, 15)
        unit_items = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        brute = unit_queries.astype(np.float64) @ unit_items.T.astype(np.float64)
        for row in range(len(queries)):
            assert_exact_top_k(indices[row], scores[row], brute[row], 15)
        assert np.all(np.abs(scores) <= 1.0 + 1e-5)

    def test_l2_matches_brute_force(self, embeddings: np.ndarray, queries: np.ndarray) -> None:
        """L2 search ranks by -|q - e|^2 and returns that negated squared distance as the score."""
        l2 = ItemIndex(embeddings, IdMap(np.arange(N_ITEMS)), metric="l2")
        indices, scores = l2.search_indices(queries, 15)
        differences = queries.astype(np.float64)[:, None, :] - embeddings.astype(np.float64)[None, :, :]
        brute = -(differences**2).sum(axis=2)
        for row in range(len(queries)):
            # Squared distances near 32 lose about 1e-5 relative precision in float32.
            assert_exact_top_k(indices[row], scores[row], brute[row], 15, atol=L2_SCORE_TOLERANCE)
        assert np.all(scores <= 0)

    @pytest.mark.parametrize(
        ("metric", "expected_indices", "expected_scores"),
        [
            # q = [1, 1] against [1, 0], [0, 2], [-1, 0], [3, 3]: q . e = 1, 2, -1, 6.
            ("inner_product", [3, 1, 0, 2], [6.0, 2.0, 1.0, -1.0]),
            # Unit vectors: cos = 1/sqrt(2), 1/sqrt(2), -1/sqrt(2), 1; the tie lists index 0 first.
            ("cosine", [3, 0, 1, 2], [1.0, 0.5**0.5, 0.5**0.5, -(0.5**0.5)]),
            # |q - e|^2 = 1, 2, 5, 8.
            ("l2", [0, 1, 2, 3], [-1.0, -2.0, -5.0, -8.0]),
        ],
    )
    def test_known_answer_per_metric(self, metric: str, expected_indices: list[int], expected_scores: list[float]) -> None:
        """A hand-computed ranking for each metric."""
        vectors = np.array([[1, 0], [0, 2], [-1, 0], [3, 3]], dtype=np.float32)
        small = ItemIndex(vectors, IdMap(np.arange(4)), metric=metric)
        indices, scores = small.search_indices(np.array([[1.0, 1.0]]), 4)
        assert indices[0].tolist() == expected_indices
        np.testing.assert_allclose(scores[0], expected_scores, atol=1e-6)

    def test_ties_listed_by_index(self) -> None:
        """Items with equal scores come in ascending index order."""
        # Items 0..5 score 1, 1, 2, 2, 2, 0 for the query [1, 0].
        vectors = np.array([[1, 0], [1, 0], [2, 0], [2, 0], [2, 0], [0, 1]], dtype=np.float32)
        tied = ItemIndex(vectors, IdMap(np.arange(6)))
        indices, scores = tied.search_indices(np.array([[1.0, 0.0]]), 6)
        assert indices[0].tolist() == [2, 3, 4, 0, 1, 5]
        assert scores[0].tolist() == [2.0, 2.0, 2.0, 1.0, 1.0, 0.0]

    def test_tied_catalogue_agrees_with_brute_force(self) -> None:
        """Integer embeddings with many ties still give the true top scores."""
        rng = np.random.default_rng(5)
        vectors = rng.integers(-1, 2, size=(120, 4)).astype(np.float32)
        many_queries = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
        tied = ItemIndex(vectors, IdMap(np.arange(120)))
        indices, scores = tied.search_indices(many_queries, 30)
        brute = many_queries.astype(np.float64) @ vectors.T.astype(np.float64)
        for row in range(len(many_queries)):
            assert_exact_top_k(indices[row], scores[row], brute[row], 30)

    def test_k_equal_to_catalogue(self, embeddings: np.ndarray, queries: np.ndarray) -> None:
        """k equal to the catalogue size returns every item once, nothing invalid."""
        small = ItemIndex(embeddings[:12], IdMap(np.arange(12)))
        indices, scores = small.search_indices(queries, 12)
        assert indices.shape == (len(queries), 12)
        for row in indices:
            assert sorted(row.tolist()) == list(range(12))
        assert np.all(np.isfinite(scores))

    def test_empty_batch(self, index: ItemIndex) -> None:
        """Zero queries give empty arrays of width min(k, n_items)."""
        indices, scores = index.search_indices(np.empty((0, DIMENSION), dtype=np.float32), 5)
        assert indices.shape == (0, 5)
        assert scores.shape == (0, 5)

    def test_properties(self, index: ItemIndex) -> None:
        """A flat index is exact and describes itself."""
        assert index.kind == "flat"
        assert index.metric == "inner_product"
        assert index.is_exact
        assert index.dimension == DIMENSION
        assert len(index) == N_ITEMS
        assert repr(index) == f"ItemIndex(kind='flat', metric='inner_product', n_items={N_ITEMS}, dimension={DIMENSION})"

    def test_concurrent_searches(self, index: ItemIndex, queries: np.ndarray) -> None:
        """Searches from 8 threads give exactly the results of one thread."""
        expected = index.search_indices(queries, 10)
        results: list[tuple[np.ndarray, np.ndarray]] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(5):
                found = index.search_indices(queries, 10)
                with lock:
                    results.append(found)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 40
        for indices, scores in results:
            assert np.array_equal(indices, expected[0])
            assert np.array_equal(scores, expected[1])


class TestExclusion:
    @pytest.mark.parametrize("k", [1, 10, 40])
    def test_matches_brute_force(self, index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray, k: int) -> None:
        """Excluded items never come back and k items remain, as in a masked brute force."""
        exclude = random_exclusion(np.random.default_rng(k), len(queries), N_ITEMS, max_count=60)
        indices, scores = index.search_indices(queries, k, exclude)
        brute = queries.astype(np.float64) @ embeddings.T.astype(np.float64)
        for row in range(len(queries)):
            blocked = exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]
            assert not set(indices[row].tolist()) & set(blocked.tolist())
            assert np.all(indices[row] >= 0)
            masked = brute[row].copy()
            masked[blocked] = -np.inf
            assert_exact_top_k(indices[row], scores[row], masked, k)

    def test_excluding_the_best_items(self, index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray) -> None:
        """Excluding each query's own top 50 still returns the next k."""
        brute = queries.astype(np.float64) @ embeddings.T.astype(np.float64)
        best = np.argsort(-brute, axis=1)[:, :50]
        rows = np.repeat(np.arange(len(queries)), 50)
        exclude = sp.csr_matrix((np.ones(rows.size), (rows, best.ravel())), shape=(len(queries), N_ITEMS))
        indices, _ = index.search_indices(queries, 10, exclude)
        assert np.array_equal(indices, np.argsort(-brute, axis=1)[:, 50:60])

    def test_fewer_than_k_left(self, embeddings: np.ndarray) -> None:
        """When exclusion leaves fewer than k items, the rest is -1 and -inf."""
        small = ItemIndex(embeddings[:6], IdMap(np.arange(6)))
        exclude = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]))
        indices, scores = small.search_indices(embeddings[:2], 5, exclude)
        assert sorted(indices[0, :2].tolist()) == [4, 5]
        assert indices[0, 2:].tolist() == [-1, -1, -1]
        assert np.all(np.isneginf(scores[0, 2:]))
        assert np.all(indices[1] >= 0)

    def test_explicit_zero_excludes(self, embeddings: np.ndarray) -> None:
        """A stored zero in exclude still excludes its item, like train.matrix entries."""
        small = ItemIndex(embeddings[:5], IdMap(np.arange(5)))
        exclude = sp.csr_matrix((np.array([0.0]), np.array([2]), np.array([0, 1])), shape=(1, 5))
        indices, _ = small.search_indices(embeddings[2:3], 5, exclude)
        assert 2 not in indices[0].tolist()
        assert indices[0, -1] == -1


class TestExternalIds:
    def test_single_query(self, index: ItemIndex, queries: np.ndarray) -> None:
        """A 1-D query returns 1-D arrays of external ids."""
        ids, scores = index.search(queries[0], 5)
        indices, expected_scores = index.search_indices(queries[:1], 5)
        assert isinstance(ids, np.ndarray)
        assert ids.shape == (5,)
        assert ids.tolist() == (indices[0] * 10 + 7).tolist()
        assert np.array_equal(scores, expected_scores[0])

    def test_batch_returns_lists(self, index: ItemIndex, queries: np.ndarray) -> None:
        """A 2-D batch returns one array per query."""
        ids, scores = index.search(queries[:3], 4)
        assert isinstance(ids, list)
        assert len(ids) == 3
        assert len(scores) == 3
        assert all(row.shape == (4,) for row in ids)

    def test_exclude_by_ids(self, index: ItemIndex, queries: np.ndarray) -> None:
        """External ids to exclude work per query; unknown ids are ignored."""
        first, _ = index.search(queries[0], 3)
        ids, _ = index.search(queries[0], 3, exclude=[first[0], 123456])
        assert first[0] not in ids.tolist()
        assert ids.tolist()[:2] == first.tolist()[1:]

        batch, _ = index.search(queries[:2], 3, exclude=[[first[0]], []])
        assert first[0] not in batch[0].tolist()
        assert len(batch[1]) == 3

    def test_exclude_shortens_rows(self) -> None:
        """Rows contain min(k, items left), so lengths may differ within a batch."""
        vectors = np.eye(3, dtype=np.float32)
        string_index = ItemIndex(vectors, IdMap(["a", "b", "c"]))
        ids, scores = string_index.search(vectors, 3, exclude=[["a", "b"], [], ["a", "b", "c"]])
        assert ids[0].tolist() == ["c"]
        assert ids[1].tolist() == ["b", "a", "c"]
        assert ids[2].tolist() == []
        assert scores[2].shape == (0,)

    def test_exclude_string_rejected(self) -> None:
        """A bare string is not taken as a collection of characters."""
        string_index = ItemIndex(np.eye(2, dtype=np.float32), IdMap(["ab", "b"]))
        with pytest.raises(TypeError, match=re.escape("exclude entry 0 is the string 'ab', not a collection of item ids. Wrap a single id in a list: ['ab'].")):
            string_index.search(np.ones(2), 1, exclude="ab")

    def test_exclude_length_mismatch(self, index: ItemIndex, queries: np.ndarray) -> None:
        """A batch needs one exclusion collection per query."""
        with pytest.raises(ValueError, match=re.escape("exclude must contain one collection of item ids per query (3), got 2 entries.")):
            index.search(queries[:3], 2, exclude=[[7], [17]])


class TestSaveLoad:
    def test_round_trip(self, index: ItemIndex, queries: np.ndarray, tmp_path: Path) -> None:
        """A loaded index returns exactly what the saved one returned."""
        index.save(tmp_path / "index")
        loaded = ItemIndex.load(tmp_path / "index")
        exclude = random_exclusion(np.random.default_rng(9), len(queries), N_ITEMS, max_count=20)
        for expected, found in zip(index.search_indices(queries, 25, exclude), loaded.search_indices(queries, 25, exclude)):
            assert np.array_equal(expected, found)
        assert loaded.item_ids == index.item_ids
        assert (loaded.kind, loaded.metric, loaded.dimension, loaded.n_items) == ("flat", "inner_product", DIMENSION, N_ITEMS)

    def test_round_trip_cosine_string_ids(self, embeddings: np.ndarray, queries: np.ndarray, tmp_path: Path) -> None:
        """Metric and string ids survive saving."""
        cosine = ItemIndex(embeddings, IdMap([f"item-{i}" for i in range(N_ITEMS)]), metric="cosine")
        cosine.save(tmp_path)
        loaded = ItemIndex.load(tmp_path)
        assert loaded.metric == "cosine"
        expected_ids, expected_scores = cosine.search(queries[:4], 7)
        found_ids, found_scores = loaded.search(queries[:4], 7)
        for row in range(4):
            assert found_ids[row].tolist() == expected_ids[row].tolist()
            assert np.array_equal(found_scores[row], expected_scores[row])

    def test_manifest(self, index: ItemIndex, tmp_path: Path) -> None:
        """index.json records version, kind, metric, sizes and the checksum; no temporary files remain."""
        index.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        assert manifest["format_version"] == INDEX_FORMAT_VERSION
        assert manifest["kind"] == "flat"
        assert manifest["metric"] == "inner_product"
        assert manifest["dimension"] == DIMENSION
        assert manifest["n_items"] == N_ITEMS
        assert len(manifest["index_sha256"]) == 64
        assert sorted(path.name for path in tmp_path.iterdir()) == ["index.faiss", "index.json", "items.json"]

    def test_tampered_file(self, index: ItemIndex, tmp_path: Path) -> None:
        """A changed index.faiss fails the checksum."""
        index.save(tmp_path)
        path = tmp_path / "index.faiss"
        payload = bytearray(path.read_bytes())
        payload[-5] ^= 0xFF
        path.write_bytes(bytes(payload))
        with pytest.raises(ValueError, match=re.escape(f"checksum mismatch for {path}: the manifest expects sha256")):
            ItemIndex.load(tmp_path)

    def test_missing_index_file(self, index: ItemIndex, tmp_path: Path) -> None:
        """A folder without index.faiss is reported as incomplete."""
        index.save(tmp_path)
        (tmp_path / "index.faiss").unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(f"item index file not found: {tmp_path / 'index.faiss'} does not exist.")):
            ItemIndex.load(tmp_path)

    def test_missing_manifest(self, index: ItemIndex, tmp_path: Path) -> None:
        """A folder without index.json is reported."""
        index.save(tmp_path)
        (tmp_path / "index.json").unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(f"item index manifest not found: {tmp_path / 'index.json'} does not exist")):
            ItemIndex.load(tmp_path)

    def test_missing_ids(self, index: ItemIndex, tmp_path: Path) -> None:
        """A folder without items.json is reported."""
        index.save(tmp_path)
        (tmp_path / "items.json").unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(f"id map not found: {tmp_path / 'items.json'} does not exist")):
            ItemIndex.load(tmp_path)

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A folder that does not exist is reported."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"item index not found: {tmp_path / 'absent'} is not a folder.")):
            ItemIndex.load(tmp_path / "absent")

    def test_unknown_format_version(self, index: ItemIndex, tmp_path: Path) -> None:
        """A manifest from another format version is rejected."""
        index.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        manifest["format_version"] = 99
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=re.escape(f"unsupported item index format version 99 in {tmp_path / 'index.json'}: this recx reads version 1.")):
            ItemIndex.load(tmp_path)

    def test_unknown_kind(self, index: ItemIndex, tmp_path: Path) -> None:
        """A manifest naming an unknown kind is rejected."""
        index.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        manifest["kind"] = "annoy"
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=re.escape("unknown item index kind 'annoy'")):
            ItemIndex.load(tmp_path)

    def test_ids_from_another_save(self, index: ItemIndex, embeddings: np.ndarray, tmp_path: Path) -> None:
        """items.json with another number of ids than the index is rejected."""
        index.save(tmp_path)
        IdMap(np.arange(5)).save(tmp_path / "items.json")
        with pytest.raises(ValueError, match=re.escape(f"contains 5 item ids but the index contains {N_ITEMS} items.")):
            ItemIndex.load(tmp_path)

    def test_save_replaces_previous(self, index: ItemIndex, embeddings: np.ndarray, tmp_path: Path) -> None:
        """Saving over an older index leaves a consistent folder."""
        ItemIndex(embeddings[:10], IdMap(np.arange(10))).save(tmp_path)
        index.save(tmp_path)
        assert ItemIndex.load(tmp_path).n_items == N_ITEMS


class TestInputErrors:
    def test_empty_catalogue(self) -> None:
        with pytest.raises(ValueError, match=re.escape("cannot build an index over an empty catalogue: embeddings has 0 rows. Pass one row per item.")):
            ItemIndex(np.empty((0, 4), dtype=np.float32), IdMap([]))

    def test_nan_embeddings(self) -> None:
        vectors = np.ones((4, 3), dtype=np.float32)
        vectors[2, 1] = np.nan
        vectors[3, 0] = np.inf
        with pytest.raises(ValueError, match=re.escape("embeddings contain NaN or infinite float32 values in 2 rows, first row 2.")):
            ItemIndex(vectors, IdMap(np.arange(4)))

    def test_float64_overflow(self) -> None:
        """float64 values beyond the float32 range are caught after conversion."""
        vectors = np.ones((2, 2))
        vectors[1, 1] = 1e300
        with pytest.raises(ValueError, match=re.escape("in 1 rows, first row 1.")):
            ItemIndex(vectors, IdMap(np.arange(2)))

    def test_ids_count_mismatch(self) -> None:
        with pytest.raises(ValueError, match=re.escape("item_ids has 3 ids but embeddings has 4 rows. Pass one id per embedding row, in row order.")):
            ItemIndex(np.ones((4, 2), dtype=np.float32), IdMap([1, 2, 3]))

    def test_one_dimensional_embeddings(self) -> None:
        with pytest.raises(ValueError, match=re.escape("embeddings must be a 2-D array of shape (n_items, d), got shape (4,).")):
            ItemIndex(np.ones(4, dtype=np.float32), IdMap(np.arange(4)))

    def test_unknown_metric(self) -> None:
        with pytest.raises(ValueError, match=re.escape("unknown metric 'dot': expected one of ['inner_product', 'cosine', 'l2'].")):
            ItemIndex(np.ones((2, 2), dtype=np.float32), IdMap([0, 1]), metric="dot")

    def test_zero_vector_with_cosine(self) -> None:
        vectors = np.ones((3, 2), dtype=np.float32)
        vectors[1] = 0.0
        with pytest.raises(ValueError, match=re.escape("item embedding row 1 has length 0, so its cosine similarity is undefined.")):
            ItemIndex(vectors, IdMap(np.arange(3)), metric="cosine")

    def test_query_dimension(self, index: ItemIndex) -> None:
        message = f"queries have dimension 3 but the index contains items of dimension {DIMENSION}. Encode queries with the model that produced the item embeddings."
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search_indices(np.ones((2, 3), dtype=np.float32), 5)
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search(np.ones(3, dtype=np.float32), 5)

    def test_one_dimensional_query_to_search_indices(self, index: ItemIndex) -> None:
        with pytest.raises(ValueError, match=re.escape(f"queries must be a 2-D array of shape (m, {DIMENSION}), got shape ({DIMENSION},).")):
            index.search_indices(np.ones(DIMENSION, dtype=np.float32), 5)

    def test_three_dimensional_query_to_search(self, index: ItemIndex) -> None:
        with pytest.raises(ValueError, match=re.escape(f"queries must have shape ({DIMENSION},) or (m, {DIMENSION}), got shape (1, 2, {DIMENSION}).")):
            index.search(np.ones((1, 2, DIMENSION), dtype=np.float32), 5)

    def test_nan_query(self, index: ItemIndex) -> None:
        batch = np.ones((3, DIMENSION), dtype=np.float32)
        batch[1, 0] = np.nan
        with pytest.raises(ValueError, match=re.escape("queries contain NaN or infinite values in 1 rows, first row 1.")):
            index.search_indices(batch, 5)

    @pytest.mark.parametrize("k", [0, -3, 1.5, True])
    def test_invalid_k(self, index: ItemIndex, queries: np.ndarray, k: object) -> None:
        message = f"k must be a positive integer no larger than the catalogue size ({N_ITEMS} items), got {k!r}."
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search_indices(queries, k)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search(queries[0], k)  # type: ignore[arg-type]

    def test_k_above_catalogue(self, index: ItemIndex, queries: np.ndarray) -> None:
        """k beyond the catalogue raises instead of being clipped."""
        message = f"k={N_ITEMS + 1} exceeds the catalogue size ({N_ITEMS} items). Pass k <= {N_ITEMS}; k={N_ITEMS} ranks every item."
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search_indices(queries, N_ITEMS + 1)
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search(queries[0], N_ITEMS + 1)

    def test_declared_metric_mismatch(self, index: ItemIndex, queries: np.ndarray) -> None:
        """Queries declared for another metric than the index's are rejected."""
        message = "queries are declared for metric 'cosine', but the index was built with metric 'inner_product'. Encode queries for 'inner_product', or build the index with metric='cosine'."
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search_indices(queries, 5, metric="cosine")
        with pytest.raises(ValueError, match=re.escape(message)):
            index.search(queries[0], 5, metric="cosine")

    def test_declared_metric_match(self, index: ItemIndex, queries: np.ndarray) -> None:
        """Declaring the index's own metric changes nothing."""
        for expected, found in zip(index.search_indices(queries, 5), index.search_indices(queries, 5, metric="inner_product")):
            assert np.array_equal(expected, found)

    def test_declared_metric_unknown(self, index: ItemIndex, queries: np.ndarray) -> None:
        with pytest.raises(ValueError, match=re.escape("unknown metric 'dot': expected one of ['inner_product', 'cosine', 'l2'].")):
            index.search_indices(queries, 5, metric="dot")

    def test_exclude_shape(self, index: ItemIndex, queries: np.ndarray) -> None:
        with pytest.raises(ValueError, match=re.escape(f"exclude has shape (2, {N_ITEMS}), expected (3, {N_ITEMS}): one row per query, one column per indexed item.")):
            index.search_indices(queries[:3], 5, sp.csr_matrix((2, N_ITEMS)))

    def test_dense_exclude(self, index: ItemIndex, queries: np.ndarray) -> None:
        with pytest.raises(TypeError, match=re.escape(f"exclude must be a scipy sparse matrix of shape (1, {N_ITEMS}) or None, got ndarray.")):
            index.search_indices(queries[:1], 5, np.zeros((1, N_ITEMS)))
