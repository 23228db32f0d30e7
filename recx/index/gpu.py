"""GPU search: FAISS GPU indexes when faiss-gpu is installed, exact torch search when only torch finds CUDA.

torch is imported inside the functions that need it, never at module
level, so :mod:`recx.index` imports and searches on the CPU in processes
without torch.

NOTE: the machines recx is tested on have no GPU, so the code paths here
that need faiss-gpu or CUDA have not run in the test suite. The torch
search itself is tested on the CPU device.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import faiss
import numpy as np

from recx.index.backends import DEVICES, FaissCpuBackend, scores_from_distances
from recx.index.kinds import IndexSettings, SearchKnobs, build_faiss_index, faiss_search_parameters

logger = logging.getLogger(__name__)

__all__ = ["GPU_MAX_K", "GPU_MAX_NPROBE", "FaissGpuBackend", "TorchBackend", "build_on_device", "choose_backend", "faiss_gpu_count", "place_loaded", "torch_cuda_available"]

#: Largest k (and nprobe) that FAISS GPU indexes accept: GPU_MAX_SELECTION_K in
#: faiss/gpu/utils/DeviceDefs.cuh (2048 on CUDA since FAISS 1.7.3). Searches that
#: need more go to the CPU copy of the index, which returns the same items.
GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048

#: Kinds that FAISS can copy to a GPU; FAISS has no GPU HNSW.
FAISS_GPU_KINDS: tuple[str, ...] = ("flat", "ivf_flat", "ivf_pq", "factory")

# Scores computed per torch batch: 2**27 float32 values are 512 MiB of GPU memory.
_TORCH_BATCH_ELEMENTS = 2**27

# The torch device of the "torch-cuda" backend; tests set "cpu" to run it without a GPU.
_TORCH_DEVICE = "cuda"


def faiss_gpu_count() -> int:
    """Return the number of GPUs FAISS can use: 0 with the faiss-cpu build."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def torch_cuda_available() -> bool:
    """Check whether torch is installed and finds a CUDA device; this imports torch when it is installed."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_backend(device: str, kind: str) -> str:
    """Pick where an index of ``kind`` searches.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        "cpu" always gives "faiss-cpu". "auto" and "cuda" give "faiss-gpu"
        when ``faiss.get_num_gpus()`` is above 0 and FAISS has a GPU version
        of the kind, else "torch-cuda" for kind "flat" when torch finds CUDA. Where neither
        applies, "auto" falls back to "faiss-cpu" and "cuda" raises.
        "auto" checks torch for CUDA only when faiss-gpu is absent, and that
        check imports torch if it is installed. Pass "cpu" to keep torch out.

    Returns
    -------
    str
        "faiss-cpu", "faiss-gpu" or "torch-cuda".
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {list(DEVICES)}.")
    if device == "cpu":
        return "faiss-cpu"
    gpus = faiss_gpu_count()
    if gpus > 0 and kind in FAISS_GPU_KINDS:
        return "faiss-gpu"
    if kind == "flat" and torch_cuda_available():
        return "torch-cuda"
    if device == "cuda":
        if gpus > 0:
            raise ValueError(f"kind {kind!r} has no FAISS GPU version. Use device='cpu', or kind 'flat', 'ivf_flat' or 'ivf_pq' on the GPU.")
        raise ValueError(
            f"device='cuda' needs faiss-gpu with a visible GPU (any kind but 'hnsw'), or torch with CUDA (kind 'flat' only); "
            f"found neither for kind {kind!r}. Use device='cpu' or device='auto'."
        )
    return "faiss-cpu"


def train_on_gpu(index: faiss.Index, vectors: np.ndarray, resources: Any) -> faiss.Index:
    """Train and fill ``index`` on GPU 0 and return a CPU copy, for saving and for searches beyond the GPU limits."""
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    if not gpu_index.is_trained:
        gpu_index.train(vectors)
    gpu_index.add(vectors)
    return faiss.index_gpu_to_cpu(gpu_index)


class FaissGpuBackend:
    """Search a FAISS GPU copy of a CPU index, falling back to the CPU index beyond the GPU limits.

    A search that needs more than :data:`GPU_MAX_K` results or probes more
    than :data:`GPU_MAX_NPROBE` lists runs on the CPU copy, which contains the
    same vectors and lists, so the items match up to float rounding.
    FAISS GPU resources must not be used from several threads at once, so
    GPU searches are serialised by a lock.
    """

    name = "faiss-gpu"

    def __init__(self, cpu_index: faiss.Index, metric: str, resources: Any = None) -> None:
        self.resources = resources if resources is not None else faiss.StandardGpuResources()
        self.gpu_index = faiss.index_cpu_to_gpu(self.resources, 0, cpu_index)
        self.cpu = FaissCpuBackend(cpu_index, metric)
        self.metric = metric
        self._lock = threading.Lock()

    def search(self, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs) -> tuple[np.ndarray, np.ndarray]:
        if n_fetch > GPU_MAX_K or (knobs.nprobe or 0) > GPU_MAX_NPROBE:
            logger.debug("searching the CPU copy: n_fetch=%d, nprobe=%s exceed the FAISS GPU limit %d", n_fetch, knobs.nprobe, GPU_MAX_K)
            return self.cpu.search(vectors, n_fetch, knobs)
        # GPU index classes are not IndexIVF subclasses, so the parameters follow the
        # structure of the CPU copy; GpuIndexIVF reads nprobe from SearchParametersIVF.
        parameters, keep_alive = faiss_search_parameters(self.cpu.index, knobs)
        with self._lock:
            distances, labels = self.gpu_index.search(vectors, n_fetch, params=parameters)
        del keep_alive
        return scores_from_distances(distances, self.metric), labels

    def exhaustive(self, knobs: SearchKnobs, n_fetch: int) -> bool:
        return self.cpu.exhaustive(knobs, n_fetch)


class TorchBackend:
    """Exact search by matrix product and ``torch.topk``, in batches of queries.

    Used for kind "flat" when torch finds CUDA but faiss-gpu is not
    installed. ``torch.topk`` has no limit on k. Each batch scores at most
    2**27 query-item pairs, so GPU memory for scores stays near 512 MiB.

    Parameters
    ----------
    vectors : np.ndarray of shape (n_items, d), float32
        Item vectors, already normalised for metric "cosine".
    metric : str
    device : str, default="cuda"
        torch device; tests pass "cpu".
    """

    name = "torch-cuda"

    def __init__(self, vectors: np.ndarray, metric: str, device: str = "cuda") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.items = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)
        self.metric = metric
        self.item_norms = (self.items * self.items).sum(dim=1) if metric == "l2" else None

    def search(self, vectors: np.ndarray, n_fetch: int, knobs: SearchKnobs) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        n_items = self.items.shape[0]
        rows_per_batch = max(1, _TORCH_BATCH_ELEMENTS // n_items)
        scores = np.empty((len(vectors), n_fetch), dtype=np.float32)
        labels = np.empty((len(vectors), n_fetch), dtype=np.int64)
        with torch.no_grad():
            for start in range(0, len(vectors), rows_per_batch):
                queries = torch.from_numpy(vectors[start : start + rows_per_batch]).to(self.device)
                batch_scores = queries @ self.items.T
                if self.item_norms is not None:
                    # -|q - e|^2 = 2 q.e - |e|^2 - |q|^2
                    batch_scores = 2 * batch_scores - self.item_norms[None, :] - (queries * queries).sum(dim=1, keepdim=True)
                top_scores, top_labels = torch.topk(batch_scores, n_fetch, dim=1, largest=True, sorted=True)
                scores[start : start + len(queries)] = top_scores.cpu().numpy()
                labels[start : start + len(queries)] = top_labels.cpu().numpy()
        return scores, labels

    def exhaustive(self, knobs: SearchKnobs, n_fetch: int) -> bool:
        return True


def make_backend(name: str, index: faiss.Index, metric: str, resources: Any = None) -> Any:
    """Create the backend ``name`` (from :func:`choose_backend`) over the CPU ``index``."""
    if name == "faiss-gpu":
        return FaissGpuBackend(index, metric, resources)
    if name == "torch-cuda":
        return TorchBackend(index.reconstruct_n(0, index.ntotal), metric, _TORCH_DEVICE)
    return FaissCpuBackend(index, metric)


def build_on_device(settings: IndexSettings, vectors: np.ndarray, device: str) -> tuple[faiss.Index, Any]:
    """Build the index of ``settings`` over ``vectors`` on the device that ``device`` selects, and return it with its search backend.

    With faiss-gpu, training and adding run on the GPU. If FAISS cannot
    put the structure on the GPU (a factory string with GPU-less parts, PQ
    sizes without GPU kernels), ``device="auto"`` logs a warning and builds
    on the CPU, and ``device="cuda"`` raises.

    Returns
    -------
    index : faiss.Index
        The CPU index, kept for saving and for searches beyond the GPU limits.
    backend : SearchBackend
    """
    name = choose_backend(device, settings.kind)
    if name == "faiss-gpu":
        resources = faiss.StandardGpuResources()
        try:
            index = build_faiss_index(settings, vectors, trainer=lambda empty, points: train_on_gpu(empty, points, resources))
            return index, FaissGpuBackend(index, settings.metric, resources)
        except RuntimeError as error:
            if device == "cuda":
                raise ValueError(f"FAISS could not build kind {settings.kind!r} {settings.parameters()} on the GPU: {error}. Use device='cpu' or another kind.") from error
            logger.warning("FAISS could not build kind %r on the GPU (%s); building it on the CPU", settings.kind, error)
            name = "faiss-cpu"
    index = build_faiss_index(settings, vectors)
    return index, make_backend(name, index, settings.metric)


def place_loaded(index: faiss.Index, settings: IndexSettings, device: str) -> Any:
    """Return the search backend for a loaded CPU ``index``, copying it to the GPU when ``device`` selects one."""
    name = choose_backend(device, settings.kind)
    try:
        return make_backend(name, index, settings.metric)
    except RuntimeError as error:
        if device == "cuda":
            raise ValueError(f"FAISS could not copy kind {settings.kind!r} to the GPU: {error}. Use device='cpu'.") from error
        logger.warning("FAISS could not copy kind %r to the GPU (%s); searching on the CPU", settings.kind, error)
        return FaissCpuBackend(index, settings.metric)
