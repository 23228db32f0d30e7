"""Tests of the `recx bench` runner on a small synthetic dataset, end to end, and of its MostPopular numbers on a real split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recx.bench.runner as runner
from recx.baselines import MostPopular
from recx.bench import BenchOptions, DatasetSpec, run_bench, write_docs_section, write_outputs
from recx.bench.report import DOCS_END, DOCS_START
from recx.bench.runner import resolve_names
from recx.bench.specs import DATASETS, MODELS
from recx.cli.main import main
from recx.data import Interactions, Split, temporal_split
from recx.data.interactions import merge_interactions
from recx.evaluation import evaluate

SPEED_REPEATS = 1


def clustered_interactions() -> Interactions:
    """Three groups of 40 users; each user has 10 items of the group's 20-item block and 2 elsewhere, in random order."""
    rng = np.random.default_rng(11)
    rows, columns = [], []
    for user in range(120):
        group = user // 40
        items = np.concatenate([group * 20 + rng.choice(20, size=10, replace=False), rng.choice(60, size=2, replace=False)])
        for item in np.unique(items):
            rows.append(user)
            columns.append(int(item))
    order = rng.permutation(len(rows))
    frame = pd.DataFrame({"user_id": np.asarray(rows)[order], "item_id": np.asarray(columns)[order], "timestamp": np.arange(len(rows), dtype=float)})
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


class SplitRecorder:
    """Split with the temporal protocol and keep the split, so tests can recognise its parts."""

    def __init__(self) -> None:
        self.split: Split | None = None

    def __call__(self, interactions: Interactions) -> Split:
        self.split = temporal_split(interactions, test_fraction=0.2, validation_fraction=0.2)
        return self.split


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """Run every model on the synthetic dataset once, recording every evaluate call."""
    recorder = SplitRecorder()
    spec = DatasetSpec(
        name="synthetic",
        load=lambda root: clustered_interactions(),
        split=recorder,
        selection_metric="ndcg@20",
        protocol="synthetic temporal split",
        two_tower={"model": {"embedding_dim": 16, "hidden_dims": [], "output_dim": 16}, "training": {"epochs": 2, "batch_size": 128, "seed": 0}},
    )
    absent = DatasetSpec(name="absent", load=lambda root: clustered_interactions(), split=recorder, selection_metric="ndcg@20", protocol="-", missing=lambda root: "absent.txt not found")
    calls: list[tuple[object, object]] = []
    original = runner.evaluate

    def spy(recommender, train, test, *args, **kwargs):
        calls.append((recommender, test))
        return original(recommender, train, test, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(runner, "evaluate", spy)
    try:
        options = BenchOptions(quick=True, datasets=["synthetic", "absent"], show_progress=False, speed_repeats=SPEED_REPEATS, specs={"synthetic": spec, "absent": absent})
        results = run_bench(options)
    finally:
        patch.undo()
    results["command"] = "recx bench --quick (test)"
    return results, recorder.split, calls, tmp_path_factory.mktemp("bench")


def test_results_keys(bench_run):
    """The results record names the mode, the refit rule, versions, machine and one entry per model."""
    results, _, _, _ = bench_run
    assert {"mode", "refit_rule", "cutoffs", "datasets", "versions", "machine", "seconds"} <= set(results)
    assert results["mode"] == "quick"
    assert {"implicit", "torch", "faiss", "numpy"} <= set(results["versions"])
    record = results["datasets"][0]
    assert [entry["model"] for entry in record["models"]] == list(MODELS)
    assert record["split"]["test_users"] == 120


def test_absent_dataset_is_skipped(bench_run):
    """A dataset whose files are missing is recorded with the reason and nothing else."""
    results, _, _, _ = bench_run
    assert results["datasets"][1] == {"dataset": "absent", "skipped": "absent.txt not found"}


def test_chosen_is_best_validation(bench_run):
    """Each model's chosen configuration is the first one with the highest validation NDCG@20."""
    results, _, _, _ = bench_run
    for entry in results["datasets"][0]["models"]:
        scores = [row["validation"]["ndcg@20"] for row in entry["grid"]]
        assert entry["chosen_index"] == scores.index(max(scores)), entry["model"]
        assert entry["chosen"] == entry["grid"][entry["chosen_index"]]["params"]


def test_test_split_touched_once(bench_run):
    """Every model is scored on test once; only the IALS timing comparison scores its final model again."""
    results, split, calls, _ = bench_run
    test_calls = [type(model).__name__ for model, test in calls if test is split.test]
    expected = {"MostPopular": 1, "ItemKNN": 1, "EASE": 1, "BPRMF": 1, "TwoTowerRecommender": 1, "IALS": 1 + 2 * SPEED_REPEATS}
    assert {name: test_calls.count(name) for name in expected} == expected
    for entry in results["datasets"][0]["models"]:
        assert entry["test_evaluations"] == 1


def test_validation_scores_every_config(bench_run):
    """Each configuration of each grid is scored on validation exactly once, with train items excluded."""
    results, split, calls, _ = bench_run
    validation_calls = [model for model, test in calls if test is split.validation]
    assert len(validation_calls) == sum(len(entry["grid"]) for entry in results["datasets"][0]["models"])


def test_refit_on_train_and_validation(bench_run):
    """The refitted models train on train + validation, and the two-tower for its best epoch count."""
    results, _, _, _ = bench_run
    for entry in results["datasets"][0]["models"]:
        assert entry["refit"]["data"] == "train+validation"
    two_tower = results["datasets"][0]["models"][-1]
    assert two_tower["refit"]["epochs"] == two_tower["grid"][two_tower["chosen_index"]]["best_epoch"]


def test_baselines_beat_popularity(bench_run):
    """On clustered data every personalised baseline scores a higher test NDCG@20 than MostPopular."""
    results, _, _, _ = bench_run
    scores = {entry["model"]: entry["test"]["ndcg@20"] for entry in results["datasets"][0]["models"]}
    for model in ("ItemKNN", "EASE", "IALS"):
        assert scores[model] > scores["MostPopular"], model


def test_evaluation_speed_record(bench_run):
    """The speed comparison records both times and agreeing NDCG and MAP."""
    results, _, _, _ = bench_run
    speed = results["datasets"][0]["evaluation_speed"]
    assert speed["recx_seconds"] > 0
    assert speed["implicit_seconds"] > 0
    assert speed["ratio"] == pytest.approx(speed["recx_seconds"] / speed["implicit_seconds"])
    assert speed["ndcg_difference"] < 1e-6
    assert speed["map_difference"] < 1e-6


def test_outputs_and_docs_section(bench_run):
    """write_outputs writes the JSON, Markdown and plots; the docs section replaces only its own markers."""
    results, _, _, folder = bench_run
    report = write_outputs(results, folder)
    assert json.loads((folder / "results.json").read_text())["datasets"][0]["dataset"] == "synthetic"
    assert (folder / "results.md").read_text() == report
    assert "| EASE |" in report
    assert "Skipped: absent.txt not found." in report
    assert (folder / "ndcg.png").stat().st_size > 0
    assert (folder / "validation.png").stat().st_size > 0

    docs = folder / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nintro\n\n<!-- other: start -->\nkept\n<!-- other: end -->\n\n{DOCS_START}\nold\n{DOCS_END}\n\ntail\n")
    write_docs_section(results, report, folder, docs, folder.parent)
    page = docs.read_text()
    assert "kept" in page
    assert "tail" in page
    assert "\nold\n" not in page
    assert page.count(DOCS_START) == 1
    assert "recx bench --quick (test)" in page


def test_unknown_model_name():
    """An unknown model name raises listing the valid ones."""
    with pytest.raises(ValueError, match=re.escape(f"unknown models ['SVD']: expected names from {list(MODELS)}.")):
        resolve_names(["ease", "SVD"], MODELS, "models")


def test_names_match_case_insensitively():
    """Model names match in any case and keep the report order."""
    assert resolve_names(["twotower", "ease"], MODELS, "models") == ["EASE", "TwoTower"]


def test_command_line_run(tmp_path, capsys):
    """`recx bench` runs one model on one dataset and writes results.json without touching the docs."""
    status = main(["bench", "--quick", "--datasets", "ml-latest-small", "--models", "MostPopular", "--output", str(tmp_path), "--no-progress", "-q"])
    assert status == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [entry["model"] for entry in results["datasets"][0]["models"]] == ["MostPopular"]
    assert results["command"].startswith("recx bench --quick --datasets ml-latest-small --models MostPopular")
    assert "| MostPopular |" in capsys.readouterr().out


def test_command_line_unknown_dataset(tmp_path, capsys):
    """An unknown dataset exits with status 2 and lists the known names."""
    assert main(["bench", "--datasets", "ml-1m", "--output", str(tmp_path), "-q"]) == 2
    assert f"unknown datasets ['ml-1m']: expected names from {list(DATASETS)}." in capsys.readouterr().err


def test_most_popular_on_bench_split_matches_numpy():
    """MostPopular's test metrics on the benchmark's ml-latest-small split equal a hand-written per-user computation."""
    spec = DATASETS["ml-latest-small"]
    split = spec.split(spec.load(Path(".")))
    history = merge_interactions(split.train, split.validation)
    results = evaluate(MostPopular().fit(history), history, split.test, k=[20], metrics=["ndcg", "recall"])

    # Popularity = distinct users per item in history; ties by item index; seen items skipped.
    counts = np.bincount(history.matrix.indices, minlength=history.n_items)
    ranking = sorted(range(history.n_items), key=lambda item: (-counts[item], item))
    ndcg, recall, users = 0.0, 0.0, 0
    for user in range(history.n_users):
        relevant = set(split.test.user_items(user).tolist())
        if not relevant:
            continue
        seen = set(history.user_items(user).tolist())
        top = [item for item in ranking if item not in seen][:20]
        gains = [1.0 / np.log2(position + 2) for position, item in enumerate(top) if item in relevant]
        ideal = sum(1.0 / np.log2(position + 2) for position in range(min(20, len(relevant))))
        ndcg += sum(gains) / ideal
        recall += len(gains) / len(relevant)
        users += 1
    assert results["users"] == users
    assert results["ndcg@20"] == pytest.approx(ndcg / users, abs=1e-12)
    assert results["recall@20"] == pytest.approx(recall / users, abs=1e-12)
