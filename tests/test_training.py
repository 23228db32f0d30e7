"""Tests of training, checkpoints and the two-tower recommender on data with a known ranking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recx.data import Interactions, temporal_split
from recx.training import CHECKPOINT_FORMAT_VERSION, TrainConfig, TwoTowerRecommender, load_model, save_model

N_CLUSTERS = 3
ITEMS_PER_CLUSTER = 12
USERS_PER_CLUSTER = 30


@pytest.fixture(scope="module")
def clustered() -> Interactions:
    """Users of cluster c interact only with items of cluster c (8 of its 12 items each).

    The expected ranking is known: a user's unseen items of their own cluster
    should rank above every item of the other clusters.
    """
    generator = np.random.default_rng(7)
    rows = []
    for cluster in range(N_CLUSTERS):
        for member in range(USERS_PER_CLUSTER):
            user = f"u{cluster}-{member}"
            items = generator.choice(ITEMS_PER_CLUSTER, size=8, replace=False) + cluster * ITEMS_PER_CLUSTER
            for time, item in enumerate(items):
                rows.append((user, int(item), time))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


def _quick(**options: object) -> TrainConfig:
    settings: dict[str, object] = {"epochs": 15, "batch_size": 64, "learning_rate": 0.01, "show_progress": False, "patience": 0, "device": "cpu"}
    settings.update(options)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def _same_cluster_share(model: TwoTowerRecommender, data: Interactions, k: int = 4) -> float:
    """Share of top-k recommendations (seen items excluded) that belong to the user's own cluster."""
    users = np.arange(data.n_users)
    ranked, _ = model.recommend_indices(users, k, exclude=data.matrix)
    user_cluster = np.array([int(str(uid)[1]) for uid in data.users.to_id(users)])
    item_cluster = data.items.to_id(ranked.reshape(-1)).reshape(ranked.shape) // ITEMS_PER_CLUSTER
    return float(np.mean(item_cluster == user_cluster[:, None]))


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "softmax"},
        {"loss": "softmax", "negatives": 16, "optimizer": "adagrad", "learning_rate": 0.05},
        {"loss": "bpr", "optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9},
        {"loss": "bce", "negatives": 2},
    ],
)
def test_model_learns_clusters(clustered: Interactions, options: dict[str, object]) -> None:
    """Every loss and optimiser learns that users want unseen items of their own cluster."""
    # The cluster signal lives in the whole history; the recent bag has its own known-answer tests.
    model = TwoTowerRecommender(hidden_dims=[32], embedding_dim=16, output_dim=16, recent_items=0, training=_quick(**options)).fit(clustered)
    assert model.history is not None
    losses = [record.loss for record in model.history.epochs]
    assert losses[-1] < losses[0]
    assert _same_cluster_share(model, clustered) >= 0.9


def test_training_repeats_exactly_with_seed(clustered: Interactions) -> None:
    """Two CPU runs with the same seed give identical weights; another seed differs."""
    first = TwoTowerRecommender(training=_quick(epochs=2, seed=3)).fit(clustered)
    second = TwoTowerRecommender(training=_quick(epochs=2, seed=3)).fit(clustered)
    third = TwoTowerRecommender(training=_quick(epochs=2, seed=4)).fit(clustered)
    assert np.array_equal(first.item_embeddings(), second.item_embeddings())
    assert np.array_equal(first.user_embeddings(), second.user_embeddings())
    assert not np.array_equal(first.item_embeddings(), third.item_embeddings())


def test_early_stopping_keeps_best_epoch(clustered: Interactions) -> None:
    """With validation, the history records each epoch's metric and the best epoch's weights are kept."""
    split = temporal_split(clustered, test_fraction=0.25, validation_fraction=0.2)
    model = TwoTowerRecommender(training=_quick(epochs=6, patience=2)).fit(split.train, validation=split.validation)
    history = model.history
    assert history is not None
    validations = [record.validation for record in history.epochs]
    assert all(value is not None for value in validations)
    assert history.best_validation == max(validations)  # type: ignore[type-var]
    assert history.epochs[history.best_epoch - 1].validation == history.best_validation  # type: ignore[operator]
    # After fitting, validation items join the history, so they are excluded from recommendations.
    assert model.train is not None
    assert model.train.nnz == split.train.nnz + split.validation.nnz  # type: ignore[union-attr]


def test_score_equals_index_inner_product(clustered: Interactions) -> None:
    """Scores from the FAISS index equal user @ item embeddings, the training logits."""
    model = TwoTowerRecommender(training=_quick(epochs=1)).fit(clustered)
    users = np.arange(5)
    indices, scores = model.recommend_indices(users, 3)
    dense = model.user_embeddings(users) @ model.item_embeddings().T
    expected = np.take_along_axis(dense, indices, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_divergence_raises_clear_error(clustered: Interactions) -> None:
    """A learning rate that makes the loss non-finite stops training with a message naming it."""
    model = TwoTowerRecommender(training=_quick(optimizer="sgd", learning_rate=1e30, momentum=0.0, epochs=3))
    with pytest.raises(FloatingPointError, match=re.escape("Lower the learning rate (now 1e+30).")):
        model.fit(clustered)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": 0.0}, "learning_rate must be a positive number, got 0.0."),
        ({"optimizer": "rmsprop"}, "invalid optimizer 'rmsprop': expected one of ['adam', 'adagrad', 'sgd']."),
        ({"loss": "hinge"}, "invalid loss 'hinge': expected one of ['softmax', 'bpr', 'bce']."),
        ({"loss": "bpr", "negatives": 0}, "the bpr loss needs sampled negatives: set negatives >= 1"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1."),
        ({"device": "tpu"}, "invalid device 'tpu': expected one of ['auto', 'cpu', 'cuda']."),
    ],
)
def test_train_config_rejects_bad_values(options: dict[str, object], message: str) -> None:
    """Invalid training options raise with the value and the fix."""
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**options)  # type: ignore[arg-type]


def test_recommend_uses_external_ids(clustered: Interactions) -> None:
    """recommend() takes an external user id and returns external item ids, seen items excluded."""
    model = TwoTowerRecommender(training=_quick(epochs=8)).fit(clustered)
    item_ids, scores = model.recommend("u1-0", k=4)
    seen = set(clustered.items.to_id(clustered.user_items(clustered.users.to_index(["u1-0"])[0])).tolist())
    assert len(item_ids) == 4
    assert not seen & set(item_ids.tolist())
    assert np.all(np.diff(scores) <= 1e-6)
    with pytest.raises(KeyError, match=re.escape("unknown user id(s) ['nobody']")):
        model.recommend("nobody", k=4)
    with pytest.raises(ValueError, match=re.escape(f"k must be a positive integer no larger than the catalogue size ({clustered.n_items} items), got 0.")):
        model.recommend("u1-0", k=0)


def test_more_items_than_remain(clustered: Interactions) -> None:
    """Asking for the whole catalogue returns exactly the items left after excluding seen ones."""
    model = TwoTowerRecommender(training=_quick(epochs=1)).fit(clustered)
    item_ids, _ = model.recommend("u0-0", k=clustered.n_items)
    assert len(item_ids) == clustered.n_items - 8
    assert len(set(item_ids.tolist())) == len(item_ids)


def test_save_load_round_trip(clustered: Interactions, tmp_path: Path) -> None:
    """A saved recommender reloads with identical embeddings and recommendations."""
    model = TwoTowerRecommender(training=_quick(epochs=2)).fit(clustered)
    model.save(tmp_path / "run")
    loaded = TwoTowerRecommender.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.item_embeddings(), model.item_embeddings())
    np.testing.assert_array_equal(loaded.user_embeddings(), model.user_embeddings())
    for user in ("u0-1", "u2-5"):
        expected_ids, expected_scores = model.recommend(user, k=5)
        ids, scores = loaded.recommend(user, k=5)
        assert ids.tolist() == expected_ids.tolist()
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert not list((tmp_path / "run").rglob("*.tmp"))


@pytest.fixture()
def checkpoint(clustered: Interactions, tmp_path: Path) -> Path:
    """A checkpoint folder of a briefly trained model."""
    model = TwoTowerRecommender(training=_quick(epochs=1)).fit(clustered)
    assert model.model is not None
    return save_model(tmp_path / "checkpoint", model.model)


def test_checkpoint_round_trip(checkpoint: Path) -> None:
    """load_model restores every tensor exactly."""
    model = load_model(checkpoint)
    from safetensors.torch import load_file

    stored = load_file(str(checkpoint / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, stored[name])


def test_checkpoint_rejects_unknown_version(checkpoint: Path) -> None:
    """A checkpoint from another format version raises naming both versions."""
    config = json.loads((checkpoint / "config.json").read_text())
    config["format_version"] = 99
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(f"unsupported checkpoint format version 99 in {checkpoint / 'config.json'}: this recx")):
        load_model(checkpoint)
    assert CHECKPOINT_FORMAT_VERSION == 1


def test_checkpoint_rejects_tampered_weights(checkpoint: Path) -> None:
    """Weights that do not match the recorded checksum raise."""
    weights = checkpoint / "model.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 0xFF
    weights.write_bytes(bytes(payload))
    with pytest.raises(ValueError, match=re.escape("do not match the checksum")):
        load_model(checkpoint)


def test_checkpoint_rejects_dimension_mismatch(checkpoint: Path) -> None:
    """A config whose dimensions differ from the weights names the tensor and both shapes."""
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["output_dim"] = 32
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"checkpoint tensor '.*' has shape \(.*\), but the config describes \(.*\)\. The weights and config.json come from different models\."):
        load_model(checkpoint)


def test_checkpoint_missing_folder(tmp_path: Path) -> None:
    """A missing checkpoint folder raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint not found: {tmp_path / 'nope'} is not a folder.")):
        load_model(tmp_path / "nope")


def test_recent_items_default_follows_timestamps(clustered: Interactions) -> None:
    """Unset recent_items means a 5-item recent bag with timestamps and none without."""
    with_times = TwoTowerRecommender(training=_quick(epochs=1)).fit(clustered)
    without_times = TwoTowerRecommender(training=_quick(epochs=1)).fit(clustered.with_entries(clustered.matrix, None))
    assert with_times.model is not None
    assert without_times.model is not None
    assert with_times.model.config.recent_items == 5
    assert without_times.model.config.recent_items == 0
