"""The benchmark runner: every model tuned on validation, refitted, and scored once on test.

For each dataset, :func:`run_dataset` splits the data once, and every
model gets that split. For each model:

1. Every configuration of its grid (:mod:`recx.bench.specs`) is fitted on
   ``train`` and scored on ``validation``, with train items excluded.
2. The configuration with the highest validation selection metric
   (NDCG@20 on the temporal splits, NDCG@10 on leave-one-out) is chosen;
   ties go to the earlier configuration of the grid.
3. The chosen configuration is refitted on ``train + validation``, the
   history a deployed model would have. The two-tower refit trains for the
   best epoch count found on validation, without early stopping.
4. The refitted model is scored on ``test`` once, with train and validation
   items excluded.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import recx
from recx.baselines import BPRMF, EASE, IALS, ItemKNN, MostPopular
from recx.bench.specs import CUTOFFS, DATASETS, DEFAULT_CONFIGS, DEFAULT_DATA_ROOT, MODELS, QUICK_DATASETS, DatasetSpec, baseline_grid, two_tower_grid, two_tower_settings
from recx.data import Interactions, Split
from recx.data.interactions import merge_interactions
from recx.evaluation import evaluate
from recx.recommender import Recommender

logger = logging.getLogger(__name__)

__all__ = ["BenchOptions", "compare_evaluation_speed", "resolve_names", "run_bench", "run_dataset", "thread_counts", "time_interleaved"]

#: Refit rule applied to every model, recorded in results.json.
REFIT_RULE = "refit the chosen configuration on train + validation, then score test once with train + validation items excluded"

BASELINES: dict[str, Callable[..., Recommender]] = {
    "MostPopular": MostPopular,
    "ItemKNN": ItemKNN,
    "EASE": EASE,
    "IALS": IALS,
    "BPRMF": BPRMF,
}


@dataclass
class BenchOptions:
    """Options of one benchmark run.

    Attributes
    ----------
    datasets : list of str or None
        Dataset names from :data:`recx.bench.specs.DATASETS`; None runs all
        of them, or :data:`~recx.bench.specs.QUICK_DATASETS` in quick mode.
    models : list of str or None
        Model names from :data:`recx.bench.specs.MODELS`; None runs all.
    quick : bool
        Smaller grids and at most 5 two-tower epochs, for a check in minutes.
    data_root : Path
        Folder holding ``ml-100k/`` and ``s3rec-sequential/``.
    configs : Path
        Folder of the per-dataset two-tower TOML configs.
    show_progress : bool
        Show a progress bar over (dataset, model) steps.
    speed_repeats : int
        Timed repetitions of each evaluation in the speed comparison; the
        report quotes the fastest, and the record also keeps the medians.
    """

    datasets: list[str] | None = None
    models: list[str] | None = None
    quick: bool = False
    data_root: Path = DEFAULT_DATA_ROOT
    configs: Path = DEFAULT_CONFIGS
    show_progress: bool = True
    speed_repeats: int = 3
    specs: dict[str, DatasetSpec] = field(default_factory=lambda: dict(DATASETS))


def resolve_names(requested: Sequence[str] | None, known: Sequence[str], kind: str, default: Sequence[str] | None = None) -> list[str]:
    """Match requested names to known ones case-insensitively, keeping the known order.

    Raises
    ------
    ValueError
        If a requested name is not known.
    """
    if requested is None:
        return list(default if default is not None else known)
    by_lower = {name.lower(): name for name in known}
    unknown = [name for name in requested if name.lower() not in by_lower]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}: expected names from {list(known)}.")
    chosen = {by_lower[name.lower()] for name in requested}
    return [name for name in known if name in chosen]


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run every selected model on every selected dataset and return the results record.

    Returns
    -------
    dict
        JSON-ready: ``"mode"``, ``"refit_rule"``, ``"cutoffs"``,
        ``"datasets"`` (one record per dataset, see :func:`run_dataset`),
        ``"versions"``, ``"machine"``, ``"started_at"`` and ``"seconds"``.
    """
    quick_default = [name for name in QUICK_DATASETS if name in options.specs]
    dataset_names = resolve_names(options.datasets, list(options.specs), "datasets", quick_default if options.quick else None)
    model_names = resolve_names(options.models, MODELS, "models")
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    progress = tqdm(total=len(dataset_names) * len(model_names), desc="bench", unit="model", disable=not options.show_progress)
    records = []
    with progress:
        for name in dataset_names:
            records.append(run_dataset(options.specs[name], model_names, options, progress))
    return {
        "benchmark": "recx bench",
        "mode": "quick" if options.quick else "full",
        "refit_rule": REFIT_RULE,
        "cutoffs": list(CUTOFFS),
        "data_root": str(options.data_root),
        "datasets": records,
        "versions": library_versions(),
        "machine": machine_description(),
        "started_at": started_at,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_dataset(spec: DatasetSpec, model_names: Sequence[str], options: BenchOptions, progress: Any = None) -> dict[str, Any]:
    """Split one dataset and tune, refit and test every model on it.

    Returns
    -------
    dict
        ``{"dataset", "skipped"}`` when the data is absent, otherwise
        ``"dataset"``, ``"source"``, ``"protocol"``, ``"selection_metric"``,
        ``"split"`` (sizes), ``"models"`` (one record per model, see
        :func:`tune_and_test`) and, when IALS ran, ``"evaluation_speed"``.
    """
    reason = spec.missing(options.data_root)
    if reason is not None:
        logger.warning("skipping %s: %s", spec.name, reason)
        if progress is not None:
            progress.update(len(model_names))
        return {"dataset": spec.name, "skipped": reason}

    started = time.perf_counter()
    interactions = spec.load(options.data_root)
    split = spec.split(interactions)
    if split.validation is None:
        raise ValueError(f"the split of {spec.name} has no validation part; the benchmark tunes every model on validation.")
    history = merge_interactions(split.train, split.validation)
    record: dict[str, Any] = {
        "dataset": spec.name,
        "source": spec.source(options.data_root),
        "protocol": spec.protocol,
        "selection_metric": spec.selection_metric,
        "split": {
            "protocol": split.protocol,
            "params": split.params,
            "users": interactions.n_users,
            "items": interactions.n_items,
            "interactions": interactions.nnz,
            "train": split.train.nnz,
            "validation": split.validation.nnz,
            "test": split.test.nnz,
            "test_users": int(np.count_nonzero(split.test.user_counts())),
        },
        "load_seconds": round(time.perf_counter() - started, 2),
        "models": [],
    }
    logger.info("%s: %d users x %d items, train %d, validation %d, test %d", spec.name, interactions.n_users, interactions.n_items, split.train.nnz, split.validation.nnz, split.test.nnz)

    for model in model_names:
        if progress is not None:
            progress.set_postfix_str(f"{spec.name} {model}")
        if model == "TwoTower":
            try:
                settings = two_tower_settings(spec, options.configs)
            except FileNotFoundError as error:
                logger.warning("skipping TwoTower on %s: %s", spec.name, error)
                record["models"].append({"model": model, "skipped": str(error)})
                if progress is not None:
                    progress.update(1)
                continue
            grid = two_tower_grid(settings, options.quick, spec.two_tower_variants)
            entry = tune_and_test(model, grid, split, history, spec.selection_metric, fit=_fit_two_tower, refit=_refit_two_tower)
            entry["config_source"] = settings["source"]
        else:
            grid = baseline_grid(model, spec.name, options.quick)
            entry = tune_and_test(model, grid, split, history, spec.selection_metric, fit=_fit_baseline(model), refit=_fit_baseline(model))
        record["models"].append(entry)
        if model == "IALS":
            cutoff = int(spec.selection_metric.split("@")[1])
            record["evaluation_speed"] = compare_evaluation_speed(entry.pop("_fitted"), history, split.test, cutoff, repeats=options.speed_repeats)
        entry.pop("_fitted", None)
        if progress is not None:
            progress.update(1)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


# ------------------------------------------------------------------ tuning


FitFunction = Callable[[dict[str, Any], Interactions, Interactions | None], tuple[Recommender, dict[str, Any]]]


def _fit_baseline(model: str) -> FitFunction:
    """Return a function that builds a baseline from a configuration and fits it."""
    factory = BASELINES[model]

    def fit(params: dict[str, Any], train: Interactions, validation: Interactions | None) -> tuple[Recommender, dict[str, Any]]:
        return factory(**params).fit(train), {}

    return fit


def _fit_two_tower(params: dict[str, Any], train: Interactions, validation: Interactions | None) -> tuple[Recommender, dict[str, Any]]:
    """Train a two-tower model with early stopping on ``validation``, then restore train as its history."""
    from recx.training import TrainConfig, TwoTowerRecommender

    model = TwoTowerRecommender(training=TrainConfig.from_dict(params["training"]), **params["model"])
    model.fit(train, validation=validation)
    # fit() adds validation to the user histories for serving; scoring validation
    # needs the history the model was selected with, which is train alone.
    model.set_history(train)
    assert model.history is not None
    return model, {"best_epoch": model.history.best_epoch, "epochs_run": len(model.history.epochs), "stopped_early": model.history.stopped_early}


def _refit_two_tower(params: dict[str, Any], history: Interactions, validation: Interactions | None) -> tuple[Recommender, dict[str, Any]]:
    """Train the chosen two-tower configuration on train + validation for the best epoch count, without early stopping."""
    from recx.training import TrainConfig, TwoTowerRecommender

    training = dict(params["training"])
    best_epoch = params.get("best_epoch")
    if best_epoch:
        training["epochs"] = int(best_epoch)
    training["patience"] = 0
    model = TwoTowerRecommender(training=TrainConfig.from_dict(training), **params["model"])
    model.fit(history)
    return model, {"epochs": training["epochs"]}


def tune_and_test(
    model: str,
    grid: list[dict[str, Any]],
    split: Split,
    history: Interactions,
    selection_metric: str,
    *,
    fit: FitFunction,
    refit: FitFunction,
) -> dict[str, Any]:
    """Score each configuration on validation, refit the best on ``history`` and score it on test once.

    Parameters
    ----------
    model : str
        Name for the record.
    grid : list of dict
        Configurations, passed to ``fit`` in order.
    split : Split
        With a validation part.
    history : Interactions
        ``train + validation``.
    selection_metric : str
        Validation key to maximise, such as ``"ndcg@20"``.
    fit, refit : callable
        ``fit(params, train, validation) -> (model, extra)``; ``extra`` is
        merged into the grid record (the two-tower's best epoch) and, for
        the chosen configuration, passed on to ``refit``.

    Returns
    -------
    dict
        ``"model"``, ``"grid"`` (per configuration: ``"params"``,
        ``"validation"`` metrics, ``"fit_seconds"``, extras),
        ``"chosen_index"``, ``"chosen"``, ``"refit"``, ``"test"`` metrics,
        ``"test_evaluations"`` (always 1) and seconds.
    """
    assert split.validation is not None
    rows = []
    for params in grid:
        started = time.perf_counter()
        fitted, extra = fit(params, split.train, split.validation)
        fit_seconds = time.perf_counter() - started
        validation = evaluate(fitted, split.train, split.validation, k=CUTOFFS)
        rows.append({"params": params, **extra, "validation": validation, "fit_seconds": round(fit_seconds, 2)})
        logger.info("%s %s: validation %s %.4f (fit %.1f s)", model, _describe(params), selection_metric, validation[selection_metric], fit_seconds)
        del fitted

    # The first configuration with the best validation score wins, so ties are reproducible.
    scores = [row["validation"][selection_metric] for row in rows]
    chosen_index = int(np.argmax(scores))
    chosen = {**rows[chosen_index]["params"], **{key: value for key, value in rows[chosen_index].items() if key not in ("params", "validation", "fit_seconds")}}

    started = time.perf_counter()
    final, refit_extra = refit(chosen, history, None)
    refit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test = evaluate(final, history, split.test, k=CUTOFFS)
    test_seconds = time.perf_counter() - started
    logger.info("%s chosen %s: test %s %.4f", model, _describe(rows[chosen_index]["params"]), selection_metric, test[selection_metric])
    return {
        "model": model,
        "selection_metric": selection_metric,
        "grid": rows,
        "chosen_index": chosen_index,
        "chosen": rows[chosen_index]["params"],
        "refit": {"data": "train+validation", **refit_extra, "fit_seconds": round(refit_seconds, 2)},
        "test": test,
        "test_evaluations": 1,
        "test_seconds": round(test_seconds, 2),
        "_fitted": final,
    }


def _describe(params: dict[str, Any]) -> str:
    if "variant" in params:
        return str(params["variant"])
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "defaults"


# ------------------------------------------------------------ evaluation speed


def compare_evaluation_speed(model: IALS, history: Interactions, test: Interactions, k: int, *, repeats: int = 3, warmup: bool = False) -> dict[str, Any]:
    """Time recx's :func:`~recx.evaluation.evaluate` against ``implicit.evaluation.ranking_metrics_at_k``.

    Both rank the whole catalogue for every test user with the same fitted
    implicit model, exclude the same ``history`` items and score the same
    ``test`` matrix at cut-off ``k``. recx computes NDCG, MAP and precision
    (implicit computes those and AUC), and the full recx report (all seven
    metrics at 10 and 20) is timed as well.

    The two are timed in turn, ``repeats`` times (recx, implicit, recx,
    implicit, ...), so a burst of load from other processes hits both
    alike. ``warmup`` first runs each once untimed, which keeps one-off
    costs (imports, first touches of memory) out of the timings; in
    ``recx bench`` the tuning runs before have already paid them. The
    record keeps every timing, the fastest of each (``"recx_seconds"``,
    ``"implicit_seconds"``, ``"ratio"``) and the medians
    (``"median_ratio"``), the steadier figure on a shared machine.

    NDCG@k and MAP@k have the same definitions in both libraries (binary
    gains, ``log2`` discount, ideal DCG and AP normalised by
    ``min(k, |R_u|)``), so they must agree up to ties in score. implicit's
    ``precision`` is ``sum_u H_u / sum_u min(k, |R_u|)``, pooled over users,
    while recx's ``precision@k`` is the mean of ``H_u / k``, so those differ
    by design and are recorded, not compared.

    Returns
    -------
    dict
        Seconds of each, ``"ratio"`` and ``"median_ratio"`` (recx seconds /
        implicit seconds, below 1 when recx is faster), the thread counts,
        both metric sets and the absolute NDCG and MAP differences.
    """
    from implicit.evaluation import ranking_metrics_at_k

    repeats = max(1, int(repeats))
    recx_metrics: dict[str, float] = {}
    implicit_metrics: dict[str, float] = {}

    def run_recx() -> None:
        nonlocal recx_metrics
        recx_metrics = evaluate(model, history, test, k=[k], metrics=["ndcg", "map", "precision"])

    def run_implicit() -> None:
        nonlocal implicit_metrics
        implicit_metrics = ranking_metrics_at_k(model.model, history.matrix, test.matrix, K=k, show_progress=False)

    timings = time_interleaved({"recx": run_recx, "implicit": run_implicit}, repeats, warmup=warmup)
    full = time_interleaved({"recx_all": lambda: evaluate(model, history, test, k=CUTOFFS)}, repeats, warmup=False)

    recx_best, implicit_best = min(timings["recx"]), min(timings["implicit"])
    recx_median, implicit_median = float(np.median(timings["recx"])), float(np.median(timings["implicit"]))
    result = {
        "k": k,
        "users": recx_metrics["users"],
        "repeats": repeats,
        "warmup": warmup,
        "recx_seconds": recx_best,
        "implicit_seconds": implicit_best,
        "ratio": recx_best / implicit_best,
        "recx_median_seconds": recx_median,
        "implicit_median_seconds": implicit_median,
        "median_ratio": recx_median / implicit_median,
        "recx_times": timings["recx"],
        "implicit_times": timings["implicit"],
        "recx_all_metrics_seconds": min(full["recx_all"]),
        "threads": thread_counts(model),
        "recx": {key: value for key, value in recx_metrics.items() if key != "users"},
        "implicit": {key: float(value) for key, value in implicit_metrics.items()},
        "ndcg_difference": abs(recx_metrics[f"ndcg@{k}"] - float(implicit_metrics["ndcg"])),
        "map_difference": abs(recx_metrics[f"map@{k}"] - float(implicit_metrics["map"])),
        "model": repr(model),
    }
    logger.info(
        "evaluation speed at k=%d on %d users: recx %.2f s, implicit %.2f s (median ratio %.2f, fastest %.2f)",
        k, result["users"], recx_median, implicit_median, result["median_ratio"], result["ratio"],
    )
    return result


def time_interleaved(functions: dict[str, Callable[[], Any]], repeats: int, *, warmup: bool = True) -> dict[str, list[float]]:
    """Call each function in turn, ``repeats`` rounds, and return each one's wall-clock seconds per round.

    Parameters
    ----------
    functions : dict of str to callable
        Called without arguments, in the dict's order within each round.
    repeats : int
        Timed rounds, >= 1.
    warmup : bool, default=True
        Call each function once, untimed, before the first round.

    Returns
    -------
    dict of str to list of float
        Same keys as ``functions``; ``repeats`` timings each, in round order.
    """
    if warmup:
        for function in functions.values():
            function()
    timings: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(max(1, int(repeats))):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            timings[name].append(time.perf_counter() - started)
    return timings


def thread_counts(model: IALS | None = None) -> dict[str, int | None]:
    """Return the threads that evaluation timings run with: torch's intra-op pool, BLAS and the implicit model's own."""
    import torch
    from threadpoolctl import threadpool_info

    blas = [pool.get("num_threads") for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return {
        "torch": torch.get_num_threads(),
        "blas": max(blas) if blas else None,
        "implicit": None if model is None or model.model is None else int(model.model.num_threads),
    }


# ------------------------------------------------------------ environment


def library_versions() -> dict[str, str]:
    """Return the versions of recx and the libraries the benchmark runs on."""
    import faiss
    import implicit
    import scipy
    import torch
    import torchrec

    return {
        "recx": recx.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "implicit": implicit.__version__,
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "unknown"),
        "faiss": faiss.__version__,
    }


def machine_description() -> dict[str, Any]:
    """Return the platform, CPU count and thread settings the timings ran with."""
    import torch

    from recx.baselines.ials import default_threads

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_cores": default_threads(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
