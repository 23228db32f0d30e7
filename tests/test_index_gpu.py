"""Tests of device choice, the torch exact-search backend (run on the CPU device) and the FAISS GPU path."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

from recx.data.idmap import IdMap
from recx.index import ItemIndex, gpu
from recx.index.gpu import GPU_MAX_K, TorchBackend, choose_backend, faiss_gpu_count
from recx.index.kinds import SearchKnobs

N_ITEMS, DIMENSION = 500, 8

NO_FAISS_GPU = "needs faiss-gpu and a CUDA device; the pinned install is faiss-cpu and this machine has no GPU"


def torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_ITEMS, DIMENSION)).astype(np.float32)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(30, DIMENSION)).astype(np.float32)


class TestTorchBackend:
    @pytest.mark.parametrize("metric", ["inner_product", "cosine", "l2"])
    def test_matches_faiss_flat(self, items: np.ndarray, queries: np.ndarray, metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """ItemIndex on the torch backend returns the items of the FAISS flat index, with exclusions, in batches of 7 rows."""
        monkeypatch.setattr(gpu, "_TORCH_DEVICE", "cpu")
        monkeypatch.setattr(gpu, "torch_cuda_available", lambda: True)
        monkeypatch.setattr(gpu, "_TORCH_BATCH_ELEMENTS", 7 * N_ITEMS)
        on_torch = ItemIndex(items, IdMap(np.arange(N_ITEMS)), metric=metric, device="auto")
        on_faiss = ItemIndex(items, IdMap(np.arange(N_ITEMS)), metric=metric, device="cpu")
        assert on_torch.backend == "torch-cuda"
        assert on_faiss.backend == "faiss-cpu"
        exclude = sp.random(len(queries), N_ITEMS, density=0.05, format="csr", random_state=3)
        found, found_scores = on_torch.search_indices(queries, 40, exclude)
        expected, expected_scores = on_faiss.search_indices(queries, 40, exclude)
        assert np.array_equal(found, expected)
        np.testing.assert_allclose(found_scores, expected_scores, rtol=1e-4, atol=1e-4)

    def test_k_beyond_faiss_gpu_limit(self) -> None:
        """torch.topk has no k limit: k above 2048 returns every requested item."""
        vectors = np.random.default_rng(2).normal(size=(GPU_MAX_K + 100, 4)).astype(np.float32)
        backend = TorchBackend(vectors, "inner_product", device="cpu")
        scores, labels = backend.search(vectors[:2], GPU_MAX_K + 50, SearchKnobs())
        assert labels.shape == (2, GPU_MAX_K + 50)
        expected = np.sort(vectors[:2] @ vectors.T, axis=1)[:, ::-1][:, : GPU_MAX_K + 50]
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
        assert all(len(set(row.tolist())) == GPU_MAX_K + 50 for row in labels)

    def test_loaded_index_on_torch(self, items: np.ndarray, queries: np.ndarray, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gpu, "_TORCH_DEVICE", "cpu")
        monkeypatch.setattr(gpu, "torch_cuda_available", lambda: True)
        index = ItemIndex(items, IdMap(np.arange(N_ITEMS)), device="cpu")
        index.save(tmp_path)  # type: ignore[arg-type]
        loaded = ItemIndex.load(tmp_path, device="cuda")  # type: ignore[arg-type]
        assert loaded.backend == "torch-cuda"
        assert np.array_equal(loaded.search_indices(queries, 10)[0], index.search_indices(queries, 10)[0])


class TestDeviceChoice:
    def test_cpu_always_faiss_cpu(self) -> None:
        assert choose_backend("cpu", "flat") == "faiss-cpu"
        assert choose_backend("cpu", "hnsw") == "faiss-cpu"

    def test_unknown_device(self) -> None:
        with pytest.raises(ValueError, match=re.escape("unknown device 'gpu': expected one of ['auto', 'cpu', 'cuda'].")):
            choose_backend("gpu", "flat")

    @pytest.mark.skipif(faiss_gpu_count() > 0, reason="checks the choice on a machine without faiss-gpu")
    def test_auto_without_any_gpu(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gpu, "torch_cuda_available", lambda: False)
        assert choose_backend("auto", "flat") == "faiss-cpu"
        assert choose_backend("auto", "ivf_flat") == "faiss-cpu"

    @pytest.mark.skipif(faiss_gpu_count() > 0, reason="checks the choice on a machine without faiss-gpu")
    def test_torch_only_serves_flat(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With CUDA through torch but no faiss-gpu, approximate kinds stay on the CPU under auto and raise under cuda."""
        monkeypatch.setattr(gpu, "torch_cuda_available", lambda: True)
        assert choose_backend("auto", "flat") == "torch-cuda"
        assert choose_backend("auto", "hnsw") == "faiss-cpu"
        message = "device='cuda' needs faiss-gpu with a visible GPU (any kind but 'hnsw'), or torch with CUDA (kind 'flat' only); found neither for kind 'ivf_flat'. Use device='cpu' or device='auto'."
        with pytest.raises(ValueError, match=re.escape(message)):
            choose_backend("cuda", "ivf_flat")

    @pytest.mark.skipif(faiss_gpu_count() > 0, reason="checks the choice on a machine without faiss-gpu")
    def test_cuda_without_gpu(self, items: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gpu, "torch_cuda_available", lambda: False)
        with pytest.raises(ValueError, match=re.escape("device='cuda' needs faiss-gpu with a visible GPU")):
            ItemIndex(items, IdMap(np.arange(N_ITEMS)), device="cuda")


class TestWithoutTorch:
    def test_cpu_search_never_imports_torch(self) -> None:
        """recx.index imports, builds, searches, saves and loads on the CPU without importing torch."""
        script = textwrap.dedent(
            """
            import sys, tempfile
            import numpy as np
            from recx.index import ItemIndex
            index = ItemIndex(np.eye(4, dtype=np.float32), [1, 2, 3, 4], device="cpu")
            ids, _ = index.search(np.ones(4, dtype=np.float32), 2)
            with tempfile.TemporaryDirectory() as folder:
                index.save(folder)
                ItemIndex.load(folder, device="cpu").search(np.ones(4, dtype=np.float32), 2)
            print("torch" in sys.modules)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "False"

    def test_auto_device_without_torch_installed(self) -> None:
        """device='auto' falls back to FAISS on the CPU when torch cannot be imported."""
        script = textwrap.dedent(
            """
            import sys
            sys.modules["torch"] = None  # makes `import torch` raise ImportError, as when it is not installed
            import numpy as np
            from recx.index import ItemIndex
            print(ItemIndex(np.eye(4, dtype=np.float32), [1, 2, 3, 4]).backend)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "faiss-cpu"


@pytest.mark.skipif(faiss_gpu_count() == 0, reason=NO_FAISS_GPU)
class TestFaissGpu:
    @pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
    def test_matches_cpu(self, kind: str) -> None:
        vectors = np.random.default_rng(4).normal(size=(5000, 16)).astype(np.float32)
        on_gpu = ItemIndex(vectors, IdMap(np.arange(5000)), kind=kind, device="cuda")
        on_cpu = ItemIndex(vectors, IdMap(np.arange(5000)), kind=kind, device="cpu")
        assert on_gpu.backend == "faiss-gpu"
        found, _ = on_gpu.search_indices(vectors[:20], 50)
        expected, _ = on_cpu.search_indices(vectors[:20], 50)
        overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(found.tolist(), expected.tolist())])
        # GPU and CPU k-means train different IVF centroids, so only flat is compared exactly.
        assert overlap == 1.0 if kind == "flat" else overlap >= 0.9

    def test_k_above_gpu_limit_uses_cpu_copy(self) -> None:
        vectors = np.random.default_rng(5).normal(size=(GPU_MAX_K + 500, 8)).astype(np.float32)
        on_gpu = ItemIndex(vectors, IdMap(np.arange(len(vectors))), device="cuda")
        indices, _ = on_gpu.search_indices(vectors[:3], GPU_MAX_K + 100)
        assert np.all(indices >= 0)

    def test_hnsw_rejected_on_cuda(self) -> None:
        with pytest.raises(ValueError, match=re.escape("kind 'hnsw' has no FAISS GPU version.")):
            ItemIndex(np.eye(8, dtype=np.float32), np.arange(8), kind="hnsw", device="cuda")


@pytest.mark.skipif(not torch_sees_cuda(), reason="needs torch with a CUDA device; this machine runs the CPU build of torch")
def test_torch_backend_on_cuda(items: np.ndarray, queries: np.ndarray) -> None:
    backend = TorchBackend(items, "inner_product", device="cuda")
    scores, labels = backend.search(queries, 10, SearchKnobs())
    expected = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    assert np.array_equal(labels, expected)
