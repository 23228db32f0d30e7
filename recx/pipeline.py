"""The end-to-end job behind `recx train` and `recx evaluate`: load, split, train, index, score.

A run is described by :class:`RunSettings` (what a TOML config file holds)
and writes one folder::

    RUN/
      run.json        settings, library versions, data and split sizes, training history
      metrics.json    {"model": {...}, "most_popular": {...}}, keyed like "ndcg@20"
      model/          safetensors checkpoint and its JSON config
      history/        interactions used as user history (train + validation), id maps, metadata
      index/          FAISS item index with external item ids
      checkpoint/     training state after the latest finished epoch, for `recx train --resume`
"""

from __future__ import annotations

import logging
import os
import platform
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

import recx
from recx._io import read_json, write_json_atomic
from recx.baselines import MostPopular
from recx.data import Interactions, Split, load_dataset, sample_per_user, split_interactions
from recx.data.interactions import merge_interactions
from recx.evaluation import evaluate
from recx.training import TrainConfig, TwoTowerRecommender
from recx.training.recommender import MODEL_OPTIONS

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_FOLDER = "checkpoint"
METRICS_FILE = "metrics.json"
RUN_FORMAT_VERSION = 1

#: Options of each dataset kind, as written in a config file's [data] table.
DATA_OPTIONS: dict[str, tuple[str, ...]] = {
    "movielens": ("min_rating", "binarize"),
    "parquet": ("user_col", "item_col", "weight_col", "timestamp_col", "min_rating", "binarize", "duplicates"),
    "csv": ("user_col", "item_col", "weight_col", "timestamp_col", "min_rating", "binarize", "duplicates", "sep", "encoding"),
}
SPLIT_OPTIONS: tuple[str, ...] = ("protocol", "test_fraction", "validation_fraction", "seed", "cut", "train_fraction")

#: Keys of a config file's [transfer] table (see :func:`transfer_objects`).
TRANSFER_OPTIONS: tuple[str, ...] = (
    "init",
    "align",
    "encoder",
    "text_columns",
    "text_features",
    "content_weight",
    "id_dropout",
    "freeze",
    "unfreeze_epoch",
    "pretrained_lr_scale",
    "learning_rates",
    "l2_sp",
)


@dataclass
class RunSettings:
    """Everything that defines a run; the tables of a TOML config file.

    Attributes
    ----------
    data : dict
        ``dataset`` (a name from :data:`recx.data.DATASETS`), ``path`` and
        loader options (``min_rating``, ``binarize``; for files also
        ``user_col``, ``item_col``, ``weight_col``, ``timestamp_col``,
        ``sep``, ``duplicates``, ``encoding``).
    split : dict
        ``protocol`` ("temporal", "leave-one-out", "random", "time-cut"),
        ``test_fraction``, ``validation_fraction`` (carved out of train for
        early stopping; 0 disables it), ``seed``, ``cut`` (time-cut only)
        and ``train_fraction`` (keep that share of each user's training
        interactions, drawn with ``seed``; 1 keeps all).
    model : dict
        Options of :class:`~recx.training.TwoTowerRecommender`.
    training : dict
        Fields of :class:`~recx.training.TrainConfig`.
    transfer : dict
        Pretrained initialisation and fine-tuning policy: ``init``
        ("text", a run folder, a vector file, or a list of them), ``align``
        ("title" or "id"), ``encoder`` (a sentence-transformers folder),
        ``text_columns``, ``text_features``, ``content_weight``,
        ``id_dropout``, ``freeze``,
        ``unfreeze_epoch``, ``pretrained_lr_scale``, ``learning_rates`` and
        ``l2_sp``; see :func:`transfer_objects`. Empty trains from scratch.
    k : list of int
        Metric cut-offs.
    """

    data: dict[str, Any] = field(default_factory=lambda: {"dataset": "movielens-latest-small"})
    split: dict[str, Any] = field(default_factory=lambda: {"protocol": "temporal", "test_fraction": 0.2, "validation_fraction": 0.1, "seed": 0})
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)
    k: list[int] = field(default_factory=lambda: [10, 20])

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first unknown or invalid setting."""
        dataset = self.data.get("dataset", "movielens-latest-small")
        allowed_data = {"dataset", "path", *DATA_OPTIONS.get(dataset, DATA_OPTIONS["movielens"])}
        _reject_unknown(self.data, allowed_data, "data")
        _reject_unknown(self.split, set(SPLIT_OPTIONS), "split")
        _reject_unknown(self.model, set(MODEL_OPTIONS), "model")
        _reject_unknown(self.training, {f.name for f in fields(TrainConfig)}, "training")
        _reject_unknown(self.transfer, set(TRANSFER_OPTIONS), "transfer")
        fraction = self.split.get("train_fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {fraction!r}. Use 0.25 to keep a quarter of each user's training interactions.")
        if not self.k or any(not isinstance(value, int) or isinstance(value, bool) or value <= 0 for value in self.k):
            raise ValueError(f"k must be a list of positive integers, got {self.k!r}.")
        # Building the objects checks every value with its own message.
        self.training_config()
        TwoTowerRecommender(**self.model)
        transfer_objects(self)

    def training_config(self) -> TrainConfig:
        """Return the :class:`TrainConfig` these settings describe."""
        return TrainConfig.from_dict(self.training)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any], *, source: str = "settings") -> RunSettings:
        """Build settings from nested tables, rejecting unknown tables."""
        tables = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - tables)
        if unknown:
            raise ValueError(f"unknown table(s) {unknown} in {source}; valid tables are {sorted(tables)}.")
        defaults = cls()
        merged: dict[str, Any] = {}
        for name in ("data", "split", "model", "training", "transfer"):
            table = payload.get(name, {})
            if not isinstance(table, dict):
                raise ValueError(f"[{name}] in {source} must be a table, got {type(table).__name__}.")
            merged[name] = {**getattr(defaults, name), **table}
        merged["k"] = list(payload.get("k", defaults.k))
        return cls(**merged)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> RunSettings:
        """Read settings from a TOML file with [data], [split], [model], [training] and [transfer] tables and a top-level ``k``."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file not found: {file}. Check the path given to --config (or to RunSettings.from_toml).")
        try:
            payload = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {file} is not valid UTF-8 TOML: {error}.") from error
        return cls.from_dict(payload, source=str(file))


def _reject_unknown(table: dict[str, Any], allowed: set[str], name: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"unknown [{name}] setting(s) {unknown}; valid settings are {sorted(allowed)}.")


def load_data(settings: RunSettings) -> Interactions:
    """Load the dataset the settings name."""
    options = dict(settings.data)
    name = options.pop("dataset", "movielens-latest-small")
    path = options.pop("path", None)
    if name in ("csv", "parquet") and "min_rating" in options:
        # File readers call the rating threshold by its general name.
        options["min_weight"] = options.pop("min_rating")
    return load_dataset(name, path, **options)


def make_split(settings: RunSettings, interactions: Interactions) -> Split:
    """Split ``interactions`` with the protocol and fractions of the settings."""
    options = dict(settings.split)
    protocol = options.pop("protocol", "temporal")
    seed = options.pop("seed", 0)
    train_fraction = options.pop("train_fraction", 1.0)
    validation_fraction = options.pop("validation_fraction", 0.0)
    params: dict[str, Any] = {}
    if protocol in ("leave-one-out", "leave_one_out"):
        params["validation"] = bool(validation_fraction)
    else:
        params["test_fraction"] = options.pop("test_fraction", 0.2)
        params["validation_fraction"] = validation_fraction
        if protocol == "random":
            params["seed"] = seed
        if protocol in ("time-cut", "time_cut") and options.get("cut") is not None:
            params["cut"] = options["cut"]
    split = split_interactions(interactions, protocol, **params)
    if train_fraction < 1:
        # Scarce-data runs drop the rest for good, so the model's history at test
        # time lacks it too. Validation and test are unchanged.
        split = Split(sample_per_user(split.train, train_fraction, seed=seed), split.test, split.validation, protocol=split.protocol, params={**split.params, "train_fraction": train_fraction})
    return split


def transfer_objects(settings: RunSettings) -> tuple[list[Any], Any]:
    """Build the initialisers and fine-tuning policy of a [transfer] table.

    Returns ``(init, fine_tuning)`` for :class:`TwoTowerRecommender`:
    an empty list and None when the table is empty.
    """
    from recx.transfer import FineTuning, TextInit, resolve_source

    table = dict(settings.transfer)
    sources = table.get("init", [])
    sources = [sources] if isinstance(sources, str) else list(sources)
    init: list[Any] = []
    for source in sources:
        if source == "text":
            text_options: dict[str, Any] = {"encoder": table.get("encoder")}
            if "text_columns" in table:
                text_options["columns"] = tuple(table["text_columns"])
            if "text_features" in table:
                text_options["features"] = bool(table["text_features"])
            for key in ("content_weight", "id_dropout"):
                if key in table:
                    text_options[key] = table[key]
            init.append(TextInit(**text_options))
        else:
            init.append(resolve_source(source, align=table.get("align")))
    policy_keys = ("freeze", "unfreeze_epoch", "pretrained_lr_scale", "learning_rates", "l2_sp")
    policy = {key: table[key] for key in policy_keys if key in table}
    return init, (FineTuning(**policy) if policy else None)


@dataclass
class RunResult:
    """Outputs of :func:`train_run`: the fitted model, its metrics and the run folder."""

    recommender: TwoTowerRecommender
    metrics: dict[str, dict[str, float]]
    folder: Path


def _check_output_folder(folder: Path, *, resume: bool = False) -> None:
    """Refuse to write a run into a non-empty folder that is not a recx run, or over an interrupted run without ``resume``."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"output {folder} exists and is not a folder. Choose another --output.")
    if not folder.is_dir() or not any(folder.iterdir()) or (folder / RUN_FILE).is_file():
        return
    interrupted = (folder / CHECKPOINT_FOLDER).is_dir()
    if interrupted and not resume:
        raise FileExistsError(
            f"output folder {folder} contains an interrupted run (a {CHECKPOINT_FOLDER}/ folder but no {RUN_FILE}). "
            f"Pass --resume to continue it from its last epoch, or choose another --output."
        )
    if not interrupted:
        raise FileExistsError(f"output folder {folder} is not empty and contains no recx run. Choose an empty or new folder for --output.")


def train_run(settings: RunSettings, output: str | os.PathLike[str], *, resume: bool = False) -> RunResult:
    """Load data, split, train the two-tower model, score it against MostPopular and write the run folder.

    Training writes its state to ``output/checkpoint/`` after every epoch.
    With ``resume=True``, a run killed before it finished continues from its
    last finished epoch and ends with the same model and metrics as an
    uninterrupted run. ``settings`` must be those of the interrupted run,
    except ``training.epochs`` and ``training.show_progress``. Without a
    checkpoint in ``output``, ``resume=True`` starts from epoch 1.
    """
    folder = Path(output)
    _check_output_folder(folder, resume=resume)
    started = time.perf_counter()

    # Step 1: data and split. The split is deterministic given the settings,
    # so `recx evaluate` can rebuild the same test set later.
    interactions = load_data(settings)
    split = make_split(settings, interactions)
    history = split.train if split.validation is None else merge_interactions(split.train, split.validation)
    logger.info("split %s: train %d, validation %d, test %d interactions", settings.split.get("protocol"), split.train.nnz, 0 if split.validation is None else split.validation.nnz, split.test.nnz)

    # Step 2: train, with early stopping on the validation part when there is one.
    training = settings.training_config()
    init, fine_tuning = transfer_objects(settings)
    recommender = TwoTowerRecommender(training=training, init=init, fine_tuning=fine_tuning, **settings.model)
    recommender.fit(split.train, validation=split.validation, checkpoint_dir=folder / CHECKPOINT_FOLDER, resume=resume)

    # Step 3: score the model and the popularity baseline on the same test set,
    # both with train + validation as the known history.
    metrics = score_models(recommender, history, split.test, settings.k)

    # Step 4: write the run folder; each file is replaced atomically.
    recommender.save(folder)
    write_json_atomic(folder / METRICS_FILE, metrics)
    write_json_atomic(folder / RUN_FILE, _run_record(settings, interactions, split, recommender, time.perf_counter() - started))
    return RunResult(recommender, metrics, folder)


def score_models(recommender: TwoTowerRecommender, history: Interactions, test: Interactions, k: list[int]) -> dict[str, dict[str, float]]:
    """Evaluate the model and a MostPopular baseline fitted on ``history``."""
    popular = MostPopular().fit(history)
    return {
        "model": evaluate(recommender, history, test, k=k),
        "most_popular": evaluate(popular, history, test, k=k),
    }


def _run_record(settings: RunSettings, interactions: Interactions, split: Split, recommender: TwoTowerRecommender, seconds: float) -> dict[str, Any]:
    import faiss
    import torch
    import torchrec

    return {
        "format_version": RUN_FORMAT_VERSION,
        "settings": settings.to_dict(),
        "data": {"users": interactions.n_users, "items": interactions.n_items, "interactions": interactions.nnz},
        "split": {
            "train": split.train.nnz,
            "validation": 0 if split.validation is None else split.validation.nnz,
            "test": split.test.nnz,
            "test_users": int(np.count_nonzero(split.test.user_counts())),
        },
        "training": None if recommender.history is None else recommender.history.to_dict(),
        "seconds": round(seconds, 2),
        "versions": {
            "recx": recx.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torchrec": getattr(torchrec, "__version__", "unknown"),
            "faiss": faiss.__version__,
        },
    }


def read_run(folder: str | os.PathLike[str]) -> tuple[RunSettings, dict[str, Any]]:
    """Read a run folder's settings and record, raising clearly if it is not one."""
    path = Path(folder)
    if not (path / RUN_FILE).is_file():
        raise FileNotFoundError(f"no recx run at {path}: {RUN_FILE} not found. Pass the --output folder of `recx train`.")
    record = read_json(path / RUN_FILE, what="run record")
    if record.get("format_version") != RUN_FORMAT_VERSION:
        raise ValueError(f"unsupported run format version {record.get('format_version')!r} in {path / RUN_FILE}: this recx reads version {RUN_FORMAT_VERSION}.")
    return RunSettings.from_dict(record["settings"], source=str(path / RUN_FILE)), record


def evaluate_run(folder: str | os.PathLike[str], *, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Rebuild a run's split from its settings and score its saved model and MostPopular again."""
    settings, _ = read_run(folder)
    recommender = TwoTowerRecommender.load(folder, device=device)
    interactions = load_data(settings)
    split = make_split(settings, interactions)
    history = split.train if split.validation is None else merge_interactions(split.train, split.validation)
    saved = recommender.train
    assert saved is not None
    if saved.users != history.users or saved.items != history.items or (saved.matrix != history.matrix).nnz:
        raise ValueError(f"the data no longer matches run {folder}: its split differs from the one the model was trained on. Check that the dataset files have not changed.")
    return score_models(recommender, history, split.test, settings.k)


def latest_run(root: str | os.PathLike[str] = "runs") -> Path:
    """Return the most recently written run folder under ``root``."""
    base = Path(root)
    runs = [path.parent for path in base.glob(f"*/{RUN_FILE}")] if base.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no recx run found under {base}/. Train one with `recx train --output {base}/NAME`, or name the run folder explicitly.")
    return max(runs, key=lambda path: (path / RUN_FILE).stat().st_mtime)
