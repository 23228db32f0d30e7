"""Tests of the approximate index kinds, the auto choice, per-search widths and IVF training limits."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

from recx.data.idmap import IdMap
from recx.index import AUTO_EXACT_MAX_ITEMS, ItemIndex
from recx.index.kinds import default_nlist, default_nprobe, resolve_settings

N_ITEMS, DIMENSION, N_CLUSTERS = 10_000, 32, 100

# Build settings per kind, sized so that each builds in about a second on two cores.
KIND_OPTIONS: dict[str, dict[str, object]] = {
    "hnsw": {"hnsw_m": 16, "ef_construction": 64, "ef_search": 64},
    "ivf_flat": {"nlist": 128, "nprobe": 8},
    "ivf_pq": {"nlist": 64, "nprobe": 8, "pq_m": 16, "pq_bits": 6},
    "factory": {"factory": "RR32,IVF128,Flat", "nprobe": 8},
}

# Recall@50 against exact search measured on the clustered data below with
# FAISS 1.15.1 (hnsw 0.997, ivf_flat 0.999, ivf_pq 0.90, factory 0.999), less a
# margin for the nondeterministic HNSW build and other FAISS versions.
RECALL_FLOORS = {"hnsw": 0.95, "ivf_flat": 0.95, "ivf_pq": 0.85, "factory": 0.95}


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread() -> Iterator[None]:
    """Run FAISS single-threaded: OpenMP threads that spin on a busy machine make build times unpredictable."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """Draw ``n`` unit vectors around random rows of ``centres``; ``spread`` is the noise norm."""
    points = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, centres.shape[1])) / np.sqrt(centres.shape[1])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Clustered items and queries, like trained embeddings; uniform noise would make every ANN index look poor."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_CLUSTERS, DIMENSION))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return clustered(rng, centres, N_ITEMS, 0.8), 5.0 * clustered(rng, centres, 100, 0.8)


@pytest.fixture(scope="module")
def items(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return data[0]


@pytest.fixture(scope="module")
def queries(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return data[1]


@pytest.fixture(scope="module")
def exact(items: np.ndarray) -> ItemIndex:
    return ItemIndex(items, IdMap(np.arange(N_ITEMS)), device="cpu")


@pytest.fixture(scope="module")
def indexes(items: np.ndarray) -> dict[str, ItemIndex]:
    return {kind: ItemIndex(items, IdMap(np.arange(N_ITEMS)), kind=kind, device="cpu", **options) for kind, options in KIND_OPTIONS.items()}  # type: ignore[arg-type]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` found in the same row of ``found``."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)]))


def random_exclusion(rng: np.random.Generator, n_rows: int, n_items: int, max_count: int) -> sp.csr_matrix:
    rows, columns = [], []
    for row in range(n_rows):
        chosen = rng.choice(n_items, size=int(rng.integers(0, max_count + 1)), replace=False)
        rows.extend([row] * len(chosen))
        columns.extend(chosen.tolist())
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(n_rows, n_items))


class TestApproximateKinds:
    @pytest.mark.parametrize("kind", list(KIND_OPTIONS))
    def test_recall_floor(self, indexes: dict[str, ItemIndex], exact: ItemIndex, queries: np.ndarray, kind: str) -> None:
        """Each approximate kind finds most of the exact top 50 on clustered data."""
        truth, _ = exact.search_indices(queries, 50)
        found, _ = indexes[kind].search_indices(queries, 50)
        assert recall(found, truth) >= RECALL_FLOORS[kind]

    @pytest.mark.parametrize("kind", list(KIND_OPTIONS))
    def test_exclusion_keeps_k_valid_items(self, indexes: dict[str, ItemIndex], exact: ItemIndex, queries: np.ndarray, kind: str) -> None:
        """With each query's exact top 30 and random items excluded, every row still has k valid, allowed, distinct items."""
        k = 40
        best, _ = exact.search_indices(queries, 30)
        random_part = random_exclusion(np.random.default_rng(3), len(queries), N_ITEMS, max_count=300)
        rows = np.repeat(np.arange(len(queries)), 30)
        top_part = sp.csr_matrix((np.ones(rows.size), (rows, best.ravel())), shape=random_part.shape)
        exclude = (random_part + top_part).tocsr()
        indices, scores = indexes[kind].search_indices(queries, k, exclude)
        assert indices.shape == (len(queries), k)
        assert np.all((indices >= 0) & (indices < N_ITEMS))
        assert np.all(np.isfinite(scores))
        for row in range(len(queries)):
            blocked = set(exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]].tolist())
            assert not set(indices[row].tolist()) & blocked
            assert len(set(indices[row].tolist())) == k

    @pytest.mark.parametrize("kind", list(KIND_OPTIONS))
    def test_rows_sorted_best_first(self, indexes: dict[str, ItemIndex], queries: np.ndarray, kind: str) -> None:
        _, scores = indexes[kind].search_indices(queries, 25)
        assert np.all(np.diff(scores, axis=1) <= 0)

    def test_narrow_probe_widens_short_rows(self, indexes: dict[str, ItemIndex], queries: np.ndarray) -> None:
        """nprobe=1 reaches one list of about 78 items; rows of k=500 are widened until full."""
        indices, _ = indexes["ivf_flat"].search_indices(queries, 500, nprobe=1)
        assert np.all(indices >= 0)
        assert all(len(set(row.tolist())) == 500 for row in indices)

    def test_whole_catalogue_from_hnsw(self, indexes: dict[str, ItemIndex], queries: np.ndarray) -> None:
        """k equal to the items left after exclusion returns exactly those items."""
        exclude = random_exclusion(np.random.default_rng(4), 2, N_ITEMS, max_count=50)
        left = N_ITEMS - np.diff(exclude.indptr)
        indices, _ = indexes["hnsw"].search_indices(queries[:2], N_ITEMS, exclude)
        for row in range(2):
            blocked = exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]
            assert sorted(indices[row, : left[row]].tolist()) == sorted(set(range(N_ITEMS)) - set(blocked.tolist()))
            assert np.all(indices[row, left[row] :] == -1)

    def test_reconstruction_fallback(self, items: np.ndarray) -> None:
        """A refined IVF search probes one list even when asked for every item; the rest is ranked over reconstructed vectors."""
        refined = ItemIndex(items[:2000], IdMap(np.arange(2000)), kind="factory", factory="IVF16,Flat,RFlat", device="cpu")
        exact = ItemIndex(items[:2000], IdMap(np.arange(2000)), device="cpu")
        query = items[:1] * 5.0
        exclude = sp.csr_matrix((np.ones(3), ([0, 0, 0], [0, 1, 2])), shape=(1, 2000))
        indices, scores = refined.search_indices(query, 1997, exclude)
        expected, expected_scores = exact.search_indices(query, 1997, exclude)
        assert sorted(indices[0].tolist()) == sorted(expected[0].tolist())
        np.testing.assert_allclose(np.sort(scores[0]), np.sort(expected_scores[0]), atol=1e-4)

    @pytest.mark.parametrize("kind", list(KIND_OPTIONS))
    def test_properties(self, indexes: dict[str, ItemIndex], kind: str) -> None:
        index = indexes[kind]
        assert index.kind == kind
        assert not index.is_exact
        assert index.backend == "faiss-cpu"
        assert index.parameters == {name: value for name, value in KIND_OPTIONS[kind].items()}
        assert repr(index).startswith(f"ItemIndex(kind={kind!r}, metric='inner_product', n_items={N_ITEMS}, dimension={DIMENSION}, ")

    @pytest.mark.parametrize(("kind", "metric"), [("hnsw", "l2"), ("ivf_flat", "l2"), ("hnsw", "cosine"), ("ivf_flat", "cosine")])
    def test_other_metrics(self, items: np.ndarray, queries: np.ndarray, kind: str, metric: str) -> None:
        """L2 and cosine indexes of each structure reach the same recall floor against exact search with that metric."""
        # Item norms from 0.5 to 2 make L2, cosine and inner product rank differently.
        sample = items[:4000] * np.linspace(0.5, 2.0, 4000, dtype=np.float32)[:, None]
        options = {**KIND_OPTIONS[kind], "nlist": 64} if kind == "ivf_flat" else KIND_OPTIONS[kind]
        exact = ItemIndex(sample, IdMap(np.arange(4000)), metric=metric, device="cpu")
        approximate = ItemIndex(sample, IdMap(np.arange(4000)), metric=metric, kind=kind, device="cpu", **options)  # type: ignore[arg-type]
        assert approximate.faiss_index.metric_type == (faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        truth, _ = exact.search_indices(queries / 5.0, 20)
        found, _ = approximate.search_indices(queries / 5.0, 20)
        assert recall(found, truth) >= RECALL_FLOORS[kind]


class TestSearchWidths:
    def test_nprobe_changes_results_not_state(self, indexes: dict[str, ItemIndex], exact: ItemIndex, queries: np.ndarray) -> None:
        """A wider probe per call finds more of the true top k, and the shared index keeps its nprobe."""
        index = indexes["ivf_flat"]
        truth, _ = exact.search_indices(queries, 50)
        before, _ = index.search_indices(queries, 50)
        narrow, _ = index.search_indices(queries, 50, nprobe=2)
        wide, _ = index.search_indices(queries, 50, nprobe=128)
        after, _ = index.search_indices(queries, 50)
        assert recall(narrow, truth) < recall(wide, truth)
        assert recall(wide, truth) == 1.0
        assert np.array_equal(before, after)
        assert faiss.extract_index_ivf(index.faiss_index).nprobe == 8

    def test_ef_search_changes_results_not_state(self, indexes: dict[str, ItemIndex], exact: ItemIndex, queries: np.ndarray) -> None:
        index = indexes["hnsw"]
        truth, _ = exact.search_indices(queries, 10)
        narrow, _ = index.search_indices(queries, 10, ef_search=10)
        wide, _ = index.search_indices(queries, 10, ef_search=400)
        assert recall(narrow, truth) < recall(wide, truth)
        assert index.faiss_index.hnsw.efSearch == 64

    def test_factory_nprobe_through_pretransform(self, indexes: dict[str, ItemIndex], exact: ItemIndex, queries: np.ndarray) -> None:
        """nprobe reaches the IVF index inside a random-rotation pre-transform."""
        truth, _ = exact.search_indices(queries, 50)
        narrow, _ = indexes["factory"].search_indices(queries, 50, nprobe=1)
        wide, _ = indexes["factory"].search_indices(queries, 50, nprobe=128)
        assert recall(narrow, truth) < recall(wide, truth)
        assert recall(wide, truth) == 1.0

    def test_threads_with_different_widths(self, indexes: dict[str, ItemIndex], queries: np.ndarray) -> None:
        """8 threads searching with alternating nprobe each get exactly the serial result of their nprobe."""
        index = indexes["ivf_flat"]
        expected = {nprobe: index.search_indices(queries, 20, nprobe=nprobe) for nprobe in (1, 16)}
        failures: list[int] = []
        lock = threading.Lock()

        def worker(nprobe: int) -> None:
            for _ in range(5):
                indices, scores = index.search_indices(queries, 20, nprobe=nprobe)
                if not (np.array_equal(indices, expected[nprobe][0]) and np.array_equal(scores, expected[nprobe][1])):
                    with lock:
                        failures.append(nprobe)

        threads = [threading.Thread(target=worker, args=(1 if number % 2 else 16,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []

    @pytest.mark.parametrize(
        ("kind", "options", "message"),
        [
            ("hnsw", {"nprobe": 4}, "nprobe applies to IVF indexes (kinds 'ivf_flat', 'ivf_pq' or an IVF factory string), not to this 'hnsw' index. Remove nprobe."),
            ("ivf_flat", {"ef_search": 4}, "ef_search applies to HNSW indexes (kind 'hnsw' or an HNSW factory string), not to this 'ivf_flat' index. Remove ef_search."),
            ("ivf_flat", {"nprobe": 129}, "nprobe must be an integer from 1 to nlist=128, got 129."),
            ("ivf_flat", {"nprobe": 0}, "nprobe must be an integer from 1 to nlist=128, got 0."),
            ("hnsw", {"ef_search": 0}, "ef_search must be a positive integer, got 0."),
        ],
    )
    def test_invalid_widths(self, indexes: dict[str, ItemIndex], queries: np.ndarray, kind: str, options: dict[str, int], message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            indexes[kind].search_indices(queries, 5, **options)  # type: ignore[arg-type]

    def test_width_on_flat(self, exact: ItemIndex, queries: np.ndarray) -> None:
        with pytest.raises(ValueError, match=re.escape("nprobe applies to IVF indexes (kinds 'ivf_flat', 'ivf_pq' or an IVF factory string), not to this 'flat' index.")):
            exact.search(queries[0], 5, nprobe=4)


class TestAutoKind:
    def test_thresholds(self) -> None:
        """Exact search below 100,000 items, IVF with default lists from there on."""
        assert AUTO_EXACT_MAX_ITEMS == 100_000
        assert resolve_settings("auto", "inner_product", 99_999, 64, {}).kind == "flat"
        large = resolve_settings("auto", "inner_product", 100_000, 64, {})
        assert (large.kind, large.nlist, large.nprobe) == ("ivf_flat", 1024, 32)
        huge = resolve_settings("auto", "cosine", 1_000_000, 64, {})
        assert (huge.kind, huge.nlist, huge.nprobe) == ("ivf_flat", 4096, 128)

    def test_small_catalogue_is_exact(self, items: np.ndarray) -> None:
        index = ItemIndex(items[:500], IdMap(np.arange(500)), kind="auto", device="cpu")
        assert index.kind == "flat"
        assert index.is_exact

    def test_large_catalogue_builds_ivf(self) -> None:
        vectors = np.random.default_rng(2).normal(size=(AUTO_EXACT_MAX_ITEMS, 4)).astype(np.float32)
        index = ItemIndex(vectors, IdMap(np.arange(AUTO_EXACT_MAX_ITEMS)), kind="auto", device="cpu")
        assert index.kind == "ivf_flat"
        assert index.parameters == {"nlist": 1024, "nprobe": 32}

    def test_options_rejected(self, items: np.ndarray) -> None:
        message = "options ['nlist'] do not apply to kind 'auto', which accepts no options. kind='auto' chooses every parameter itself; pass an explicit kind to set them."
        with pytest.raises(ValueError, match=re.escape(message)):
            ItemIndex(items, IdMap(np.arange(N_ITEMS)), kind="auto", nlist=16, device="cpu")

    @pytest.mark.parametrize(("n_items", "expected"), [(1, 1), (100, 2), (1_000, 16), (10_000, 256), (100_000, 1024), (1_000_000, 4096)])
    def test_default_nlist(self, n_items: int, expected: int) -> None:
        """Power of two near 4 sqrt(n), lowered to keep 39 training points per list."""
        assert default_nlist(n_items) == expected

    def test_default_nprobe(self) -> None:
        assert [default_nprobe(nlist) for nlist in (1, 4, 256, 1024, 4096)] == [1, 4, 8, 32, 128]


class TestBuildErrors:
    def test_ivf_too_few_items(self, items: np.ndarray, capfd: pytest.CaptureFixture[str]) -> None:
        """An explicit nlist beyond n_items / 39 raises instead of training poor centroids."""
        message = (
            "nlist=64 is too many IVF lists for 1000 items: k-means needs at least 39 items per list (2496 items). "
            "Pass nlist <= 25, leave nlist unset for the default, or use kind='flat' or 'hnsw'."
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            ItemIndex(items[:1000], IdMap(np.arange(1000)), kind="ivf_flat", nlist=64, device="cpu")
        with pytest.raises(ValueError, match=re.escape(message)):
            ItemIndex(items[:1000], IdMap(np.arange(1000)), kind="factory", factory="IVF64,Flat", device="cpu")

    def test_default_nlist_fits_small_catalogue(self, items: np.ndarray, capfd: pytest.CaptureFixture[str]) -> None:
        """The default nlist is lowered so that FAISS k-means prints no warning about too few points."""
        index = ItemIndex(items[:1000], IdMap(np.arange(1000)), kind="ivf_flat", device="cpu")
        assert index.parameters == {"nlist": 16, "nprobe": 8}
        assert "WARNING clustering" not in capfd.readouterr().err

    def test_ivf_below_one_list(self, items: np.ndarray) -> None:
        """Fewer items than one list needs cannot train IVF even with the default nlist."""
        with pytest.raises(ValueError, match=re.escape("IVF training needs at least 39 items (k-means points per list), got 20. Use kind='flat' or 'hnsw'.")):
            ItemIndex(items[:20], IdMap(np.arange(20)), kind="ivf_flat", device="cpu")

    def test_pq_too_few_items(self, items: np.ndarray) -> None:
        message = "pq_bits=8 trains 256 centroids per PQ sub-quantizer and needs at least 9984 items (39 per centroid), got 1000. Pass pq_bits <= 4, or use kind='ivf_flat', 'hnsw' or 'flat'."
        with pytest.raises(ValueError, match=re.escape(message)):
            ItemIndex(items[:1000], IdMap(np.arange(1000)), kind="ivf_pq", device="cpu")

    @pytest.mark.parametrize(
        ("kind", "options", "message"),
        [
            ("annoy", {}, "unknown index kind 'annoy': expected one of ['flat', 'hnsw', 'ivf_flat', 'ivf_pq', 'factory', 'auto']. For a FAISS index_factory string pass kind='factory', factory='annoy'."),
            ("hnsw", {"nlist": 16}, "options ['nlist'] do not apply to kind 'hnsw', which accepts ['hnsw_m', 'ef_construction', 'ef_search']."),
            ("flat", {"factory": "Flat"}, "options ['factory'] do not apply to kind 'flat', which accepts no options."),
            ("ivf_flat", {"nprobe": 64, "nlist": 32}, "nprobe=64 exceeds nlist=32: an IVF index cannot probe more lists than it has. Pass nprobe <= 32."),
            ("ivf_pq", {"pq_m": 5}, "pq_m=5 does not divide the dimension 32: each PQ sub-quantizer encodes dimension / pq_m components. Pass a divisor of 32."),
            ("hnsw", {"hnsw_m": 0}, "hnsw_m must be a positive integer, got 0."),
            ("factory", {}, "kind='factory' needs factory=<faiss.index_factory string>, for example factory='OPQ16,IVF256,PQ16', got None."),
            ("factory", {"factory": "IDMap,Flat"}, "factory string 'IDMap,Flat' contains an IDMap, but ItemIndex maps FAISS labels to item ids itself. Remove the 'IDMap' component."),
            ("factory", {"factory": "HNSW16", "nprobe": 4}, "nprobe applies to IVF indexes, but factory string 'HNSW16' builds a IndexHNSWFlat. Remove nprobe."),
            ("factory", {"factory": "NotAStructure"}, "faiss.index_factory rejected 'NotAStructure' for dimension 32"),
        ],
    )
    def test_invalid_options(self, items: np.ndarray, kind: str, options: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            ItemIndex(items[:2000], IdMap(np.arange(2000)), kind=kind, device="cpu", **options)  # type: ignore[arg-type]


class TestSaveLoadKinds:
    @pytest.mark.parametrize("kind", list(KIND_OPTIONS))
    def test_round_trip(self, indexes: dict[str, ItemIndex], queries: np.ndarray, kind: str, tmp_path: Path) -> None:
        """A loaded index of each kind returns exactly what the saved one returned, with the same default and per-call widths."""
        index = indexes[kind]
        index.save(tmp_path)
        loaded = ItemIndex.load(tmp_path, device="cpu")
        assert (loaded.kind, loaded.metric, loaded.parameters, loaded.n_items) == (kind, "inner_product", index.parameters, N_ITEMS)
        exclude = random_exclusion(np.random.default_rng(8), len(queries), N_ITEMS, max_count=40)
        for expected, found in zip(index.search_indices(queries, 30, exclude), loaded.search_indices(queries, 30, exclude)):
            assert np.array_equal(expected, found)
        manifest = json.loads((tmp_path / "index.json").read_text())
        assert manifest["kind"] == kind
        assert manifest["parameters"] == index.parameters

    def test_round_trip_widths(self, indexes: dict[str, ItemIndex], queries: np.ndarray, tmp_path: Path) -> None:
        indexes["ivf_pq"].save(tmp_path)
        loaded = ItemIndex.load(tmp_path, device="cpu")
        for expected, found in zip(indexes["ivf_pq"].search_indices(queries, 30, nprobe=3), loaded.search_indices(queries, 30, nprobe=3)):
            assert np.array_equal(expected, found)

    def test_round_trip_l2(self, items: np.ndarray, queries: np.ndarray, tmp_path: Path) -> None:
        index = ItemIndex(items[:3000], IdMap(np.arange(3000)), metric="l2", kind="ivf_flat", device="cpu")
        index.save(tmp_path)
        loaded = ItemIndex.load(tmp_path, device="cpu")
        assert loaded.metric == "l2"
        for expected, found in zip(index.search_indices(queries, 10), loaded.search_indices(queries, 10)):
            assert np.array_equal(expected, found)

    def test_manifest_without_parameters(self, exact: ItemIndex, queries: np.ndarray, tmp_path: Path) -> None:
        """A version-1 flat folder from before index kinds (no "parameters" key) still loads."""
        exact.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        del manifest["parameters"]
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        loaded = ItemIndex.load(tmp_path, device="cpu")
        assert (loaded.kind, loaded.parameters) == ("flat", {})
        assert np.array_equal(loaded.search_indices(queries, 5)[0], exact.search_indices(queries, 5)[0])

    def test_structure_mismatch(self, exact: ItemIndex, tmp_path: Path) -> None:
        """A manifest that names another kind than the FAISS file contains is rejected."""
        exact.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        manifest["kind"] = "hnsw"
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=re.escape(f"item index file {tmp_path / 'index.faiss'} contains a IndexFlatIP, expected IndexHNSWFlat for kind 'hnsw'.")):
            ItemIndex.load(tmp_path, device="cpu")

    def test_metric_mismatch(self, exact: ItemIndex, tmp_path: Path) -> None:
        exact.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        manifest["metric"] = "l2"
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=re.escape("contains a IndexFlatIP, expected IndexFlatL2 for kind 'flat'.")):
            ItemIndex.load(tmp_path, device="cpu")

    def test_unknown_parameter(self, exact: ItemIndex, tmp_path: Path) -> None:
        exact.save(tmp_path)
        manifest = json.loads((tmp_path / "index.json").read_text())
        manifest["parameters"] = {"trees": 10}
        (tmp_path / "index.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=re.escape("parameters {'trees': 10} are not valid for kind 'flat'. Save the index again.")):
            ItemIndex.load(tmp_path, device="cpu")
