"""Tests of the towers, the feature builder and the model configuration."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from recx.data import Interactions
from recx.models import FeatureBuilder, TwoTowerConfig, TwoTowerModel
from recx.models.towers import ITEM_GENRES, ITEM_ID, USER_HISTORY, USER_ID, USER_RECENT


@pytest.fixture()
def tiny() -> Interactions:
    """Three users, four items with genres; user "a" has items 10, 11, 12."""
    frame = pd.DataFrame({"user": ["a", "a", "a", "b", "b", "c"], "item": [10, 11, 12, 11, 13, 10], "time": [1, 2, 3, 4, 5, 6]})
    metadata = pd.DataFrame({"title": ["w", "x", "y", "z"], "genres": [["Drama"], ["Comedy", "Drama"], [], ["Horror"]]}, index=[10, 11, 12, 13])
    return Interactions.from_dataframe(frame, user_col="user", item_col="item", timestamp_col="time", item_metadata=metadata)


def _config(data: Interactions, **options: object) -> TwoTowerConfig:
    genres = FeatureBuilder.vocabulary(data)
    return TwoTowerConfig(n_users=data.n_users, n_items=data.n_items, n_genres=len(genres), genre_names=genres, **options)  # type: ignore[arg-type]


def test_genre_vocabulary_sorted(tiny: Interactions) -> None:
    """The genre vocabulary is the sorted set of all genres in the metadata."""
    assert FeatureBuilder.vocabulary(tiny) == ["Comedy", "Drama", "Horror"]


def test_user_features_leave_target_out(tiny: Interactions) -> None:
    """The target entry is removed from its own user's history bag, and only that entry."""
    builder = FeatureBuilder(_config(tiny), tiny)
    # User "a" (index 0) has CSR positions 0, 1, 2 (items 0, 1, 2); position 1 is the target.
    features = builder.user_features(np.array([0, 0]), target_positions=np.array([1, 2]))
    bags = features[USER_HISTORY]
    assert bags.lengths().tolist() == [2, 2]
    assert bags.values().tolist() == [0, 2, 0, 1]


def test_user_features_whole_history_at_inference(tiny: Interactions) -> None:
    """Without a target the bag is the whole training history."""
    builder = FeatureBuilder(_config(tiny, use_user_id=True), tiny)
    features = builder.user_features(np.array([1, 2]))
    assert features.keys() == [USER_ID, USER_HISTORY]
    assert features[USER_ID].values().tolist() == [1, 2]
    assert features[USER_HISTORY].values().tolist() == [1, 3, 0]
    assert features[USER_HISTORY].lengths().tolist() == [2, 1]


def test_item_features_include_genres(tiny: Interactions) -> None:
    """Item 11 (index 1) has genres Comedy and Drama (indices 0 and 1); item 12 has none."""
    builder = FeatureBuilder(_config(tiny), tiny)
    features = builder.item_features(np.array([1, 2, 3]))
    assert features.keys() == [ITEM_ID, ITEM_GENRES]
    assert features[ITEM_GENRES].lengths().tolist() == [2, 0, 1]
    assert features[ITEM_GENRES].values().tolist() == [0, 1, 2]


def test_long_bags_are_subsampled() -> None:
    """Training bags longer than max_history keep about max_history items on average."""
    users = np.zeros(1000, dtype=np.int64)
    data = Interactions.from_dataframe(pd.DataFrame({"user_id": users, "item_id": np.arange(1000)}))
    builder = FeatureBuilder(_config(data), data, max_history=100)
    generator = np.random.default_rng(0)
    lengths = [builder.user_features(np.array([0]), target_positions=np.array([0]), generator=generator)[USER_HISTORY].lengths().item() for _ in range(50)]
    assert 80 <= np.mean(lengths) <= 120
    assert max(lengths) < 999


def test_tower_norms_follow_temperature(tiny: Interactions) -> None:
    """Item embeddings have unit norm and user embeddings norm 1 / temperature."""
    torch.manual_seed(0)
    config = _config(tiny, temperature=0.25, hidden_dims=[16, 8], activation="gelu")
    model = TwoTowerModel(config)
    builder = FeatureBuilder(config, tiny)
    users = model.user_tower(builder.user_features(np.arange(3)))
    items = model.item_tower(builder.item_features(np.arange(4)))
    assert users.shape == (3, config.output_dim)
    assert items.shape == (4, config.output_dim)
    assert torch.allclose(users.norm(dim=1), torch.full((3,), 4.0), atol=1e-5)
    assert torch.allclose(items.norm(dim=1), torch.ones(4), atol=1e-5)
    scores = model(builder.user_features(np.arange(3)), builder.item_features(np.arange(3)))
    assert torch.allclose(scores, users @ items[:3].T, atol=1e-6)


def test_towers_use_torchrec_tables(tiny: Interactions) -> None:
    """Each tower's sparse features live in a TorchRec EmbeddingBagCollection with one table per feature."""
    from torchrec import EmbeddingBagCollection

    model = TwoTowerModel(_config(tiny, use_user_id=True))
    assert isinstance(model.user_tower.embeddings, EmbeddingBagCollection)
    assert [table.name for table in model.user_tower.embeddings.embedding_bag_configs()] == ["user_id", "user_history"]
    assert [table.name for table in model.item_tower.embeddings.embedding_bag_configs()] == ["item_id", "item_genres"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"activation": "swish"}, "invalid activation 'swish': expected one of ['relu', 'gelu', 'tanh', 'sigmoid']."),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0. Values near 0.05 to 0.5 are usual."),
        ({"embedding_dim": 0}, "embedding_dim must be a positive integer, got 0."),
        ({"hidden_dims": [32, -1]}, "hidden_dims must be positive integers, got [32, -1]."),
        ({"use_user_id": False, "use_history": False}, "the user tower has no input: set use_user_id or use_history to true, or recent_items above 0."),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0."),
    ],
)
def test_config_rejects_bad_values(options: dict[str, object], message: str) -> None:
    """Invalid settings raise with the value and the fix."""
    with pytest.raises(ValueError, match=re.escape(message)):
        TwoTowerConfig(n_users=3, n_items=4, **options)  # type: ignore[arg-type]


def test_config_round_trip_and_unknown_keys() -> None:
    """A config survives to_dict/from_dict, and unknown keys are named."""
    config = TwoTowerConfig(n_users=3, n_items=4, hidden_dims=[8])
    assert TwoTowerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=re.escape("unknown two-tower model settings ['width']")):
        TwoTowerConfig.from_dict({**config.to_dict(), "width": 3})


def test_feature_builder_rejects_other_data(tiny: Interactions) -> None:
    """Interactions of another size than the model's raise a clear error."""
    config = TwoTowerConfig(n_users=5, n_items=4)
    message = "the model was built for 5 users x 4 items, but the interactions have 3 x 4."
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureBuilder(config, tiny)


def test_recent_bag_holds_items_before_target() -> None:
    """The recent bag lists the latest items before the target in training, and the latest items at inference."""
    # User "a" has items 10, 11, 12, 13 at times 4, 1, 3, 2: time order 11, 13, 12, 10.
    frame = pd.DataFrame({"user": ["a"] * 4 + ["b"], "item": [10, 11, 12, 13, 11], "time": [4, 1, 3, 2, 9]})
    data = Interactions.from_dataframe(frame, user_col="user", item_col="item", timestamp_col="time")
    config = TwoTowerConfig(n_users=2, n_items=4, recent_items=2)
    builder = FeatureBuilder(config, data)
    # CSR positions of user "a" are items 0, 1, 2, 3 (ids 10 .. 13); position 0 (item 10) is the latest.
    training = builder.user_features(np.array([0, 0, 0, 1]), target_positions=np.array([0, 1, 2, 4]))
    recent = training[USER_RECENT]
    # Target 10 (time 4): the two before are 12 (time 3) and 13 (time 2) in time order 13, 12.
    # Target 11 (time 1): nothing before. Target 12 (time 3): 11 and 13. User "b"'s only item: nothing.
    assert recent.lengths().tolist() == [2, 0, 2, 0]
    assert recent.values().tolist() == [3, 2, 1, 3]
    inference = builder.user_features(np.array([0, 1]))[USER_RECENT]
    assert inference.lengths().tolist() == [2, 1]
    assert inference.values().tolist() == [2, 0, 1]


def test_recent_bag_needs_timestamps() -> None:
    """recent_items without timestamps raises naming the fix."""
    data = Interactions.from_dataframe(pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1]}))
    config = TwoTowerConfig(n_users=2, n_items=2, recent_items=3)
    with pytest.raises(ValueError, match=re.escape("recent_items needs timestamps, but the training interactions have none.")):
        FeatureBuilder(config, data)
