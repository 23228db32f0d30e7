"""Tests of the `recx` command line, run in-process through recx.cli.main.main."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recx.cli.main import main

TRAIN_FAST = ["--epochs", "2", "--batch-size", "64", "--no-progress", "--embedding-dim", "16", "--output-dim", "16", "--hidden-dims", "32"]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV log with string user ids: 60 users in 3 taste clusters of 10 items, timestamps per user."""
    generator = np.random.default_rng(11)
    rows = []
    for user in range(60):
        cluster = user % 3
        items = generator.choice(10, size=7, replace=False) + 10 * cluster
        rows += [(f"user{user}", int(item), 1000 + step) for step, item in enumerate(items)]
    path = tmp_path_factory.mktemp("data") / "log.csv"
    pd.DataFrame(rows, columns=["visitor", "product", "ts"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run_folder(log_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained by `recx train` on the CSV log."""
    folder = tmp_path_factory.mktemp("runs") / "csv-run"
    code = main(["train", "--dataset", "csv", "--data-path", str(log_file), "--user-col", "visitor", "--item-col", "product", "--timestamp-col", "ts", "--output", str(folder), "-q", *TRAIN_FAST])
    assert code == 0
    return folder


def test_train_writes_run_folder(run_folder: Path) -> None:
    """train writes the checkpoint, the index, the history and metrics.json with both models."""
    for name in ("run.json", "metrics.json", "recommender.json", "model/model.safetensors", "model/config.json", "index/index.json", "history/interactions.npz"):
        assert (run_folder / name).is_file(), name
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert list(metrics) == ["model", "most_popular"]
    for scores in metrics.values():
        assert 0.0 <= scores["ndcg@20"] <= 1.0
        assert 0.0 <= scores["recall@20"] <= 1.0
        assert scores["users"] == 60
    record = json.loads((run_folder / "run.json").read_text())
    assert record["settings"]["data"]["dataset"] == "csv"
    assert record["data"] == {"users": 60, "items": 30, "interactions": 420}


def test_train_prints_metrics_table(log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The metrics table names both models and the metric columns."""
    code = main(["train", "--dataset", "csv", "--data-path", str(log_file), "--user-col", "visitor", "--item-col", "product", "--timestamp-col", "ts", "--output", str(tmp_path / "r"), "-q", "-k", "5", *TRAIN_FAST])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| most_popular" in printed
    assert "ndcg@5" in printed
    assert "ndcg@20" not in printed


def test_evaluate_reproduces_saved_metrics(run_folder: Path, tmp_path: Path) -> None:
    """evaluate rebuilds the split and scores the saved model exactly as train did."""
    output = tmp_path / "again.json"
    assert main(["evaluate", str(run_folder), "--output", str(output), "-q"]) == 0
    again = json.loads(output.read_text())
    saved = json.loads((run_folder / "metrics.json").read_text())
    assert again.keys() == saved.keys()
    for model in saved:
        for key, value in saved[model].items():
            assert again[model][key] == pytest.approx(value, abs=1e-9), (model, key)


def test_recommend_excludes_seen_items(run_folder: Path, log_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """recommend prints k items in the user's ids, none of which the user already has."""
    assert main(["recommend", "--run", str(run_folder), "--user", "user4", "-k", "5", "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    items = [row["item_id"] for row in result["items"]]
    log = pd.read_csv(log_file)
    seen = set(log.loc[log["visitor"] == "user4", "product"])
    assert len(items) == 5
    assert not seen & set(items)
    assert [row["rank"] for row in result["items"]] == [1, 2, 3, 4, 5]


def test_recommend_unknown_user(run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown user id exits with status 2 and names the id."""
    assert main(["recommend", "--run", str(run_folder), "--user", "ghost", "-q"]) == 2
    assert "unknown user id 'ghost'" in capsys.readouterr().err


def test_recommend_rejects_k_zero(run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """k <= 0 exits with status 2 and names the fix."""
    assert main(["recommend", "--run", str(run_folder), "--user", "user4", "-k", "0", "-q"]) == 2
    assert "k must be a positive integer, got 0. Pass -k 10 for ten items." in capsys.readouterr().err


def test_train_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data path that does not exist exits with status 2 and names the path."""
    missing = tmp_path / "nothing.csv"
    assert main(["train", "--dataset", "csv", "--data-path", str(missing), "--output", str(tmp_path / "r"), "-q"]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error
    assert "not found" in error


def test_train_misnamed_column(log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user column that the file lacks is named together with the columns it has."""
    assert main(["train", "--dataset", "csv", "--data-path", str(log_file), "--user-col", "customer", "--item-col", "product", "--output", str(tmp_path / "r"), "-q"]) == 2
    error = capsys.readouterr().err
    assert "'customer'" in error
    assert "visitor" in error


def test_train_unknown_file_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose format recx cannot read is rejected with the supported formats."""
    path = tmp_path / "log.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert main(["train", "--dataset", "csv", "--data-path", str(path), "--output", str(tmp_path / "r"), "-q"]) == 2
    assert ".xlsx" in capsys.readouterr().err


def test_config_unknown_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config file with a misspelt key exits with status 2 and lists the valid keys."""
    config = tmp_path / "run.toml"
    config.write_text("[training]\nepoch = 3\n")
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "r"), "-q"]) == 2
    assert "unknown [training] setting(s) ['epoch']" in capsys.readouterr().err


def test_train_refuses_foreign_output_folder(log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing folder that is not a recx run is never overwritten."""
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["train", "--dataset", "csv", "--data-path", str(log_file), "--output", str(tmp_path), "-q"]) == 2
    assert "is not empty and contains no recx run" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_datasets_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    """datasets lists every name --dataset accepts."""
    assert main(["datasets"]) == 0
    printed = capsys.readouterr().out
    for name in ("movielens-latest-small", "movielens-100k", "movielens", "csv", "parquet"):
        assert name in printed


def test_console_script_version() -> None:
    """The installed `recx` entry point runs and reports the package version."""
    import recx

    executable = Path(sys.executable).parent / "recx"
    completed = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == f"recx {recx.__version__}"


def test_train_defaults_to_embedded_data(tmp_path: Path) -> None:
    """With no data option, train uses the embedded MovieLens latest-small copy."""
    folder = tmp_path / "default"
    assert main(["train", "--epochs", "1", "--validation-fraction", "0", "--output", str(folder), "-q", "--no-progress"]) == 0
    record = json.loads((folder / "run.json").read_text())
    assert record["data"] == {"users": 610, "items": 9724, "interactions": 100836}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["most_popular"]["users"] == 610
