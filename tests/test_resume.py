"""Tests of crash safety: epoch checkpoints, exact resumption, and what a process killed mid-write leaves behind.

The kill tests run the real `recx` code in a child process that SIGKILLs
itself at a chosen file rename, the commit point of every atomic write.
``RECX_TEST_KILL_AT=NAME:N:before`` kills just before the N-th rename onto a
file or folder called NAME, and ``NAME:N:after`` just after it. Nothing else
in the child is replaced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recx.cli.main import main
from recx.data import Interactions, load_dataset, temporal_split
from recx.index import ItemIndex
from recx.pipeline import read_run
from recx.serving import Retriever, export_bundle
from recx.serving.bundle import MANIFEST_FILE, describe_files
from recx.training import TrainConfig, TwoTowerRecommender, load_model
from recx.training.resume import LATEST_FILE, TRAINING_STATE_FORMAT_VERSION, read_training_state

# Kills the child at the N-th os.replace onto a path named NAME; the rest of the script follows it.
KILL_HOOK = """
import os, signal, sys

import torch

torch.set_num_threads(int(os.environ["RECX_TEST_THREADS"]))
_name, _count, _when = os.environ["RECX_TEST_KILL_AT"].split(":")
_real_replace = os.replace
_calls = 0


def _replace(source, destination, *args, **kwargs):
    global _calls
    if os.path.basename(os.fspath(destination)) != _name:
        return _real_replace(source, destination, *args, **kwargs)
    _calls += 1
    if _calls == int(_count) and _when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = _real_replace(source, destination, *args, **kwargs)
    if _calls == int(_count) and _when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


os.replace = _replace
"""

CLI_BODY = """
from recx.cli.main import main

sys.exit(main(sys.argv[1:]))
"""

MODEL_ARGS = ["--embedding-dim", "16", "--output-dim", "16", "--hidden-dims", "32", "--dropout", "0.1"]
TRAIN_ARGS = ["--batch-size", "256", "--seed", "3", "--epochs", "4", "--no-progress", "-q", *MODEL_ARGS]


def run_killed(tmp_path: Path, body: str, arguments: list[str], kill_at: str) -> subprocess.CompletedProcess[str]:
    """Run KILL_HOOK + ``body`` in a child process and check that the hook killed it."""
    script = tmp_path / "child.py"
    script.write_text(KILL_HOOK + body)
    environment = {**os.environ, "RECX_TEST_KILL_AT": kill_at, "RECX_TEST_THREADS": str(torch.get_num_threads())}
    finished = subprocess.run([sys.executable, str(script), *arguments], env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == -signal.SIGKILL, f"the child was not killed at {kill_at} (exit {finished.returncode}): {finished.stderr[-2000:]}"
    return finished


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return set(first) == set(second) and all(torch.equal(first[name], second[name]) for name in first)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train these small models on one thread: faster than several, and the same in the killed children."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def movielens_slice() -> Interactions:
    """The first 40 users of the embedded MovieLens copy, with timestamps."""
    full = load_dataset("movielens-latest-small")
    frame = full.to_dataframe()
    return Interactions.from_dataframe(frame[frame["user_id"] <= 40], timestamp_col="timestamp")


@pytest.fixture(scope="module")
def slice_csv(movielens_slice: Interactions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    movielens_slice.to_dataframe().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def data_args(slice_csv: Path) -> list[str]:
    return ["--dataset", "csv", "--data-path", str(slice_csv), "--timestamp-col", "timestamp"]


@pytest.fixture(scope="module")
def uninterrupted(data_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `recx train` run of 4 epochs that nothing interrupted."""
    folder = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert main(["train", *data_args, *TRAIN_ARGS, "--output", str(folder)]) == 0
    return folder


def assert_same_run(folder: Path, reference: Path) -> None:
    """Check that two run folders hold the same metrics, training history and weights."""
    assert json.loads((folder / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    losses = [record["loss"] for record in read_run(folder)[1]["training"]["epochs"]]
    assert losses == [record["loss"] for record in read_run(reference)[1]["training"]["epochs"]]
    assert same_weights(load_model(folder / "model").state_dict(), load_model(reference / "model").state_dict())


# --------------------------------------------------------------------------- resumption in-process


def _recommender(**training: Any) -> TwoTowerRecommender:
    options: dict[str, Any] = {"epochs": 4, "batch_size": 256, "show_progress": False, "device": "cpu", "seed": 3, "patience": 5}
    options.update(training)
    return TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, dropout=0.1, training=TrainConfig(**options))


@pytest.mark.parametrize(
    "optimizer",
    [{"optimizer": "adam"}, {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9}, {"optimizer": "adagrad", "learning_rate": 0.05}],
)
def test_resume_equals_uninterrupted(movielens_slice: Interactions, tmp_path: Path, optimizer: dict[str, Any]) -> None:
    """Two epochs, then a resumed run to four, end with the weights and history of four epochs in one go."""
    split = temporal_split(movielens_slice, test_fraction=0.2, validation_fraction=0.1)
    straight = _recommender(**optimizer).fit(split.train, split.validation, checkpoint_dir=tmp_path / "straight")
    _recommender(**optimizer, epochs=2).fit(split.train, split.validation, checkpoint_dir=tmp_path / "resumed")
    assert read_training_state(tmp_path / "resumed").epoch == 2
    resumed = _recommender(**optimizer).fit(split.train, split.validation, checkpoint_dir=tmp_path / "resumed", resume=True)

    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert [(r.loss, r.validation) for r in resumed.history.epochs] == [(r.loss, r.validation) for r in straight.history.epochs]
    assert resumed.history.best_epoch == straight.history.best_epoch
    state = read_training_state(tmp_path / "resumed")
    assert state.epoch == 4
    assert sorted(path.name for path in (tmp_path / "resumed").iterdir()) == ["epoch-0004", LATEST_FILE]


def test_resume_after_early_stop(movielens_slice: Interactions, tmp_path: Path) -> None:
    """A run that stopped early stays stopped when resumed with more epochs, and keeps its best weights."""
    split = temporal_split(movielens_slice, test_fraction=0.2, validation_fraction=0.1)
    first = _recommender(epochs=12, patience=1, learning_rate=0.05).fit(split.train, split.validation, checkpoint_dir=tmp_path / "run")
    assert first.history.stopped_early
    resumed = _recommender(epochs=30, patience=1, learning_rate=0.05).fit(split.train, split.validation, checkpoint_dir=tmp_path / "run", resume=True)
    assert len(resumed.history.epochs) == len(first.history.epochs)
    assert resumed.history.best_epoch == first.history.best_epoch
    assert same_weights(resumed.model.state_dict(), first.model.state_dict())


def test_resume_without_checkpoint_starts_over(movielens_slice: Interactions, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """resume=True on a folder without a checkpoint trains from epoch 1 and logs a warning."""
    fresh = _recommender(epochs=2).fit(movielens_slice, checkpoint_dir=tmp_path / "fresh")
    with caplog.at_level(logging.WARNING, logger="recx.training.trainer"):
        resumed = _recommender(epochs=2).fit(movielens_slice, checkpoint_dir=tmp_path / "empty", resume=True)
    assert f"no checkpoint in {tmp_path / 'empty'} to resume from; training starts at epoch 1" in caplog.text
    assert same_weights(resumed.model.state_dict(), fresh.model.state_dict())


def test_fit_without_resume_replaces_checkpoint(movielens_slice: Interactions, tmp_path: Path) -> None:
    """A new run into a checkpoint folder removes the earlier run's epochs before training."""
    _recommender(epochs=3).fit(movielens_slice, checkpoint_dir=tmp_path)
    _recommender(epochs=1, seed=4).fit(movielens_slice, checkpoint_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0001", LATEST_FILE]
    assert read_training_state(tmp_path).fingerprint["training"]["seed"] == 4


def test_resume_rejects_other_settings_or_data(movielens_slice: Interactions, tmp_path: Path) -> None:
    """A checkpoint continues only the run that wrote it: other settings or data are named in the error."""
    _recommender(epochs=1).fit(movielens_slice, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"cannot resume from checkpoint {tmp_path}: it was written by a run with other settings or data (training.learning_rate: checkpoint 0.003, now 0.01).")):
        _recommender(epochs=2, learning_rate=0.01).fit(movielens_slice, checkpoint_dir=tmp_path, resume=True)
    smaller = temporal_split(movielens_slice, test_fraction=0.2).train
    with pytest.raises(ValueError, match=re.escape("data.train: checkpoint '")):
        _recommender(epochs=2).fit(smaller, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=re.escape("Resume with the settings of the interrupted run (only ['epochs', 'show_progress'] may change), or start a new run without resuming.")):
        TwoTowerRecommender(embedding_dim=8, hidden_dims=[32], output_dim=16, dropout=0.1, training=_recommender().training).fit(movielens_slice, checkpoint_dir=tmp_path, resume=True)


def test_resume_rejects_damaged_checkpoint(movielens_slice: Interactions, tmp_path: Path) -> None:
    """Changed tensors, an unknown version, or a pointer that leaves the folder raise rather than load."""
    _recommender(epochs=1).fit(movielens_slice, checkpoint_dir=tmp_path)
    tensors = tmp_path / "epoch-0001" / "state.safetensors"
    original = tensors.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 0xFF
    tensors.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=re.escape(f"checkpoint tensors {tensors} do not match the checksum in {tmp_path / 'epoch-0001' / 'state.json'}: the file is corrupt or from another checkpoint.")):
        read_training_state(tmp_path)
    tensors.write_bytes(original)

    pointer = tmp_path / LATEST_FILE
    for folder in ("../elsewhere", "/etc", "epoch-0001/../../x"):
        pointer.write_text(json.dumps({"format_version": TRAINING_STATE_FORMAT_VERSION, "epoch": 1, "folder": folder}))
        with pytest.raises(ValueError, match=re.escape(f"invalid checkpoint pointer {pointer}: folder {folder!r} is not an epoch folder name such as 'epoch-0003'.")):
            read_training_state(tmp_path)
    pointer.write_text(json.dumps({"format_version": 99, "epoch": 1, "folder": "epoch-0001"}))
    with pytest.raises(ValueError, match=re.escape(f"unsupported checkpoint format version 99 in {pointer}: this recx")):
        read_training_state(tmp_path)
    pointer.write_text(json.dumps({"format_version": TRAINING_STATE_FORMAT_VERSION, "epoch": 2, "folder": "epoch-0002"}))
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint folder not found: {tmp_path / 'epoch-0002'} is named by {pointer} but does not exist.")):
        read_training_state(tmp_path)
    pointer.write_text('{"format_version": 1, "epo')
    with pytest.raises(ValueError, match=re.escape(f"checkpoint pointer at {pointer} is not valid UTF-8 JSON (")):
        read_training_state(tmp_path)


def test_divergence_keeps_last_good_checkpoint(movielens_slice: Interactions, tmp_path: Path) -> None:
    """A learning rate that diverges stops with the epoch and the fix, and leaves the last finished epoch on disk."""
    # One step per epoch (the batch contains every entry), so the loss turns NaN at the start of an epoch after the first.
    diverging = {"learning_rate": 5e12, "batch_size": 8192, "epochs": 6, "dropout": 0.0}
    options = {key: value for key, value in diverging.items() if key != "dropout"}
    with pytest.raises(FloatingPointError, match=r"training diverged: the loss is nan at epoch (\d+), step 1\. ") as raised:
        _recommender(**options).fit(movielens_slice, checkpoint_dir=tmp_path / "diverged")
    message = str(raised.value)
    diverged_epoch = int(re.search(r"at epoch (\d+)", message).group(1))
    assert diverged_epoch >= 2
    assert message.endswith(f"Lower the learning rate (now 5000000000000.0). The checkpoint of epoch {diverged_epoch - 1} in {tmp_path / 'diverged'} is unchanged.")

    saved = read_training_state(tmp_path / "diverged")
    assert saved.epoch == diverged_epoch - 1
    assert all(torch.isfinite(tensor).all() for tensor in saved.model_state.values())
    assert all(np.isfinite(record["loss"]) for record in saved.history["epochs"])
    # The saved state is exactly that of a run stopped before the diverging epoch.
    _recommender(**{**options, "epochs": diverged_epoch - 1}).fit(movielens_slice, checkpoint_dir=tmp_path / "clean")
    assert same_weights(read_training_state(tmp_path / "clean").model_state, saved.model_state)


# --------------------------------------------------------------------------- processes killed mid-write


@pytest.mark.parametrize(
    ("kill_at", "epoch_left"),
    [
        ("state.safetensors:2:before", 1),  # inside the write of epoch 2's tensors
        ("latest.json:2:before", 1),  # epoch 2 complete, not yet committed
        ("latest.json:2:after", 2),  # committed, epoch 1 not yet removed
    ],
)
def test_train_killed_during_checkpoint_resumes(tmp_path: Path, data_args: list[str], uninterrupted: Path, kill_at: str, epoch_left: int) -> None:
    """After a kill during a checkpoint write, the last committed epoch loads and --resume ends like an uninterrupted run."""
    folder = tmp_path / "run"
    run_killed(tmp_path, CLI_BODY, ["train", *data_args, *TRAIN_ARGS, "--output", str(folder)], kill_at)

    state = read_training_state(folder / "checkpoint")
    assert state.epoch == epoch_left
    assert len(state.history["epochs"]) == epoch_left
    assert not (folder / "run.json").exists()
    assert main(["train", *data_args, *TRAIN_ARGS, "--output", str(folder)]) == 2
    assert main(["train", *data_args, *TRAIN_ARGS, "--output", str(folder), "--resume"]) == 0
    assert_same_run(folder, uninterrupted)


def test_train_killed_during_index_write(tmp_path: Path, data_args: list[str], uninterrupted: Path) -> None:
    """A kill while the run's index is written leaves files that raise clear errors, and --resume completes the run."""
    folder = tmp_path / "run"
    run_killed(tmp_path, CLI_BODY, ["train", *data_args, *TRAIN_ARGS, "--output", str(folder)], "index.json:1:before")

    assert read_training_state(folder / "checkpoint").epoch == 4
    with pytest.raises(FileNotFoundError, match=re.escape(f"item index manifest not found: {folder / 'index' / 'index.json'} does not exist or is not a file.")):
        ItemIndex.load(folder / "index")
    with pytest.raises(FileNotFoundError, match=re.escape(f"saved model not found: {folder / 'recommender.json'} does not exist.")):
        TwoTowerRecommender.load(folder)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no recx run at {folder}: run.json not found.")):
        read_run(folder)
    assert main(["train", *data_args, *TRAIN_ARGS, "--output", str(folder), "--resume"]) == 0
    assert_same_run(folder, uninterrupted)


INDEX_BODY = """
import numpy as np

from recx.index import ItemIndex

embeddings = np.random.default_rng(int(sys.argv[2])).normal(size=(300, 8)).astype(np.float32)
ItemIndex(embeddings, np.arange(300) * 10).save(sys.argv[1])
"""


@pytest.mark.parametrize(("kill_at", "outcome"), [("index.faiss:1:before", "old"), ("index.json:1:before", "error")])
def test_index_overwrite_killed(tmp_path: Path, kill_at: str, outcome: str) -> None:
    """An index save killed midway leaves the previous index, or files whose checksum check fails."""
    old_embeddings = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    ItemIndex(old_embeddings, np.arange(300) * 10).save(tmp_path / "index")
    queries = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    expected = ItemIndex(old_embeddings, np.arange(300) * 10).search_indices(queries, 10)

    run_killed(tmp_path, INDEX_BODY, [str(tmp_path / "index"), "2"], kill_at)
    if outcome == "old":
        found = ItemIndex.load(tmp_path / "index").search_indices(queries, 10)
        assert np.array_equal(found[0], expected[0])
        assert np.array_equal(found[1], expected[1])
    else:
        with pytest.raises(ValueError, match=re.escape(f"checksum mismatch for {tmp_path / 'index' / 'index.faiss'}: the manifest expects sha256 ")):
            ItemIndex.load(tmp_path / "index")


def test_export_killed_keeps_previous_bundle(tmp_path: Path, uninterrupted: Path) -> None:
    """An export killed while it writes leaves the previous bundle untouched and loadable; one killed in the swap leaves a clear error."""
    bundle = export_bundle(uninterrupted, tmp_path / "bundle")
    before = describe_files(bundle)
    manifest = (bundle / MANIFEST_FILE).read_bytes()
    expected = Retriever.load(bundle).recommend(1, 10)

    run_killed(tmp_path, CLI_BODY, ["export", str(uninterrupted), "--output", str(bundle), "-q"], "user_tower.onnx:1:before")
    assert describe_files(bundle) == before
    assert (bundle / MANIFEST_FILE).read_bytes() == manifest
    found = Retriever.load(bundle).recommend(1, 10)
    assert found[0].tolist() == expected[0].tolist()
    assert found[1].tolist() == expected[1].tolist()

    # The old bundle has moved aside and the new one is not yet in place.
    run_killed(tmp_path, CLI_BODY, ["export", str(uninterrupted), "--output", str(bundle), "-q"], "bundle:1:before")
    with pytest.raises(FileNotFoundError, match=re.escape(f"serving bundle not found: {bundle} is not a folder. Pass the --output folder of `recx export`.")):
        Retriever.load(bundle)
    assert main(["export", str(uninterrupted), "--output", str(bundle), "-q"]) == 0
    assert Retriever.load(bundle).recommend(1, 10)[0].tolist() == expected[0].tolist()
