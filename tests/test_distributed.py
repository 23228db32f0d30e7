"""Tests of sharded training: two CPU processes under torchrun must take the step one process takes.

The two-process parts run this file as the torchrun worker script (see the
``__main__`` block at the end), so the worker code sits next to its checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recx.data import Interactions, load_dataset
from recx.distributed.context import DistributedContext, init_distributed
from recx.distributed.launch import torchrun_command
from recx.distributed.loss import global_batch_softmax_loss
from recx.distributed.options import ShardingConfig, resolve_embedding_optimizer
from recx.distributed.precision import autocast, to_device, use_bf16
from recx.losses import sampled_softmax_loss
from recx.models import FeatureBuilder, TwoTowerConfig, TwoTowerModel
from recx.training import TrainConfig, Trainer, TwoTowerRecommender, load_model, save_model

# TorchRec 1.8 and torch 2.13 warn about their own internals (TorchScript, ShardedTensor, planner heuristics).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

REPO = Path(__file__).resolve().parents[1]
SHARDINGS = ("table-wise", "column-wise", "row-wise", "data-parallel")

#: Interactions in the tiny training set: exactly one global batch, so one epoch is one step.
STEP_EXAMPLES = 64

# One SGD step with a large learning rate moves most weights by 1e-3 to 1e-1.
# The sharded step computes the same sums in another order (the all-to-all
# and the all-reduce add the two ranks' parts separately), so results differ
# only by float32 rounding: a few units in the last place of each weight
# (measured 2e-8). ABSOLUTE_TOLERANCE allows 1e-6, over 30 such units, and
# RELATIVE_TOLERANCE 1e-4 of the weight's own move; a missing or doubled
# gradient term moves weights by far more than either.
LEARNING_RATE = 0.5
ABSOLUTE_TOLERANCE = 1e-6
RELATIVE_TOLERANCE = 1e-4


def _step_config() -> TrainConfig:
    # SGD without momentum, because FBGEMM's fused CPU kernels implement it
    # exactly as torch.optim.SGD does; max_history None, because subsampling
    # draws from each rank's own random stream.
    return TrainConfig(epochs=1, batch_size=STEP_EXAMPLES, optimizer="sgd", momentum=0.0, learning_rate=LEARNING_RATE, max_history=None, show_progress=False, device="cpu")


def _tiny_data() -> Interactions:
    """The first 64 interactions of the embedded MovieLens copy, with its whole catalogue, genres and timestamps."""
    data = load_dataset("movielens-latest-small")
    keep = np.zeros(data.nnz, dtype=bool)
    keep[:STEP_EXAMPLES] = True
    coo = data.matrix.tocoo()
    matrix = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=data.matrix.shape)
    assert data.timestamps is not None
    return data.with_entries(matrix, data.timestamps[keep])


def _tiny_model(data: Interactions) -> TwoTowerModel:
    torch.manual_seed(3)
    genres = FeatureBuilder.vocabulary(data)
    config = TwoTowerConfig(n_users=data.n_users, n_items=data.n_items, n_genres=len(genres), genre_names=genres, embedding_dim=16, hidden_dims=[16], output_dim=8, recent_items=3)
    return TwoTowerModel(config)


def _torchrun(arguments: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    return subprocess.run(arguments, cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def sharded_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run one training step with each sharding type on 2 processes; return the folder of their checkpoints."""
    folder = tmp_path_factory.mktemp("sharded-steps")
    data = _tiny_data()
    data.save(folder / "data")
    save_model(folder / "init", _tiny_model(data))
    completed = _torchrun([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(Path(__file__).resolve()), str(folder)])
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    return folder


@pytest.fixture(scope="module")
def reference_step(sharded_steps: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The single-process step: recx's Trainer on the same data, initial weights and options."""
    data = Interactions.load(sharded_steps / "data")
    model = load_model(sharded_steps / "init")
    history = Trainer(model, FeatureBuilder(model.config, data, max_history=None), _step_config()).fit(data)
    return model.state_dict(), history.epochs[0].loss


class TestShardedStep:
    @pytest.mark.parametrize("sharding", SHARDINGS)
    def test_weights_match_single_process(self, sharded_steps: Path, reference_step: tuple[dict[str, torch.Tensor], float], sharding: str) -> None:
        """Each tensor after one 2-process step equals the single-process step within float32 rounding."""
        expected, _ = reference_step
        initial = load_model(sharded_steps / "init").state_dict()
        sharded = load_model(sharded_steps / sharding).state_dict()
        assert sorted(sharded) == sorted(expected)
        for name, tensor in expected.items():
            move = (tensor - initial[name]).abs()
            difference = (sharded[name] - tensor).abs()
            assert bool((difference <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * move).all()), f"{name}: max difference {float(difference.max()):.3g}, max move {float(move.max()):.3g}"

    def test_step_moves_every_table(self, sharded_steps: Path, reference_step: tuple[dict[str, torch.Tensor], float]) -> None:
        """The compared step is not a no-op: every embedding table moves by far more than the tolerance."""
        expected, _ = reference_step
        initial = load_model(sharded_steps / "init").state_dict()
        tables = [name for name in expected if "embedding_bags" in name]
        assert len(tables) == 4
        for name in tables:
            assert float((expected[name] - initial[name]).abs().max()) > 100 * ABSOLUTE_TOLERANCE, name

    @pytest.mark.parametrize("sharding", SHARDINGS)
    def test_loss_matches_single_process(self, sharded_steps: Path, reference_step: tuple[dict[str, torch.Tensor], float], sharding: str) -> None:
        """The mean loss over both ranks, whose softmax spans the global batch, equals the single-process loss."""
        _, expected_loss = reference_step
        extra = json.loads((sharded_steps / sharding / "config.json").read_text())["extra"]
        assert extra["loss"] == pytest.approx(expected_loss, rel=1e-6)

    @pytest.mark.parametrize("sharding", SHARDINGS)
    def test_plan_uses_requested_sharding(self, sharded_steps: Path, sharding: str) -> None:
        """Every table is sharded the way the option asked (row-wise through the explicit CPU plan)."""
        extra = json.loads((sharded_steps / sharding / "config.json").read_text())["extra"]
        assert set(extra["table_sharding"]) == {"user_history", "user_recent", "item_id", "item_genres"}
        assert set(extra["table_sharding"].values()) == {sharding.replace("-", "_")}

    @pytest.mark.parametrize("sharding", ["column-wise", "row-wise"])
    def test_checkpoint_loads_into_single_process_model(self, sharded_steps: Path, sharding: str) -> None:
        """Embeddings of the sharded model (forward on 2 ranks) equal those of its gathered checkpoint loaded in one process."""
        recorded = np.load(sharded_steps / f"{sharding}-embeddings.npz")
        data = Interactions.load(sharded_steps / "data")
        model = load_model(sharded_steps / sharding).eval()
        features = FeatureBuilder(model.config, data, max_history=None)
        with torch.no_grad():
            users = model.user_tower(features.user_features(recorded["users"])).numpy()
            items = model.item_tower(features.item_features(recorded["items"])).numpy()
        np.testing.assert_allclose(users, recorded["user_embeddings"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(items, recorded["item_embeddings"], rtol=0, atol=1e-6)


def test_recx_train_nproc_writes_loadable_run(tmp_path: Path) -> None:
    """`recx train --nproc 2` writes a run folder that loads in one process and scores as its metrics.json says."""
    from recx.pipeline import evaluate_run

    ratings = pd.read_csv(REPO / "recx" / "data" / "embedded" / "ml-latest-small" / "ratings.csv")
    ratings[ratings["userId"] <= 40].to_csv(tmp_path / "small.csv", index=False)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "recx.cli.main", "train", "--nproc", "2", "--sharding", "row-wise", "--embedding-optimizer", "adagrad"]
    command += ["--dataset", "csv", "--data-path", str(tmp_path / "small.csv"), "--user-col", "userId", "--item-col", "movieId", "--timestamp-col", "timestamp"]
    command += ["--epochs", "2", "--batch-size", "128", "--embedding-dim", "16", "--hidden-dims", "32", "--output-dim", "16", "--no-progress", "--output", str(run)]
    completed = _torchrun(command, timeout=180)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    record = json.loads((run / "run.json").read_text())
    assert record["distributed"]["world_size"] == 2
    assert set(record["distributed"]["table_sharding"].values()) == {"row_wise"}
    assert record["distributed"]["embedding_optimizer"] == "adagrad"
    assert len(record["training"]["epochs"]) == 2
    saved = json.loads((run / "metrics.json").read_text())
    scored = evaluate_run(run)
    assert sorted(scored) == sorted(saved)
    for model, metrics in saved.items():
        assert scored[model] == pytest.approx(metrics, rel=1e-5), model
    recommender = TwoTowerRecommender.load(run)
    item_ids, _ = recommender.recommend(1, k=5)
    assert len(item_ids) == 5


class TestOptions:
    def test_unknown_sharding_is_rejected(self) -> None:
        """An unknown sharding type names the valid ones."""
        with pytest.raises(ValueError, match=re.escape("invalid sharding 'diagonal': expected one of ['auto', 'table-wise', 'column-wise', 'row-wise', 'data-parallel'].")):
            ShardingConfig(sharding="diagonal")

    def test_adam_tables_rejected_on_cpu(self) -> None:
        """Adam has no fused CPU kernel in FBGEMM: the error names the two ways out."""
        message = (
            "sharded embedding tables cannot use the 'adam' optimizer on cpu: FBGEMM's fused cpu kernels implement ['adagrad', 'rowwise-adagrad', 'sgd']. "
            "Pass --embedding-optimizer rowwise-adagrad (or adagrad) to update the tables with it while the dense layers keep 'adam', "
            "or --sharding data-parallel to replicate the tables and update them with 'adam'."
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            resolve_embedding_optimizer("adam", 0.9, ShardingConfig(), "cpu")

    def test_adam_tables_allowed_on_cuda(self) -> None:
        """FBGEMM's CUDA kernels implement Adam."""
        assert resolve_embedding_optimizer("adam", 0.9, ShardingConfig(), "cuda") == "adam"

    def test_sgd_momentum_rejected_for_same(self) -> None:
        """SGD with momentum cannot follow "same": the fused SGD has no momentum."""
        with pytest.raises(ValueError, match=re.escape("sharded embedding tables update with FBGEMM's fused SGD, which has no momentum, but momentum is 0.9.")):
            resolve_embedding_optimizer("sgd", 0.9, ShardingConfig(), "cpu")
        assert resolve_embedding_optimizer("sgd", 0.9, ShardingConfig(embedding_optimizer="sgd"), "cpu") == "sgd"

    def test_explicit_table_optimizer_wins(self) -> None:
        """--embedding-optimizer overrides the dense optimizer for the tables."""
        assert resolve_embedding_optimizer("adam", 0.9, ShardingConfig(embedding_optimizer="rowwise-adagrad"), "cpu") == "rowwise-adagrad"


class TestTrainCommand:
    def test_batch_must_split_over_processes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A batch size that 3 processes cannot share evenly stops the command before any process starts."""
        from recx.cli.main import main

        assert main(["train", "--nproc", "3", "--batch-size", "1000", "--embedding-optimizer", "adagrad", "--quiet"]) == 2
        assert "recx train: error: batch size 1000 is not a multiple of the 3 processes" in capsys.readouterr().err

    def test_adam_tables_stop_before_launch(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The default Adam has no fused CPU kernel: the command names the ways out before starting torchrun."""
        from recx.cli.main import main

        if torch.cuda.is_available():
            pytest.skip("on a CUDA machine FBGEMM has a fused Adam, so the command would start training")
        assert main(["train", "--nproc", "2", "--quiet"]) == 2
        assert "recx train: error: sharded embedding tables cannot use the 'adam' optimizer on cpu" in capsys.readouterr().err


class TestLaunch:
    def test_one_machine_uses_standalone_rendezvous(self) -> None:
        """One machine: torchrun's --standalone rendezvous and the worker module."""
        command = torchrun_command(["train", "job.json"], nproc_per_node=2)
        assert command[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "-m", "recx.distributed.worker", "train", "job.json"]

    def test_several_machines_use_endpoint(self) -> None:
        """Several machines: c10d rendezvous at the given endpoint."""
        command = torchrun_command(["train", "job.json"], nproc_per_node=4, nnodes=2, rdzv_endpoint="10.0.0.1:29400")
        assert "--nnodes=2" in command
        assert "--rdzv-endpoint=10.0.0.1:29400" in command
        assert "--rdzv-backend=c10d" in command
        assert "--standalone" not in command

    def test_several_machines_need_endpoint(self) -> None:
        """--nnodes above 1 without an endpoint is an error naming the flag."""
        with pytest.raises(ValueError, match=re.escape("training on 2 machines needs a rendezvous endpoint HOST:PORT that every machine reaches, got None. Pass --rdzv-endpoint.")):
            torchrun_command(["train", "job.json"], nproc_per_node=2, nnodes=2)

    def test_worker_outside_torchrun_is_explained(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Joining a process group without torchrun's variables says how to launch."""
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(RuntimeError, match=re.escape("this process was not started by torchrun: environment variables ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'] are not set.")):
            init_distributed("cpu")


class TestGlobalBatchLoss:
    def test_equals_sampled_softmax_in_one_process(self) -> None:
        """With one rank, the global-batch softmax is recx's sampled softmax (masking, logQ and negatives included)."""
        generator = torch.Generator().manual_seed(0)
        users, items, negatives = (torch.randn(size, 8, generator=generator) for size in (6, 6, 4))
        item_ids = torch.tensor([3, 5, 3, 7, 9, 5])
        negative_ids = torch.tensor([5, 11, 12, 13])
        log_q = torch.randn(6, generator=generator)
        context = DistributedContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
        options = {"item_log_q": log_q, "negative_embeddings": negatives, "negative_ids": negative_ids, "negative_log_q": -1.5}
        expected = sampled_softmax_loss(users, items, item_ids, **options)
        assert float(global_batch_softmax_loss(users, items, item_ids, context, **options)) == pytest.approx(float(expected), rel=1e-6)


class TestPrecision:
    def test_bf16_rejected_on_cpu(self) -> None:
        """Asking for bf16 autocast on the CPU is an error; the default leaves it off."""
        with pytest.raises(ValueError, match=re.escape("bf16 autocast was requested, but device cpu does not support it")):
            use_bf16(torch.device("cpu"), True)
        assert use_bf16(torch.device("cpu"), None) is False

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: bf16 autocast and pinned-memory copies are GPU paths")
    def test_cuda_autocast_and_pinned_copy(self) -> None:
        """On CUDA, a batch copies through pinned memory and the towers run in bf16 under autocast."""
        from torchrec import KeyedJaggedTensor

        device = torch.device("cuda")
        features = KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 1, 1]))
        moved = to_device(features, device)
        assert moved.values().device.type == "cuda"
        layer = torch.nn.Linear(4, 4).to(device)
        with autocast(device, use_bf16(device, None)):
            output = layer(torch.ones(2, 4, device=device))
        assert output.dtype == torch.bfloat16


# --------------------------------------------------------------- the worker


def _worker(folder: Path) -> None:
    """One rank of the sharded-step check: for each sharding type, one step from the shared initial weights."""
    import warnings

    from recx.distributed.context import close_distributed
    from recx.distributed.trainer import ShardedTrainer

    warnings.filterwarnings("ignore", category=FutureWarning)
    context = init_distributed("cpu")
    data = Interactions.load(folder / "data")
    try:
        for sharding in SHARDINGS:
            model = load_model(folder / "init")
            features = FeatureBuilder(model.config, data, max_history=None)
            trainer = ShardedTrainer(model, features, _step_config(), context, sharding=ShardingConfig(sharding=sharding))
            history = trainer.fit(data)
            if context.is_main:
                save_model(folder / sharding, trainer.model, extra={"loss": history.epochs[0].loss, "table_sharding": trainer.table_sharding})

            # Embeddings computed by the sharded model itself, each rank on its own users and items.
            users = np.arange(context.rank, 40, context.world_size)
            items = np.arange(context.rank, 40, context.world_size)
            trainer.sharded.eval()
            with torch.no_grad():
                user_embeddings, item_embeddings = trainer.sharded(features.user_features(users), features.item_features(items))
            if context.is_main:
                np.savez(folder / f"{sharding}-embeddings.npz", users=users, items=items, user_embeddings=user_embeddings.numpy(), item_embeddings=item_embeddings.numpy())
    finally:
        close_distributed()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
