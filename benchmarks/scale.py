"""Speed and memory at scale: recx's two-tower against plain PyTorch, ingestion, the item index at 1M items, one epoch over 20M interactions.

Usage (from the repository root, after `make setup`)::

    nice -n 10 .venv/bin/python benchmarks/scale.py                   # every stage; rewrites docs/scale.md
    nice -n 10 .venv/bin/python benchmarks/scale.py --stages epoch    # some stages; the others keep their previous results
    .venv/bin/python benchmarks/scale.py --quick                      # small sizes, a few minutes; results under /tmp, no docs

Stages, each in its own child process so that its peak memory is its own
(``ru_maxrss`` of the child from ``os.wait4``, plus a thread sampling the
child's anonymous resident memory):

``synth``
    Write the synthetic log (200k users, 1M items, 20M interactions, seed 0)
    to Parquet in ``--data-dir`` with :mod:`recx.data.synthetic`.
``ingest``
    Read it in chunks into a memory-mapped CSR store (:func:`recx.data.streaming.ingest`).
``features``
    Time the user tower's input (history and recent-item bags) of training
    batches on the store, with long histories sampled directly (recx's
    ``FeatureBuilder``) and read whole, as it did before.
``throughput``
    Training examples per second of recx against a plain PyTorch two-tower
    (``torch.nn.EmbeddingBag`` towers, the same features, loss and batch
    size). Each implementation lives in its own warm child process, and the
    two take turns, one unit of training each per round, so that load from
    other jobs hits both alike; each child's peak memory is its own.
    Two comparisons: ``dense``, recx's default single-process ``Trainer``
    (dense gradients, Adam everywhere) on a 50k-item log; ``sparse``, recx's
    ``ShardedTrainer`` in one process (FBGEMM's fused Adagrad on the tables,
    Adam on the MLPs) on the 1M-item store, against ``EmbeddingBag(sparse=True)``
    with torch's sparse Adagrad and Adam.
``epoch``
    One epoch of ``ShardedTrainer`` over the whole 20M store, read memory-mapped,
    then the item embeddings of the trained model for the index stage.
``index``
    Build time and memory of ``ItemIndex`` at 1M items (exact and the kind
    ``"auto"`` chooses), on the embeddings of the ``epoch`` stage.

Outputs in ``--output`` (default ``benchmarks/results/scale``): ``results.json``,
``results.md``, ``throughput.png`` and ``memory.png``. A full run also rewrites
the marked section of ``docs/scale.md``. The device is recorded: on a machine
with CUDA the same command measures the GPU (and bf16) paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOCS_PAGE = REPO / "docs" / "scale.md"
DOCS_START = "<!-- benchmarks/scale.py: start -->"
DOCS_END = "<!-- benchmarks/scale.py: end -->"

#: recx must train at least this share of the plain PyTorch throughput.
TARGET_RATIO = 0.9
#: The 20M-interaction epoch must fit in this much resident memory.
MEMORY_LIMIT_GIB = 8.0
GIB = 1024**3

STAGES = ("synth", "ingest", "features", "throughput", "epoch", "index")

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "synthetic": {"n_users": 200_000, "n_items": 1_000_000, "n_interactions": 20_000_000, "seed": 0},
        "dense": {"n_users": 20_000, "n_items": 50_000, "n_interactions": 100_000, "seed": 1},
        "sparse_steps": 100,
        "rounds": 7,
        "feature_batches": 20,
        "chunk_rows": 2_000_000,
    },
    "quick": {
        "synthetic": {"n_users": 20_000, "n_items": 100_000, "n_interactions": 1_000_000, "seed": 0},
        "dense": {"n_users": 4_000, "n_items": 10_000, "n_interactions": 40_000, "seed": 1},
        "sparse_steps": 20,
        "rounds": 2,
        "feature_batches": 5,
        "chunk_rows": 200_000,
    },
}

#: Model and training settings shared by recx and the plain implementation (recx's defaults).
EMBEDDING_DIM, HIDDEN_DIM, OUTPUT_DIM, TEMPERATURE = 64, 128, 64, 0.1
RECENT_ITEMS, MAX_HISTORY, BATCH_SIZE = 5, 10, 1024
#: recx's default learning rate (Adam) for the dense comparison; the sparse
#: comparison and the epoch use one rate for Adagrad tables and Adam MLPs.
DENSE_LR, SPARSE_LR = 0.003, 0.01

logger = logging.getLogger("benchmarks.scale")


# ------------------------------------------------------------------ memory


def _status() -> dict[str, int]:
    """Return the memory lines of /proc/self/status in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0]) * 1024
    return values


class MemorySampler(threading.Thread):
    """Sample this process's resident memory every ``interval`` seconds and keep the peaks.

    ``RssAnon`` is memory only this process holds; ``RssFile`` includes pages
    of memory-mapped files, which the kernel can drop and read again.
    """

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = 0
        self.peak_rss = 0
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.is_set():
            values = _status()
            self.peak_anon = max(self.peak_anon, values.get("RssAnon", 0))
            self.peak_rss = max(self.peak_rss, values.get("VmRSS", 0))
            self._finished.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self._finished.set()
        self.join()
        values = _status()
        return {"peak_rss_bytes": max(self.peak_rss, values.get("VmHWM", 0)), "peak_anon_bytes": max(self.peak_anon, values.get("RssAnon", 0))}


def run_child(stage: str, arguments: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one stage in a child process and return its result with its peak memory."""
    with tempfile.TemporaryDirectory(prefix="recx-scale-") as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--child-arguments", json.dumps(arguments), "--child-output", str(output), "--threads", str(threads)]
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        logger.info("stage %s starts in a child process", stage)
        started = time.perf_counter()
        process = subprocess.Popen(command, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"stage {stage} failed with exit status {process.returncode}; its error is printed above.")
        result = json.loads(output.read_text())
    result["child_seconds"] = round(time.perf_counter() - started, 2)
    # ru_maxrss is in kilobytes on Linux.
    result["peak_rss_bytes"] = max(result.get("peak_rss_bytes", 0), int(usage.ru_maxrss) * 1024)
    return result


# ------------------------------------------------------- plain PyTorch model


def plain_classes() -> tuple[type, type]:
    """Return the plain PyTorch two-tower and its feature builder (defined here so that torch loads only in children)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PlainTower(nn.Module):
        """``EmbeddingBag`` lookups, concatenated, then an MLP and L2 normalisation."""

        def __init__(self, tables: list[tuple[int, str]], sparse: bool, scale: float = 1.0) -> None:
            super().__init__()
            self.bags = nn.ModuleList(nn.EmbeddingBag(rows, EMBEDDING_DIM, mode=mode, sparse=sparse) for rows, mode in tables)
            for bag in self.bags:
                # The initialisation TorchRec gives recx's tables.
                bound = float(bag.num_embeddings) ** -0.5
                nn.init.uniform_(bag.weight, -bound, bound)
            self.mlp = nn.Sequential(nn.Linear(EMBEDDING_DIM * len(tables), HIDDEN_DIM), nn.ReLU(), nn.Linear(HIDDEN_DIM, OUTPUT_DIM))
            self.scale = scale

        def forward(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
            pooled = [bag(values, offsets) for bag, (values, offsets) in zip(self.bags, inputs)]
            return F.normalize(self.mlp(torch.cat(pooled, dim=1)), dim=1) * self.scale

    class PlainTwoTower(nn.Module):
        """User tower: mean bags of history and recent items. Item tower: item id."""

        def __init__(self, n_items: int, sparse: bool) -> None:
            super().__init__()
            self.user_tower = PlainTower([(n_items, "mean"), (n_items, "mean")], sparse, scale=1.0 / TEMPERATURE)
            self.item_tower = PlainTower([(n_items, "sum")], sparse)

        def loss(self, user_inputs: list[Any], items: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
            """In-batch softmax with logQ correction and accidental hits masked."""
            users = self.user_tower(user_inputs)
            positives = self.item_tower([(items, torch.arange(len(items)))])
            logits = users @ positives.T - log_q[items].unsqueeze(0)
            same = items.unsqueeze(0) == items.unsqueeze(1)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
            return F.cross_entropy(logits, torch.arange(len(items)))

    class PlainFeatures:
        """History bags (about MAX_HISTORY items without the target) and the RECENT_ITEMS latest items before it."""

        def __init__(self, indptr: np.ndarray, indices: np.ndarray, timestamps: np.ndarray) -> None:
            self.indptr = np.asarray(indptr, dtype=np.int64)
            self.indices = indices
            rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
            self.time_order = np.lexsort((np.asarray(indices), np.asarray(timestamps), rows))
            self.time_rank = np.empty(len(rows), dtype=np.int64)
            self.time_rank[self.time_order] = np.arange(len(rows)) - self.indptr[rows[self.time_order]]

        def history(self, users: np.ndarray, positions: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            starts = self.indptr[users]
            sizes = self.indptr[users + 1] - starts - 1  # the target is left out
            take = np.minimum(sizes, MAX_HISTORY)
            rows = np.repeat(np.arange(len(users)), take)
            slot = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
            # Short rows: every item; long rows: MAX_HISTORY draws with replacement.
            long_rows = sizes[rows] > MAX_HISTORY
            offsets = np.where(long_rows, (rng.random(len(rows)) * sizes[rows]).astype(np.int64), slot)
            offsets = offsets + (offsets >= positions[rows] - starts[rows])
            values = self.indices[starts[rows] + offsets]
            return torch.from_numpy(np.asarray(values, dtype=np.int64)), torch.from_numpy(np.concatenate([[0], np.cumsum(take)[:-1]]).astype(np.int64))

        def recent(self, users: np.ndarray, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            first = self.indptr[users]
            end = first + self.time_rank[positions]
            start = np.maximum(first, end - RECENT_ITEMS)
            lengths = end - start
            slots = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(start, lengths)
            values = self.indices[self.time_order[slots]]
            return torch.from_numpy(np.asarray(values, dtype=np.int64)), torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))

    return PlainTwoTower, PlainFeatures


class PlainTrainer:
    """The training loop a PyTorch user would write around PlainTwoTower."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, timestamps: np.ndarray, item_counts: np.ndarray, sparse: bool, seed: int) -> None:
        import torch

        model_class, features_class = plain_classes()
        n_items = len(item_counts)
        torch.manual_seed(seed)
        self.model = model_class(n_items, sparse)
        self.features = features_class(indptr, indices, timestamps)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = indices
        counts = np.maximum(item_counts, 1).astype(np.float64)
        self.log_q = torch.from_numpy(np.log(counts / counts.sum() * BATCH_SIZE).astype(np.float32))
        tables = [parameter for name, parameter in self.model.named_parameters() if ".bags." in name]
        dense = [parameter for name, parameter in self.model.named_parameters() if ".bags." not in name]
        if sparse:
            self.optimizers = [torch.optim.Adagrad(tables, lr=SPARSE_LR, eps=1e-10), torch.optim.Adam(dense, lr=SPARSE_LR)]
        else:
            self.optimizers = [torch.optim.Adam(tables + dense, lr=DENSE_LR)]
        self.rng = np.random.default_rng(seed)
        self.nnz = int(self.indptr[-1])

    def batches(self) -> Any:
        order = self.rng.permutation(self.nnz)
        for start in range(0, self.nnz - 1, BATCH_SIZE):
            positions = order[start : start + BATCH_SIZE]
            if len(positions) >= 2:
                yield positions

    def step(self, positions: np.ndarray) -> float:
        import torch

        users = np.searchsorted(self.indptr, positions, side="right") - 1
        items = torch.from_numpy(np.asarray(self.indices[positions], dtype=np.int64))
        user_inputs = [self.features.history(users, positions, self.rng), self.features.recent(users, positions)]
        loss = self.model.loss(user_inputs, items, self.log_q)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return float(loss.item())


# ------------------------------------------------------------------- stages


def stage_synth(arguments: dict[str, Any]) -> dict[str, Any]:
    from recx.data.synthetic import SyntheticConfig, write_synthetic_parquet

    config = SyntheticConfig(**arguments["synthetic"])
    summary = write_synthetic_parquet(config, arguments["path"])
    return {"rows": summary.rows, "seconds": round(summary.seconds, 2), "file_bytes": Path(arguments["path"]).stat().st_size, "config": config.to_dict()}


def stage_ingest(arguments: dict[str, Any]) -> dict[str, Any]:
    from recx.data.streaming import ingest

    started = time.perf_counter()
    store = ingest(arguments["path"], arguments["store"], timestamp_col="timestamp", chunk_rows=arguments["chunk_rows"], overwrite=True)
    seconds = time.perf_counter() - started
    disk = sum(file.stat().st_size for file in Path(arguments["store"]).iterdir())
    return {"seconds": round(seconds, 2), "rows_per_second": round(store.nnz / seconds), "users": store.n_users, "items": store.n_items, "nnz": store.nnz, "chunk_rows": arguments["chunk_rows"], "store_bytes": disk}


def stage_features(arguments: dict[str, Any]) -> dict[str, Any]:
    """Time the user-tower input of training batches on the store, with long histories sampled and read whole."""
    import recx.models.features as features_module
    from recx.data.streaming import CsrStore, EntryBatches
    from recx.distributed.features import StoreFeatureBuilder

    store = CsrStore.open(arguments["store"])
    builder = StoreFeatureBuilder(_recx_config(store.n_users, store.n_items), store, max_history=MAX_HISTORY)
    iterator = EntryBatches(store.indptr, store.indices, BATCH_SIZE, seed=0).epoch(1)
    batches = [next(iterator) for _ in range(arguments["feature_batches"])]
    lengths = np.diff(np.asarray(store.indptr)).astype(np.float64)
    sampled_factor = features_module.LONG_BAG_FACTOR
    timings = {}
    # An unreachable factor makes FeatureBuilder read every history whole, then subsample it by coin flips.
    for label, factor in (("sampled", sampled_factor), ("whole", 10**15)):
        features_module.LONG_BAG_FACTOR = factor
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for batch in batches:
            builder.user_features(batch.users, target_positions=batch.positions, generator=rng)
        timings[label] = round((time.perf_counter() - started) / len(batches) * 1000, 2)
    features_module.LONG_BAG_FACTOR = sampled_factor
    return {"batches": len(batches), "mean_history_per_example": round(float((lengths**2).sum() / lengths.sum())), "long_bag_factor": sampled_factor, "ms_per_batch": timings}


def _recx_config(n_users: int, n_items: int) -> Any:
    from recx.models import TwoTowerConfig

    return TwoTowerConfig(n_users=n_users, n_items=n_items, embedding_dim=EMBEDDING_DIM, hidden_dims=[HIDDEN_DIM], output_dim=OUTPUT_DIM, temperature=TEMPERATURE, recent_items=RECENT_ITEMS)


def _dense_data(arguments: dict[str, Any]) -> Any:
    import pandas as pd

    from recx.data import Interactions
    from recx.data.synthetic import SyntheticConfig, iter_synthetic_blocks

    config = SyntheticConfig(max_user_items=200, n_clusters=16, **arguments["dense"])
    frame = pd.concat(list(iter_synthetic_blocks(config)), ignore_index=True)
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


def _dense_recx(data: Any) -> Any:
    """Return recx's single-process Trainer on ``data`` (Adam over every parameter, dense gradients)."""
    import torch

    from recx.models import FeatureBuilder, TwoTowerModel
    from recx.training import TrainConfig, Trainer

    torch.manual_seed(0)
    config = _recx_config(data.n_users, data.n_items)
    training = TrainConfig(epochs=1, batch_size=BATCH_SIZE, optimizer="adam", learning_rate=DENSE_LR, max_history=MAX_HISTORY, show_progress=False, device="cpu")
    # One Trainer for every epoch: its Adam state carries over, like the plain loop's.
    return Trainer(TwoTowerModel(config), FeatureBuilder(config, data, max_history=MAX_HISTORY), training)


def _dense_plain(data: Any) -> PlainTrainer:
    return PlainTrainer(data.matrix.indptr, data.matrix.indices.astype(np.int64), data.timestamps, data.item_counts(), sparse=False, seed=0)


def _sparse_recx(store: Any) -> tuple[Any, Any]:
    """Return recx's ShardedTrainer in one process on ``store`` (FBGEMM's fused Adagrad on the tables, Adam on the MLPs) and its batches."""
    import torch

    from recx.distributed.context import init_single_process
    from recx.distributed.features import StoreFeatureBuilder
    from recx.distributed.options import ShardingConfig
    from recx.distributed.trainer import ShardedTrainer
    from recx.models import TwoTowerModel
    from recx.training import TrainConfig

    config = _recx_config(store.n_users, store.n_items)
    context = init_single_process("cpu")
    training = TrainConfig(epochs=1, batch_size=BATCH_SIZE, optimizer="adam", learning_rate=SPARSE_LR, max_history=MAX_HISTORY, show_progress=False, device="cpu")
    sharding = ShardingConfig(sharding="table-wise", embedding_optimizer="adagrad")
    # On the meta device, TorchRec initialises the tables in place: no second full copy.
    torch.manual_seed(0)
    model = TwoTowerModel(config, device=torch.device("meta"))
    trainer = ShardedTrainer(model, StoreFeatureBuilder(config, store, max_history=MAX_HISTORY), training, context, sharding=sharding)
    return trainer, trainer.prepare(store)


def _sparse_plain(store: Any) -> PlainTrainer:
    return PlainTrainer(store.indptr, store.indices, store.timestamps, store.item_counts, sparse=True, seed=0)


def _variant(comparison: str, variant: str, arguments: dict[str, Any]) -> tuple[Any, int, dict[str, int]]:
    """Build one implementation; return a function that trains one unit (an epoch or a block of steps), the examples in a unit and the data sizes."""
    if comparison == "dense":
        data = _dense_data(arguments)
        sizes = {"users": data.n_users, "items": data.n_items, "interactions": data.nnz}
        if variant == "recx":
            trainer = _dense_recx(data)
            return (lambda: trainer.fit(data).epochs[-1].loss), data.nnz, sizes
        plain = _dense_plain(data)
        return (lambda: float(np.mean([plain.step(positions) for positions in plain.batches()]))), data.nnz, sizes

    from recx.data.streaming import CsrStore

    store = CsrStore.open(arguments["store"])
    sizes = {"users": store.n_users, "items": store.n_items, "interactions": store.nnz}
    steps = arguments["sparse_steps"]
    if variant == "recx":
        trainer, batches = _sparse_recx(store)
        iterator = batches.epoch(1)
        return (lambda: float(np.mean([trainer.train_step(next(iterator)) for _ in range(steps)]))), steps * BATCH_SIZE, sizes
    plain = _sparse_plain(store)
    plain_batches = plain.batches()
    return (lambda: float(np.mean([plain.step(next(plain_batches)) for _ in range(steps)]))), steps * BATCH_SIZE, sizes


def turns_main(comparison: str, variant: str, arguments: dict[str, Any], threads: int) -> None:
    """Child side of a throughput comparison: train one unit each time the parent writes "run"; report on "stop".

    Results go to standard output as lines starting with ``RESULT``, so that
    anything else a library prints there is ignored.
    """
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    sampler = MemorySampler()
    sampler.start()
    train_unit, examples, sizes = _variant(comparison, variant, arguments)
    print("RESULT " + json.dumps(sizes), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        started = time.perf_counter()
        loss = train_unit()
        seconds = time.perf_counter() - started
        print("RESULT " + json.dumps({"examples_per_second": examples / seconds, "loss": loss}), flush=True)
    print("RESULT " + json.dumps(sampler.stop()), flush=True)


class TurnWorker:
    """Parent side: a child process holding one implementation, trained one unit at a time."""

    def __init__(self, comparison: str, variant: str, arguments: dict[str, Any], threads: int) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--turns", comparison, variant, "--child-arguments", json.dumps(arguments), "--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        self.name = f"{comparison} {variant}"
        self.sizes = self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"the {self.name} worker stopped without a result (exit status {self.process.wait()}); its error is printed above.")

    def run(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self.read()

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        result = self.read()
        _, status, usage = os.wait4(self.process.pid, 0)
        result["peak_rss_bytes"] = max(result["peak_rss_bytes"], int(usage.ru_maxrss) * 1024)
        return result


def compare_throughput(comparison: str, arguments: dict[str, Any], threads: int) -> dict[str, Any]:
    """Alternate one unit of recx and one of plain PyTorch, each in its own warm process, for ``rounds`` rounds.

    Separate processes keep each implementation's allocator and caches to
    itself; taking turns makes load from other jobs hit both alike. The
    first unit of each is a warm-up and is not counted.
    """
    workers = {variant: TurnWorker(comparison, variant, arguments, threads) for variant in ("recx", "plain")}
    for worker in workers.values():
        worker.run()
    result: dict[str, Any] = {"recx": [], "plain": [], "recx_loss": [], "plain_loss": [], **workers["recx"].sizes}
    for round_index in range(arguments["rounds"]):
        for variant in (("recx", "plain") if round_index % 2 == 0 else ("plain", "recx")):
            unit = workers[variant].run()
            result[variant].append(unit["examples_per_second"])
            result[f"{variant}_loss"].append(unit["loss"])
            logger.info("%s round %d %s: %.0f examples/s, loss %.3f", comparison, round_index + 1, variant, unit["examples_per_second"], unit["loss"])
    result["memory"] = {variant: worker.stop() for variant, worker in workers.items()}
    return result


def stage_epoch(arguments: dict[str, Any]) -> dict[str, Any]:
    """One epoch of ShardedTrainer over the store, then the trained item embeddings for the index stage."""
    import torch

    from recx.data.streaming import CsrStore
    from recx.distributed.context import close_distributed, init_single_process
    from recx.distributed.features import StoreFeatureBuilder
    from recx.distributed.options import ShardingConfig
    from recx.distributed.trainer import ShardedTrainer
    from recx.models import TwoTowerModel
    from recx.training import TrainConfig

    store = CsrStore.open(arguments["store"])
    torch.manual_seed(0)
    config = _recx_config(store.n_users, store.n_items)
    context = init_single_process("auto")
    training = TrainConfig(epochs=1, batch_size=BATCH_SIZE, optimizer="adam", learning_rate=SPARSE_LR, max_history=MAX_HISTORY, show_progress=False, device="auto")
    # On the meta device, TorchRec initialises the tables in place: no second full copy.
    model = TwoTowerModel(config, device=torch.device("meta"))
    trainer = ShardedTrainer(model, StoreFeatureBuilder(config, store, max_history=MAX_HISTORY), training, context, sharding=ShardingConfig(embedding_optimizer="rowwise-adagrad"))
    started = time.perf_counter()
    history = trainer.fit(store)
    seconds = time.perf_counter() - started
    close_distributed()

    # Item embeddings of the trained model, for the index stage.
    features = StoreFeatureBuilder(config, store)
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, store.n_items, 8192):
            chunks.append(model.item_tower(features.item_features(np.arange(start, min(start + 8192, store.n_items)))).numpy())
    np.save(arguments["embeddings"], np.concatenate(chunks))
    return {
        "seconds": round(seconds, 1),
        "examples": store.nnz,
        "examples_per_second": round(store.nnz / seconds),
        "loss": history.epochs[0].loss,
        "steps": -(-store.nnz // BATCH_SIZE),
        "device": str(context.device),
        "table_sharding": trainer.table_sharding,
        "embedding_optimizer": trainer.embedding_optimizer,
        "bf16": trainer.bf16,
    }


def stage_index(arguments: dict[str, Any]) -> dict[str, Any]:
    """Build one ItemIndex kind over the item embeddings; time and the kind built."""
    from recx.index import ItemIndex

    path = Path(arguments["embeddings"])
    if path.is_file():
        embeddings = np.load(path)
        source = "trained"
    else:
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(1024, OUTPUT_DIM)).astype(np.float32)
        embeddings = centres[rng.integers(0, 1024, size=arguments["n_items"])] + 0.3 * rng.normal(size=(arguments["n_items"], OUTPUT_DIM)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        source = "clustered random"
    started = time.perf_counter()
    index = ItemIndex(embeddings, np.arange(len(embeddings)), metric="inner_product", kind=arguments["kind"])
    seconds = time.perf_counter() - started
    queries = embeddings[np.random.default_rng(1).integers(0, len(embeddings), size=1000)]
    search_started = time.perf_counter()
    index.search_indices(queries, 100)
    search_seconds = time.perf_counter() - search_started
    return {"kind": arguments["kind"], "built": index._settings.kind, "parameters": index.parameters, "items": len(embeddings), "embeddings": source, "build_seconds": round(seconds, 2), "queries_per_second": round(1000 / search_seconds)}


CHILD_STAGES = {"synth": stage_synth, "ingest": stage_ingest, "features": stage_features, "epoch": stage_epoch, "index": stage_index}


def child_main(stage: str, arguments: dict[str, Any], output: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    sampler = MemorySampler()
    sampler.start()
    result = CHILD_STAGES[stage](arguments)
    result.update(sampler.stop())
    output.write_text(json.dumps(result))


# ------------------------------------------------------------------ reports


def machine_record(threads: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "device": device,
        "torch_threads": threads,
        "nice": os.nice(0),
        "python": platform.python_version(),
    }


def versions_record() -> dict[str, str]:
    import fbgemm_gpu
    import torch
    import torchrec

    import recx

    return {"recx": recx.__version__, "torch": torch.__version__, "torchrec": getattr(torchrec, "__version__", "unknown"), "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "unknown"), "numpy": np.__version__}


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _median(values: list[float]) -> float:
    return float(np.median(values))


def summarise_throughput(throughput: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Add medians, the recx / plain ratio and the data sizes to each comparison.

    The ratio is the median over rounds of recx / plain within a round, which
    cancels load that changes slowly between rounds.
    """
    for comparison in ("dense", "sparse"):
        entry = throughput[comparison]
        entry["recx_median"] = round(_median(entry["recx"]))
        entry["plain_median"] = round(_median(entry["plain"]))
        entry["ratio"] = round(_median([recx / plain for recx, plain in zip(entry["recx"], entry["plain"])]), 3)
        entry["meets_target"] = entry["ratio"] >= TARGET_RATIO
    return throughput


def render_markdown(results: dict[str, Any]) -> str:
    from recx.data.streaming import DEFAULT_SHUFFLE_BUFFER

    machine, versions, stages = results["machine"], results["versions"], results["stages"]
    lines = [
        f"Measured on {machine['cpu']} ({machine['cpu_count']} cores, {_gib(machine['memory_bytes'])} GiB), "
        f"device {machine['device']}, {machine['torch_threads']} torch thread(s), nice {machine['nice']}; "
        f"recx {versions['recx']}, torch {versions['torch']}, TorchRec {versions['torchrec']}, fbgemm-gpu {versions['fbgemm_gpu']}. "
        "The machine was shared with other jobs, so absolute figures are noisy; the table gives the 1-minute load average when each stage started. "
        "On a machine loaded beyond its cores, OpenMP threads of one process wait for each other, so the stages ran with `--threads 1`.",
        "",
        "| stage | measured | load average at start | command |",
        "|---|---|---:|---|",
    ]
    for stage in STAGES:
        if stage in results.get("measured", {}):
            record = results["measured"][stage]
            load = record.get("load_average")
            lines.append(f"| {stage} | {record['date']} | {'n/a' if load is None else f'{load:.1f}'} | `{record['command']}` |")
    lines.append("")
    throughput = stages.get("throughput")
    if throughput:
        lines += [
            "### Training throughput: recx against plain PyTorch",
            "",
            f"Median training examples per second over {len(throughput['dense']['recx'])} rounds (each round: one epoch for `dense`, "
            f"{throughput['sparse']['steps_per_round']} steps of {BATCH_SIZE} examples for `sparse`, after one unit of warm-up). "
            f"Each implementation runs in its own process and the two take turns. recx / plain is the median over rounds of the ratio within a round. "
            f"Peak memory is each process's own. Target: recx at least {TARGET_RATIO} x plain PyTorch.",
            "",
            "| comparison | catalogue | recx | plain PyTorch | recx / plain | target met | recx peak RSS (GiB) | plain peak RSS (GiB) |",
            "|---|---:|---:|---:|---:|:---:|---:|---:|",
        ]
        labels = {
            "dense": "`dense`: recx `Trainer` (TorchRec EBC, dense gradients, Adam) vs `EmbeddingBag` + Adam",
            "sparse": "`sparse`: recx `ShardedTrainer` in 1 process (FBGEMM fused Adagrad) vs `EmbeddingBag(sparse=True)` + sparse Adagrad",
        }
        for comparison in ("dense", "sparse"):
            entry = throughput[comparison]
            memory = entry["memory"]
            lines.append(
                f"| {labels[comparison]} | {entry['items']:,} items | {entry['recx_median']:,} | {entry['plain_median']:,} | {entry['ratio']:.2f} | "
                f"{'yes' if entry['meets_target'] else 'no'} | {_gib(memory.get('recx', {}).get('peak_rss_bytes', 0))} | {_gib(memory.get('plain', {}).get('peak_rss_bytes', 0))} |"
            )
        lines += [""]
        for comparison in ("dense", "sparse"):
            entry = throughput[comparison]
            lines.append(
                f"- `{comparison}` rounds, recx: {', '.join(f'{value:,.0f}' for value in entry['recx'])}; plain: {', '.join(f'{value:,.0f}' for value in entry['plain'])} examples/s. "
                f"Mean loss in the last round: recx {entry['recx_loss'][-1]:.3f}, plain {entry['plain_loss'][-1]:.3f}."
            )
        lines.append("")
    if "synth" in stages or "ingest" in stages:
        lines += ["### Synthetic log and chunked ingestion", "", "| step | rows | seconds | peak RSS (GiB) | peak anonymous RSS (GiB) | output |", "|---|---:|---:|---:|---:|---|"]
        if "synth" in stages:
            synth = stages["synth"]
            config = synth["config"]
            lines.append(
                f"| `recx synth`: {config['n_users']:,} users, {config['n_items']:,} items, seed {config['seed']} | {synth['rows']:,} | {synth['seconds']} | "
                f"{_gib(synth['peak_rss_bytes'])} | {_gib(synth['peak_anon_bytes'])} | Parquet, {synth['file_bytes'] / 1e6:.0f} MB |"
            )
        if "ingest" in stages:
            ingest = stages["ingest"]
            lines.append(
                f"| `recx ingest`, chunks of {ingest['chunk_rows']:,} rows | {ingest['nnz']:,} | {ingest['seconds']} | {_gib(ingest['peak_rss_bytes'])} | "
                f"{_gib(ingest['peak_anon_bytes'])} | store, {ingest['store_bytes'] / 1e6:.0f} MB |"
            )
        lines += ["", "Peak RSS counts pages of memory-mapped files, which the kernel can evict; the anonymous part is the memory the process itself holds.", ""]
    features = stages.get("features")
    if features:
        timing = features["ms_per_batch"]
        lines += [
            "### Building the user tower's input",
            "",
            f"Milliseconds per training batch of {BATCH_SIZE} examples on the store (mean of {features['batches']} batches). "
            f"A training example's user has {features['mean_history_per_example']:,} items on average, because heavy users contribute many examples.",
            "",
            "| long histories (over " + f"{features['long_bag_factor']} x max_history items)" + " | ms per batch |",
            "|---|---:|",
            f"| sampled directly (recx now) | {timing['sampled']} |",
            f"| read whole, then subsampled by coin flips (recx before) | {timing['whole']} |",
            "",
        ]
    epoch = stages.get("epoch")
    if epoch:
        within = epoch["peak_rss_bytes"] <= MEMORY_LIMIT_GIB * GIB
        nice = results.get("measured", {}).get("epoch", {}).get("nice", machine["nice"])
        lines += [
            f"### One epoch over {epoch['examples']:,} interactions",
            "",
            f"The epoch ran once, at the time the stage table gives, with niceness {nice} so that other jobs on the machine kept their share. "
            f"The store is read memory-mapped and shuffled {'exactly' if epoch['examples'] <= DEFAULT_SHUFFLE_BUFFER else f'block-wise (it is larger than the {DEFAULT_SHUFFLE_BUFFER:,}-entry exact-shuffle buffer)'}. "
            f"Peak memory must stay within {MEMORY_LIMIT_GIB:g} GiB.",
            "",
            "| trainer | device | tables | examples/s | seconds | final loss | peak RSS (GiB) | peak anonymous RSS (GiB) | within 8 GiB |",
            "|---|---|---|---:|---:|---:|---:|---:|:---:|",
            f"| `ShardedTrainer`, 1 process, store read memory-mapped | {epoch['device']} | {sorted(set(epoch['table_sharding'].values()))[0]}, {epoch['embedding_optimizer']} | "
            f"{epoch['examples_per_second']:,} | {epoch['seconds']} | {epoch['loss']:.3f} | {_gib(epoch['peak_rss_bytes'])} | {_gib(epoch['peak_anon_bytes'])} | {'yes' if within else 'no'} |",
            "",
        ]
    index = stages.get("index")
    if index:
        lines += ["### Item index at 1M items", "", "| kind asked | built | items | embeddings | build seconds | top-100 queries/s | peak RSS (GiB) |", "|---|---|---:|---|---:|---:|---:|"]
        for entry in index:
            lines.append(f"| `{entry['kind']}` | {entry['built']} | {entry['items']:,} | {entry['embeddings']} | {entry['build_seconds']} | {entry['queries_per_second']:,} | {_gib(entry['peak_rss_bytes'])} |")
        lines.append("")
    return "\n".join(lines)


def write_plots(results: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = results["stages"].get("throughput")
    if throughput:
        figure, axis = plt.subplots(figsize=(7, 3.5))
        comparisons = ["dense", "sparse"]
        positions = np.arange(len(comparisons))
        axis.bar(positions - 0.2, [throughput[c]["recx_median"] for c in comparisons], 0.4, label="recx")
        axis.bar(positions + 0.2, [throughput[c]["plain_median"] for c in comparisons], 0.4, label="plain PyTorch")
        axis.set_xticks(positions, [f"{c} ({throughput[c]['items']:,} items)" for c in comparisons])
        axis.set_ylabel("training examples / s")
        axis.set_title(f"Throughput, median of interleaved rounds ({results['machine']['device']})")
        axis.legend()
        figure.tight_layout()
        figure.savefig(output / "throughput.png", dpi=120)
        plt.close(figure)

    bars: list[tuple[str, int]] = []
    stages = results["stages"]
    for name in ("synth", "ingest", "epoch"):
        if name in stages:
            bars.append((name, stages[name]["peak_rss_bytes"]))
    for entry in stages.get("index", []):
        bars.append((f"index {entry['kind']}", entry["peak_rss_bytes"]))
    for comparison in ("dense", "sparse") if throughput else ():
        for variant, entry in throughput[comparison]["memory"].items():
            bars.append((f"{comparison} {variant}", entry["peak_rss_bytes"]))
    if bars:
        figure, axis = plt.subplots(figsize=(8, 3.5))
        axis.bar([name for name, _ in bars], [value / GIB for _, value in bars])
        axis.axhline(MEMORY_LIMIT_GIB, color="grey", linestyle="--", linewidth=1, label=f"{MEMORY_LIMIT_GIB:g} GiB")
        axis.set_ylabel("peak RSS (GiB)")
        axis.tick_params(axis="x", rotation=30)
        axis.legend()
        figure.tight_layout()
        figure.savefig(output / "memory.png", dpi=120)
        plt.close(figure)


def write_docs(markdown: str, output: Path) -> None:
    """Replace the marked section of docs/scale.md with ``markdown``."""
    from recx._io import write_bytes_atomic

    text = DOCS_PAGE.read_text(encoding="utf-8")
    if DOCS_START not in text or DOCS_END not in text:
        raise ValueError(f"{DOCS_PAGE} lacks the markers {DOCS_START} and {DOCS_END}; add them where the results go.")
    relative = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    section = f"{DOCS_START}\n<!-- Written by benchmarks/scale.py from {relative}/results.json; edit the script, not this section. -->\n\n{markdown}\n![Throughput](../{relative}/throughput.png)\n\n![Peak memory](../{relative}/memory.png)\n\n{DOCS_END}"
    before, rest = text.split(DOCS_START, 1)
    _, after = rest.split(DOCS_END, 1)
    write_bytes_atomic(DOCS_PAGE, (before + section + after).encode("utf-8"))


# ------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (1M interactions over 100k items); does not touch the docs")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated stages to run (default all: {','.join(STAGES)})")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "recx-scale", help="folder for the synthetic log, the store and the embeddings (default /tmp/recx-scale)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "scale", help="results folder (default benchmarks/results/scale)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and OpenMP threads of each stage (default: all cores)")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/scale.md alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-arguments", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--turns", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # FBGEMM logs every table's arguments through the root logger: keep the root at warnings.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("benchmarks.scale", "recx"):
        logging.getLogger(name).setLevel(logging.INFO)

    if args.child:
        child_main(args.child, json.loads(args.child_arguments), args.child_output, args.threads)
        return 0
    if args.turns:
        turns_main(args.turns[0], args.turns[1], json.loads(args.child_arguments), args.threads)
        return 0

    stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    size = SIZES["quick" if args.quick else "full"]
    data = args.data_dir / ("quick" if args.quick else "full")
    data.mkdir(parents=True, exist_ok=True)
    paths = {"path": str(data / "synthetic.parquet"), "store": str(data / "store"), "embeddings": str(data / "item_embeddings.npy")}
    # Quick runs check the script; their figures stay out of the repository unless --output says otherwise.
    output = args.data_dir / "quick-results" if args.quick and args.output == parser.get_default("output") else args.output
    output.mkdir(parents=True, exist_ok=True)

    # Stages not run now keep their last results.
    previous = json.loads((output / "results.json").read_text()) if (output / "results.json").is_file() else {}
    results: dict[str, Any] = {"stages": dict(previous.get("stages", {})), "measured": dict(previous.get("measured", {}))}
    for stage in results["stages"]:
        # A results file without per-stage records comes from one run, whose date and command are at the top.
        if stage not in results["measured"] and "command" in previous:
            results["measured"][stage] = {"date": previous["date"], "command": previous["command"]}
    command = "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    arguments = {**paths, **size}
    for stage in stages:
        load_average = round(os.getloadavg()[0], 2)
        if stage == "throughput":
            throughput = {comparison: compare_throughput(comparison, arguments, args.threads) for comparison in ("dense", "sparse")}
            throughput["sparse"]["steps_per_round"] = arguments["sparse_steps"]
            results["stages"]["throughput"] = summarise_throughput(throughput, arguments)
        elif stage == "index":
            results["stages"]["index"] = [run_child("index", {**arguments, "kind": kind, "n_items": size["synthetic"]["n_items"]}, args.threads) for kind in ("flat", "auto")]
        else:
            results["stages"][stage] = run_child(stage, arguments, args.threads)
        results["measured"][stage] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command, "load_average": load_average, "nice": os.nice(0)}
        logger.info("stage %s done", stage)

    results["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["command"] = command
    results["machine"] = machine_record(args.threads)
    results["versions"] = versions_record()
    results["settings"] = {"sizes": size, "batch_size": BATCH_SIZE, "max_history": MAX_HISTORY, "recent_items": RECENT_ITEMS, "embedding_dim": EMBEDDING_DIM, "target_ratio": TARGET_RATIO, "memory_limit_gib": MEMORY_LIMIT_GIB}
    from recx._io import write_bytes_atomic, write_json_atomic

    write_json_atomic(output / "results.json", results)
    markdown = render_markdown(results)
    write_bytes_atomic(output / "results.md", (markdown + "\n").encode("utf-8"))
    write_plots(results, output)
    if not args.quick and not args.no_docs:
        write_docs(markdown, output)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
