"""Tests that the files under examples/ run and produce what the docs describe."""

from __future__ import annotations

import importlib.util
import math
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from recx.data import DATASETS
from recx.evaluation import METRICS
from recx.pipeline import RunSettings
from recx.training import TrainConfig, TwoTowerRecommender

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIG_FILE = EXAMPLES / "config.toml"

# One epoch runs every step of the example, and more epochs would only add training time.
QUICKSTART_EPOCHS = 1
QUICKSTART_K = 10


def _import_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module without running its __main__ block."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recx_example_{name}", path)
    assert spec is not None and spec.loader is not None, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules to resolve its annotations.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The result of one run of examples/quickstart.py, saving into a kept folder."""
    module = _import_example("quickstart")
    output = tmp_path_factory.mktemp("quickstart") / "model"
    return module.main(epochs=QUICKSTART_EPOCHS, output_dir=output, k=QUICKSTART_K)


# ------------------------------------------------------------------ quickstart.py


def test_quickstart_reports_both_models(quickstart: Any) -> None:
    assert set(quickstart.metrics) == {"two_tower", "most_popular"}
    expected_keys = {f"{name}@{k}" for name in METRICS for k in (10, 20)} | {"users"}
    for model, metrics in quickstart.metrics.items():
        assert set(metrics) == expected_keys, model


def test_quickstart_metrics_within_unit_range(quickstart: Any) -> None:
    for model, metrics in quickstart.metrics.items():
        for key, value in metrics.items():
            if key == "users":
                continue
            assert math.isfinite(value), f"{model} {key} = {value}"
            assert 0.0 <= value <= 1.0, f"{model} {key} = {value}"


def test_quickstart_scores_same_users(quickstart: Any) -> None:
    # Every one of the 610 users has at least 2 ratings, so each keeps a test item.
    assert quickstart.metrics["two_tower"]["users"] == 610
    assert quickstart.metrics["most_popular"]["users"] == 610


def test_quickstart_recommends_k_unseen_items(quickstart: Any) -> None:
    item_ids = quickstart.item_ids
    assert len(item_ids) == QUICKSTART_K
    assert len(set(item_ids.tolist())) == QUICKSTART_K
    assert len(quickstart.seen_item_ids) > 0
    assert not np.isin(item_ids, quickstart.seen_item_ids).any()


def test_quickstart_scores_best_first(quickstart: Any) -> None:
    scores = quickstart.scores
    assert np.all(np.isfinite(scores))
    assert np.all(np.diff(scores) <= 0)


def test_quickstart_titles_present(quickstart: Any) -> None:
    assert len(quickstart.titles) == QUICKSTART_K
    for title in quickstart.titles:
        assert isinstance(title, str)
        assert title.strip()


def test_quickstart_reload_gives_same_items(quickstart: Any) -> None:
    np.testing.assert_array_equal(quickstart.reloaded_item_ids, quickstart.item_ids)
    np.testing.assert_allclose(quickstart.reloaded_scores, quickstart.scores, rtol=1e-6, atol=1e-6)


def test_quickstart_saved_folder_loads(quickstart: Any) -> None:
    folder = quickstart.saved_folder
    for name in ("recommender.json", "model", "history", "index"):
        assert (folder / name).exists(), f"{name} missing from {folder}"
    loaded = TwoTowerRecommender.load(folder)
    item_ids, _ = loaded.recommend(quickstart.user_id, k=QUICKSTART_K)
    np.testing.assert_array_equal(item_ids, quickstart.item_ids)


# ------------------------------------------------------------------ config.toml


def test_config_parses_into_run_settings() -> None:
    settings = RunSettings.from_toml(CONFIG_FILE)
    assert settings.data["dataset"] == "movielens-latest-small"
    assert settings.data["dataset"] in DATASETS
    assert settings.split["protocol"] == "temporal"
    assert settings.k == [10, 20]


def test_config_values_reach_run_settings() -> None:
    """Every key written in the file appears unchanged in the parsed settings."""
    written = tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    settings = RunSettings.from_toml(CONFIG_FILE)
    for table in ("data", "split", "model", "training"):
        assert table in written, f"[{table}] missing from {CONFIG_FILE}"
        for key, value in written[table].items():
            assert getattr(settings, table)[key] == value, f"[{table}] {key}"


def test_config_builds_model_and_training() -> None:
    settings = RunSettings.from_toml(CONFIG_FILE)
    training = settings.training_config()
    assert isinstance(training, TrainConfig)
    assert training.epochs == settings.training["epochs"]
    model = TwoTowerRecommender(training=training, **settings.model)
    assert model.options["output_dim"] == settings.model["output_dim"]


def test_config_writes_current_defaults() -> None:
    """The file promises the defaults, so a changed default must be copied into it."""
    written = tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    default_model = TwoTowerRecommender().options
    default_training = TrainConfig().to_dict()
    for key, value in written["model"].items():
        assert value == default_model[key], f"[model] {key} = {value!r} in {CONFIG_FILE}, but the default is {default_model[key]!r}"
    for key, value in written["training"].items():
        assert value == default_training[key], f"[training] {key} = {value!r} in {CONFIG_FILE}, but the default is {default_training[key]!r}"
    assert written["data"] == RunSettings().data
    assert written["split"] == RunSettings().split
    assert written["k"] == RunSettings().k
