"""The benchmark plan of `recx bench`: datasets with their split protocols, and the tuning grid of each model."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recx.data import Interactions, Split, leave_one_out, load_dataset, temporal_split

#: Root of a recx checkout (the folder holding pyproject.toml) when recx runs from one.
REPOSITORY = Path(__file__).resolve().parents[2]

#: Default folder of the shared datasets: ``shared/data`` next to the repository.
DEFAULT_DATA_ROOT = REPOSITORY.parent / "shared" / "data"

#: Default folder of the per-dataset two-tower configs.
DEFAULT_CONFIGS = REPOSITORY / "benchmarks" / "configs"

#: Metric cut-offs reported for every model.
CUTOFFS: tuple[int, ...] = (10, 20)


@dataclass
class DatasetSpec:
    """One benchmark dataset: how to load it, how to split it and which metric picks configurations.

    Attributes
    ----------
    name : str
        Name used on the command line and in results.
    load : callable
        ``load(data_root) -> Interactions``; raises FileNotFoundError (or
        returns through :attr:`missing`) when the data is absent.
    split : callable
        ``split(interactions) -> Split`` with a validation part.
    selection_metric : str
        Validation metric that picks each model's configuration, a key of
        :func:`~recx.evaluation.evaluate` such as ``"ndcg@20"``.
    protocol : str
        One sentence describing the split, for reports.
    source : callable
        ``source(data_root) -> str``: the file or folder read, for reports.
    missing : callable
        ``missing(data_root) -> str | None``: why the data cannot be read, or None.
    two_tower : dict or None
        Two-tower settings (``model`` and ``training`` tables); None reads
        ``<configs>/<name>.toml``.
    two_tower_variants : bool
        Try the :data:`TWO_TOWER_VARIANTS` on validation in a full run, not
        only the config. Off for the Amazon sets, where each two-tower
        training run takes minutes on a CPU.
    """

    name: str
    load: Callable[[Path], Interactions]
    split: Callable[[Interactions], Split]
    selection_metric: str
    protocol: str
    source: Callable[[Path], str] = lambda root: "embedded"
    missing: Callable[[Path], str | None] = lambda root: None
    two_tower: dict[str, Any] | None = field(default=None)
    two_tower_variants: bool = True


def _temporal(interactions: Interactions) -> Split:
    return temporal_split(interactions, test_fraction=0.2, validation_fraction=0.1)


def _leave_last_out(interactions: Interactions) -> Split:
    return leave_one_out(interactions, validation=True)


def _file_check(relative: str) -> Callable[[Path], str | None]:
    def missing(root: Path) -> str | None:
        path = root / relative
        return None if path.exists() else f"{path} not found; place the data there or pass --data-root"

    return missing


TEMPORAL_PROTOCOL = (
    "per-user temporal holdout: the latest 20% of each user's interactions are test, "
    "the latest 10% of the rest are validation; every rating counts as a positive"
)
LEAVE_ONE_OUT_PROTOCOL = "leave-last-one-out: each user's last item is test and the second-to-last is validation"

DATASETS: dict[str, DatasetSpec] = {
    "ml-latest-small": DatasetSpec(
        name="ml-latest-small",
        load=lambda root: load_dataset("movielens-latest-small"),
        split=_temporal,
        selection_metric="ndcg@20",
        protocol=TEMPORAL_PROTOCOL,
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        load=lambda root: load_dataset("movielens-100k", path=root / "ml-100k"),
        split=_temporal,
        selection_metric="ndcg@20",
        protocol=TEMPORAL_PROTOCOL,
        source=lambda root: str(root / "ml-100k"),
        missing=_file_check("ml-100k/u.data"),
    ),
    "amazon-beauty": DatasetSpec(
        name="amazon-beauty",
        load=lambda root: load_dataset("amazon-beauty", path=root / "s3rec-sequential" / "Beauty.txt"),
        split=_leave_last_out,
        selection_metric="ndcg@10",
        protocol=LEAVE_ONE_OUT_PROTOCOL,
        source=lambda root: str(root / "s3rec-sequential" / "Beauty.txt"),
        missing=_file_check("s3rec-sequential/Beauty.txt"),
        two_tower_variants=False,
    ),
    "amazon-sports": DatasetSpec(
        name="amazon-sports",
        load=lambda root: load_dataset("amazon-sports", path=root / "s3rec-sequential" / "Sports_and_Outdoors.txt"),
        split=_leave_last_out,
        selection_metric="ndcg@10",
        protocol=LEAVE_ONE_OUT_PROTOCOL,
        source=lambda root: str(root / "s3rec-sequential" / "Sports_and_Outdoors.txt"),
        missing=_file_check("s3rec-sequential/Sports_and_Outdoors.txt"),
        two_tower_variants=False,
    ),
}

#: Datasets a quick run covers when --datasets is not given.
QUICK_DATASETS: tuple[str, ...] = ("ml-latest-small", "ml-100k")

#: Model names in report order.
MODELS: tuple[str, ...] = ("MostPopular", "ItemKNN", "EASE", "IALS", "BPRMF", "TwoTower")


def product_grid(**values: list[Any]) -> list[dict[str, Any]]:
    """Return every combination of the given parameter values, the last parameter varying fastest."""
    names = list(values)
    return [dict(zip(names, combination)) for combination in itertools.product(*(values[name] for name in names))]


def baseline_grid(model: str, dataset: str, quick: bool) -> list[dict[str, Any]]:
    """Return the configurations tried for a baseline on a dataset, as constructor keyword arguments.

    The grids are the stated tuning budget of each baseline: every
    configuration is fitted on train and scored on validation once.
    """
    sparse_amazon = dataset.startswith("amazon")
    if model == "MostPopular":
        return [{}]
    if model == "ItemKNN":
        return product_grid(k_neighbors=[100], shrink=[0.0, 10.0]) if quick else product_grid(k_neighbors=[50, 100, 200], shrink=[0.0, 10.0])
    if model == "EASE":
        if quick:
            return product_grid(l2=[300.0, 1000.0])
        # The Amazon sets have 12,101 and 18,357 items, and each EASE fit there
        # takes minutes on a CPU. Three penalties keep the run short.
        return product_grid(l2=[50.0, 200.0, 800.0]) if sparse_amazon else product_grid(l2=[100.0, 300.0, 1000.0, 3000.0])
    if model == "IALS":
        if quick:
            return product_grid(factors=[64], regularization=[0.1], alpha=[2.0, 10.0], iterations=[15], seed=[0])
        return product_grid(factors=[64, 128], regularization=[0.1, 1.0], alpha=[2.0, 10.0, 40.0], iterations=[15], seed=[0])
    if model == "BPRMF":
        if quick:
            return product_grid(factors=[64], learning_rate=[0.01, 0.05], regularization=[0.01], iterations=[50], seed=[0])
        return product_grid(factors=[64, 128], learning_rate=[0.01, 0.05], regularization=[0.001, 0.01], iterations=[100], seed=[0])
    raise ValueError(f"unknown baseline {model!r}: expected one of {list(MODELS[:-1])}.")


#: Two-tower variants tried on validation in a full run, each as overrides of the
#: dataset's config: (name, overrides of [training], description).
TWO_TOWER_VARIANTS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("config", {}, "the settings of benchmarks/configs/<dataset>.toml"),
    ("mixed-negatives", {"negatives": 1024}, "1,024 uniformly sampled negatives per batch added to the in-batch ones (mixed negative sampling)"),
    ("weight-decay", {"weight_decay": 1e-6}, "L2 weight decay 1e-6 in Adam"),
    ("long-low-lr", {"learning_rate": 0.001, "epochs": 60, "patience": 5}, "learning rate 0.001 for up to 60 epochs, patience 5"),
)

#: Epoch cap of the two-tower in a quick run.
QUICK_EPOCHS = 5


def two_tower_settings(spec: DatasetSpec, configs: Path) -> dict[str, Any]:
    """Return the two-tower ``model`` and ``training`` tables for a dataset.

    Raises
    ------
    FileNotFoundError
        If the dataset has no settings and ``configs/<name>.toml`` is missing.
    """
    if spec.two_tower is not None:
        return {"model": dict(spec.two_tower.get("model", {})), "training": dict(spec.two_tower.get("training", {})), "source": "given"}
    path = configs / f"{spec.name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"two-tower config not found: {path}. Write one (see benchmarks/configs/ml-100k.toml) or pass --configs.")
    payload = tomllib.loads(path.read_text(encoding="utf-8"))
    return {"model": dict(payload.get("model", {})), "training": dict(payload.get("training", {})), "source": str(path)}


def two_tower_grid(settings: dict[str, Any], quick: bool, variants: bool = True) -> list[dict[str, Any]]:
    """Return the two-tower configurations tried on validation: ``{"variant", "model", "training"}`` each.

    Quick runs, and full runs with ``variants=False``, try the config alone.
    """
    variants = TWO_TOWER_VARIANTS[:1] if quick or not variants else TWO_TOWER_VARIANTS
    grid = []
    for name, overrides, _ in variants:
        training = {**settings["training"], **overrides, "show_progress": False}
        if quick:
            training["epochs"] = min(int(training.get("epochs", QUICK_EPOCHS)), QUICK_EPOCHS)
        grid.append({"variant": name, "model": dict(settings["model"]), "training": training})
    return grid
