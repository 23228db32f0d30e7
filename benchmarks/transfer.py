"""Transfer experiments: scarce data, cold items and time to quality, on MovieLens.

Usage (from the repository root, after `make setup`)::

    .venv/bin/python benchmarks/transfer.py              # full run
    .venv/bin/python benchmarks/transfer.py --quick      # ml-100k only, one seed

Every model is a :class:`~recx.training.TwoTowerRecommender` with the
benchmark settings of ``benchmarks/configs/``; the variants differ only in
their initialisation (``init``) and fine-tuning policy:

- *scratch*: random initialisation;
- *text*: all-MiniLM-L6-v2 over "title | genres", as an item-tower input and
  as the principal components written into the item-indexed tables;
- *cross*: a two-tower model trained on the other MovieLens dataset, items
  matched by normalised title and year;
- *text+cross*: both (text first; cross overwrites the rows it matches).

Experiments (per-user temporal split: last 20% test, then last 10% of the
rest as validation):

1. Scarce data: train on 10%, 25%, 50% and 100% of each user's training
   interactions (seeded); test NDCG@20 per variant, mean over seeds. Every
   seed runs at 10% and 25%; the policy variants and the larger shares run
   on the first seed.
2. Cold items (first seed): 15% of the items lose every training and
   validation interaction. Recall@20 and NDCG@20 rank the whole catalogue
   and count the test interactions with those items. The models are the
   text two-tower (with and without the content loss), the id-only
   two-tower and a content baseline (cosine between an item's text vector
   and the mean text vector of the user's history).
3. Time to quality: epochs and training seconds each variant needs before
   its validation NDCG@20 reaches the best validation NDCG@20 of scratch.

Writes ``OUTPUT/results.json``, ``OUTPUT/results.md``, ``OUTPUT/scarce.png``,
``OUTPUT/cold.png``, ``OUTPUT/time.png`` and the marked section of
``docs/transfer.md``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import recx
from recx._io import read_json, write_bytes_atomic, write_json_atomic
from recx.data import Interactions, drop_items, keep_items, load_dataset, sample_per_user, split_interactions
from recx.data.interactions import merge_interactions
from recx.evaluation import evaluate
from recx.training import TrainConfig, TwoTowerRecommender
from recx.transfer import FineTuning, RunInit, TextInit, encode_items
from recx.transfer.content import TextSimilarity

REPO = Path(__file__).resolve().parents[1]
DOCS_PAGE = REPO / "docs" / "transfer.md"
SECTION_START = "<!-- benchmarks/transfer.py: start -->"
SECTION_END = "<!-- benchmarks/transfer.py: end -->"

#: Acceptance: best transfer over scratch at these fractions on ml-100k, and text two-tower over content on cold items.
TARGET_SCARCE_RATIO = 1.10
TARGET_COLD_RATIO = 1.5
COLD_FRACTION = 0.15
ACCEPTANCE_FRACTIONS = (0.1, 0.25)

DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {"name": "movielens-100k", "path": REPO.parent / "shared" / "data" / "ml-100k", "source": "ml-latest-small"},
    "ml-latest-small": {"name": "movielens-latest-small", "path": None, "source": "ml-100k"},
}

# Model and training settings of benchmarks/configs/ (the same for both datasets).
MODEL = {"embedding_dim": 64, "hidden_dims": [128], "output_dim": 64, "temperature": 0.1, "recent_items": 5}
TRAINING = {"epochs": 40, "batch_size": 1024, "learning_rate": 0.003, "patience": 3, "max_history": 10, "show_progress": False}

logger = logging.getLogger("benchmarks.transfer")


def load(name: str) -> Interactions:
    spec = DATASETS[name]
    return load_dataset(spec["name"], None if spec["path"] is None else str(spec["path"]))


def make_split(data: Interactions):
    return split_interactions(data, "temporal", test_fraction=0.2, validation_fraction=0.1)


def train_source(name: str, folder: Path) -> dict[str, Any]:
    """Train the cross-dataset source model on all of ``name`` but a 10% temporal tail; save it to ``folder``."""
    if (folder / "recommender.json").is_file():
        logger.info("source model for %s found in %s", name, folder)
        return read_json(folder / "source.json", what="source record")
    data = load(name)
    split = split_interactions(data, "temporal", test_fraction=0.1, validation_fraction=0.1)
    started = time.perf_counter()
    model = TwoTowerRecommender(**MODEL, training=TrainConfig(**TRAINING, seed=0)).fit(split.train, validation=split.validation)
    record = {"dataset": name, "train": split.train.nnz, "best_epoch": model.history.best_epoch, "seconds": round(time.perf_counter() - started, 1)}
    model.save(folder)
    write_json_atomic(folder / "source.json", record)
    return record


def variants(source: Path, *, policies: bool) -> dict[str, Callable[[], tuple[list[Any], FineTuning | None]]]:
    """Return variant name -> factory of (init, fine_tuning)."""
    table: dict[str, Callable[[], tuple[list[Any], FineTuning | None]]] = {
        "scratch": lambda: ([], None),
        "text": lambda: ([TextInit()], None),
        "cross": lambda: ([RunInit(source)], None),
        "text+cross": lambda: ([TextInit(), RunInit(source)], None),
    }
    if policies:
        table.update(
            {
                "cross, L2-SP 1e-4": lambda: ([RunInit(source)], FineTuning(l2_sp=1e-4)),
                "cross, pretrained lr x0.3": lambda: ([RunInit(source)], FineTuning(pretrained_lr_scale=0.3)),
                "cross, tables frozen 2 epochs": lambda: ([RunInit(source)], FineTuning(freeze=["item_id", "user_history", "user_recent"], unfreeze_epoch=3)),
                "text, no tables": lambda: ([TextInit(tables=False)], None),
                "text, no item input": lambda: ([TextInit(features=False)], None),
                "text, id dropout 0.5": lambda: ([TextInit(id_dropout=0.5)], None),
                "text + content loss": lambda: ([TextInit(content_weight=1.0)], None),
            }
        )
    return table


def fit(train: Interactions, validation: Interactions, seed: int, init: list[Any], fine_tuning: FineTuning | None, **model: Any) -> tuple[TwoTowerRecommender, float]:
    started = time.perf_counter()
    recommender = TwoTowerRecommender(**{**MODEL, **model}, init=init, fine_tuning=fine_tuning, training=TrainConfig(**TRAINING, seed=seed))
    recommender.fit(train, validation=validation)
    return recommender, time.perf_counter() - started


def curve(recommender: TwoTowerRecommender) -> list[dict[str, float]]:
    """Validation NDCG@20 and cumulative training seconds after each epoch."""
    assert recommender.history is not None
    total, points = 0.0, []
    for record in recommender.history.epochs:
        total += record.seconds
        points.append({"epoch": record.epoch, "validation": record.validation, "seconds": round(total, 3)})
    return points


def scarce(name: str, fractions: list[float], seeds: list[int], source: Path, policies: bool) -> list[dict[str, Any]]:
    data = load(name)
    split = make_split(data)
    records = []
    for fraction in fractions:
        # The acceptance fractions run on every seed. Larger shares, whose spread is
        # small, and the policy variants run on the first seed to bound the run time.
        for seed in seeds if fraction in ACCEPTANCE_FRACTIONS else seeds[:1]:
            train = sample_per_user(split.train, fraction, seed=seed)
            with_policies = policies and fraction in ACCEPTANCE_FRACTIONS and seed == seeds[0]
            for variant, factory in variants(source, policies=with_policies).items():
                init, fine_tuning = factory()
                recommender, seconds = fit(train, split.validation, seed, init, fine_tuning)
                metrics = evaluate(recommender, recommender.train, split.test, k=[20], metrics=["ndcg", "recall"])
                assert recommender.history is not None
                records.append(
                    {
                        "dataset": name,
                        "fraction": fraction,
                        "seed": seed,
                        "variant": variant,
                        "train_interactions": train.nnz,
                        "ndcg@20": metrics["ndcg@20"],
                        "recall@20": metrics["recall@20"],
                        "best_epoch": recommender.history.best_epoch,
                        "best_validation": recommender.history.best_validation,
                        "seconds": round(seconds, 2),
                        "curve": curve(recommender),
                        "init": recommender.transfer_report,
                    }
                )
                logger.info("%s %.2f seed %d %-28s NDCG@20 %.4f (%.0f s)", name, fraction, seed, variant, metrics["ndcg@20"], seconds)
    return records


def cold(name: str, seeds: list[int]) -> list[dict[str, Any]]:
    data = load(name)
    split = make_split(data)
    vectors = encode_items(data)
    records = []
    for seed in seeds:
        generator = np.random.default_rng(seed)
        cold_items = generator.choice(data.n_items, size=int(round(COLD_FRACTION * data.n_items)), replace=False)
        train = drop_items(split.train, cold_items)
        validation = drop_items(split.validation, cold_items)
        test = keep_items(split.test, cold_items)
        history = merge_interactions(train, validation)
        models: dict[str, Any] = {"content (text similarity)": TextSimilarity(vectors).fit(history)}
        models["two-tower, id only"], _ = fit(train, validation, seed, [], None, use_genres=False)
        models["two-tower, id + genres"], _ = fit(train, validation, seed, [], None)
        models["two-tower, text"], _ = fit(train, validation, seed, [TextInit()], None)
        models["two-tower, text + content loss"], _ = fit(train, validation, seed, [TextInit(content_weight=1.0)], None)
        for model_name, model in models.items():
            metrics = evaluate(model, history, test, k=[20], metrics=["recall", "ndcg"])
            records.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "model": model_name,
                    "cold_items": len(cold_items),
                    "cold_test_interactions": test.nnz,
                    "recall@20": metrics["recall@20"],
                    "ndcg@20": metrics["ndcg@20"],
                    "users": metrics.get("users"),
                }
            )
            logger.info("cold %s seed %d %-28s Recall@20 %.4f NDCG@20 %.4f", name, seed, model_name, metrics["recall@20"], metrics["ndcg@20"])
    return records


# ------------------------------------------------------------------ summaries


def mean_by(records: list[dict[str, Any]], keys: tuple[str, ...], metric: str) -> dict[tuple[Any, ...], tuple[float, float, int]]:
    groups: dict[tuple[Any, ...], list[float]] = {}
    for record in records:
        groups.setdefault(tuple(record[key] for key in keys), []).append(record[metric])
    return {key: (float(np.mean(values)), float(np.std(values)), len(values)) for key, values in groups.items()}


def time_to_quality(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each run, the first epoch whose validation reaches the best validation of scratch in the same setting."""
    target = {(r["dataset"], r["fraction"], r["seed"]): r["best_validation"] for r in records if r["variant"] == "scratch"}
    rows: dict[tuple[str, float, str], list[tuple[int | None, float | None]]] = {}
    for record in records:
        goal = target.get((record["dataset"], record["fraction"], record["seed"]))
        reached = next((point for point in record["curve"] if goal is not None and point["validation"] >= goal), None)
        rows.setdefault((record["dataset"], record["fraction"], record["variant"]), []).append((None, None) if reached is None else (reached["epoch"], reached["seconds"]))
    summary = []
    for (dataset, fraction, variant), hits in rows.items():
        done = [hit for hit in hits if hit[0] is not None]
        summary.append(
            {
                "dataset": dataset,
                "fraction": fraction,
                "variant": variant,
                "runs": len(hits),
                "reached": len(done),
                "epochs": float(np.mean([hit[0] for hit in done])) if done else None,
                "seconds": float(np.mean([hit[1] for hit in done])) if done else None,
            }
        )
    return summary


def acceptance(scarce_records: list[dict[str, Any]], cold_records: list[dict[str, Any]]) -> dict[str, Any]:
    means = mean_by(scarce_records, ("dataset", "fraction", "variant"), "ndcg@20")
    checks: dict[str, Any] = {}
    for fraction in ACCEPTANCE_FRACTIONS:
        scratch = means.get(("ml-100k", fraction, "scratch"))
        # Only variants run on every seed compete, so the ratio is a mean over the same seeds.
        runs = {variant: count for (dataset, f, variant), (_, _, count) in means.items() if dataset == "ml-100k" and f == fraction}
        candidates = {
            variant: value
            for (dataset, f, variant), value in means.items()
            if dataset == "ml-100k" and f == fraction and variant != "scratch" and runs[variant] == runs.get("scratch")
        }
        if scratch and candidates:
            best = max(candidates, key=lambda variant: candidates[variant][0])
            ratio = candidates[best][0] / scratch[0]
            checks[f"ml-100k {fraction:.0%} best transfer / scratch"] = {"best": best, "ratio": round(ratio, 3), "target": TARGET_SCARCE_RATIO, "met": ratio >= TARGET_SCARCE_RATIO}
    cold_means = mean_by(cold_records, ("dataset", "model"), "recall@20")
    for dataset in sorted({record["dataset"] for record in cold_records}):
        text = cold_means.get((dataset, "two-tower, text + content loss"))
        content = cold_means.get((dataset, "content (text similarity)"))
        if text and content and content[0] > 0:
            ratio = text[0] / content[0]
            checks[f"{dataset} cold Recall@20 text two-tower with content loss / content"] = {"ratio": round(ratio, 3), "target": TARGET_COLD_RATIO, "met": ratio >= TARGET_COLD_RATIO}
    return checks


def markdown(summary: dict[str, Any]) -> str:
    """Return results.md: the scarce-data, cold-item, time-to-quality and acceptance tables."""
    lines = _scarce_lines(summary["scarce"])
    if summary["cold"]:
        lines += _cold_lines(summary["cold"])
    lines += _time_lines(summary["time_to_quality"])
    lines += _acceptance_lines(summary["acceptance"])
    return "\n".join(lines) + "\n"


def _scarce_lines(records: list[dict[str, Any]]) -> list[str]:
    lines = ["### Scarce data: test NDCG@20 by share of training interactions", ""]
    means = mean_by(records, ("dataset", "fraction", "variant"), "ndcg@20")
    for dataset in dict.fromkeys(record["dataset"] for record in records):
        fractions = sorted({f for (d, f, _) in means if d == dataset})
        names = list(dict.fromkeys(r["variant"] for r in records if r["dataset"] == dataset))
        lines += [f"**{dataset}** (mean ± std over seeds, or the single value where one seed ran; ratio to scratch in brackets)", ""]
        lines.append("| variant | " + " | ".join(f"{f:.0%}" for f in fractions) + " |")
        lines.append("|:--|" + "--:|" * len(fractions))

        for variant in names:
            cells = [_scarce_cell(means.get((dataset, fraction, variant)), means.get((dataset, fraction, "scratch")), variant) for fraction in fractions]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _scarce_cell(value: tuple[float, float, int] | None, scratch: tuple[float, float, int] | None, variant: str) -> str:
    if value is None:
        return ""
    cell = f"{value[0]:.4f} ± {value[1]:.4f}" if value[2] > 1 else f"{value[0]:.4f}"
    if variant != "scratch" and scratch:
        cell += f" ({value[0] / scratch[0]:.2f}x)"
    return cell


def _cold_lines(records: list[dict[str, Any]]) -> list[str]:
    lines = [f"### Cold items: {COLD_FRACTION:.0%} of items without any training interaction", ""]
    lines.append("| dataset | model | Recall@20 | NDCG@20 | cold test interactions |")
    lines.append("|:--|:--|--:|--:|--:|")
    recall = mean_by(records, ("dataset", "model"), "recall@20")
    ndcg = mean_by(records, ("dataset", "model"), "ndcg@20")
    interactions = mean_by(records, ("dataset", "model"), "cold_test_interactions")
    for key, value in recall.items():
        lines.append(f"| {key[0]} | {key[1]} | {value[0]:.4f} | {ndcg[key][0]:.4f} | {interactions[key][0]:.0f} |")
    lines.append("")
    return lines


def _time_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["### Time to quality: first epoch whose validation NDCG@20 reaches scratch's best", ""]
    lines.append("| dataset | share | variant | runs that reach it | epochs | training seconds |")
    lines.append("|:--|--:|:--|--:|--:|--:|")
    for row in rows:
        epochs = "" if row["epochs"] is None else f"{row['epochs']:.1f}"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"| {row['dataset']} | {row['fraction']:.0%} | {row['variant']} | {row['reached']}/{row['runs']} | {epochs} | {seconds} |")
    return lines


def _acceptance_lines(checks: dict[str, Any]) -> list[str]:
    lines = ["", "### Acceptance checks", "", "| check | ratio | target | met |", "|:--|--:|--:|:--|"]
    for name, check in checks.items():
        best = f" ({check['best']})" if "best" in check else ""
        lines.append(f"| {name}{best} | {check['ratio']:.3f} | {check['target']:.2f} | {'yes' if check['met'] else 'no'} |")
    return lines


def save_figure(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        figure.savefig(handle.name, dpi=120)
    Path(handle.name).replace(path)
    plt.close(figure)


def plots(summary: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scarce_records = summary["scarce"]
    datasets = list(dict.fromkeys(record["dataset"] for record in scarce_records))
    means = mean_by(scarce_records, ("dataset", "fraction", "variant"), "ndcg@20")
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for variant in ("scratch", "text", "cross", "text+cross"):
            points = sorted((f, m) for (d, f, v), m in means.items() if d == dataset and v == variant)
            if points:
                axis.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points], marker="o", capsize=3, label=variant)
        axis.set_xscale("log")
        axis.set_xticks([0.1, 0.25, 0.5, 1.0], ["10%", "25%", "50%", "100%"])
        axis.set_xlabel("share of each user's training interactions")
        axis.set_ylabel("test NDCG@20")
        axis.set_title(dataset)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, output / "scarce.png")

    cold_records = summary["cold"]
    if cold_records:
        recall = mean_by(cold_records, ("dataset", "model"), "recall@20")
        figure, axis = plt.subplots(figsize=(7, 3.5))
        labels = [f"{key[0]}\n{key[1]}" for key in recall]
        axis.barh(range(len(recall)), [value[0] for value in recall.values()], xerr=[value[1] for value in recall.values()])
        axis.set_yticks(range(len(recall)), labels, fontsize=7)
        axis.set_xlabel("Recall@20 on cold items (whole catalogue ranked)")
        figure.tight_layout()
        save_figure(figure, output / "cold.png")

    rows = [row for row in summary["time_to_quality"] if row["epochs"] is not None and row["variant"] in ("scratch", "text", "cross", "text+cross")]
    if rows:
        figure, axis = plt.subplots(figsize=(7, 3.5))
        labels = [f"{row['dataset']} {row['fraction']:.0%} {row['variant']}" for row in rows]
        axis.barh(range(len(rows)), [row["epochs"] for row in rows])
        axis.set_yticks(range(len(rows)), labels, fontsize=6)
        axis.set_xlabel("epochs to reach scratch's best validation NDCG@20")
        figure.tight_layout()
        save_figure(figure, output / "time.png")


def replace_section(page: str, section: str) -> str:
    block = f"{SECTION_START}\n{section.strip()}\n{SECTION_END}"
    if SECTION_START in page and SECTION_END in page:
        before, rest = page.split(SECTION_START, 1)
        _, after = rest.split(SECTION_END, 1)
        return before + block + after
    return page.rstrip() + "\n\n" + block + "\n"


def write_docs(table: str, output: Path, summary: dict[str, Any]) -> None:
    relative = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    figures = Path("..") / relative
    sources = ", ".join(f"{name} model trained on {record['train']} interactions (best epoch {record['best_epoch']})" for name, record in summary["sources"].items())
    section = f"""Written by `benchmarks/transfer.py` ({'quick mode' if summary['quick'] else 'full run'}); edit the script, not this section.

Commands: {'; '.join(f"`{command}`" for command in dict.fromkeys(summary['commands'].values()))}. Cross-dataset sources: {sources}.
Machine: {summary['machine']['platform']}, {summary['machine']['torch_threads']} torch threads, CPU only.

{table}
![NDCG@20 against the share of training data]({figures / 'scarce.png'})

![Recall@20 on cold items]({figures / 'cold.png'})

Raw numbers, per-epoch validation curves and library versions: `{relative / 'results.json'}`.
"""
    page = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.is_file() else "# Transfer\n"
    write_bytes_atomic(DOCS_PAGE, replace_section(page, section).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "transfer", help="folder for results.json, results.md and the plots")
    parser.add_argument("--quick", action="store_true", help="ml-100k only, fractions 10%%, 25%% and 100%%, one seed, no policy variants")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting in the full run (default 3)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="datasets to run (default: all; --quick: ml-100k)")
    parser.add_argument("--fractions", type=float, nargs="+", help="shares of training interactions (default 0.1 0.25 0.5 1; --quick: 0.1 0.25 1)")
    parser.add_argument("--epochs", type=int, help="maximum epochs per model (default 40; lower only for a smoke test)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the marked section of docs/transfer.md")
    parser.add_argument("--report-only", action="store_true", help="rebuild results.md, the plots and the docs section from OUTPUT/results.json without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("torch.fx._symbolic_trace", "recx.evaluation.evaluate", "recx.training.trainer", "recx.training.recommender", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.report_only:
        summary = read_json(args.output / "results.json", what="transfer results")
        summary["acceptance"] = acceptance(summary["scarce"], summary["cold"])
        summary["time_to_quality"] = time_to_quality(summary["scarce"])
        write_json_atomic(args.output / "results.json", summary)
        report(summary, args.output.resolve(), docs=not args.no_docs)
        return 0

    datasets = args.datasets or (["ml-100k"] if args.quick else list(DATASETS))
    missing = [name for name in datasets if DATASETS[name]["path"] is not None and not Path(DATASETS[name]["path"]).is_dir()]
    if missing:
        logger.error("data not found for %s (expected %s); the shared data folder must sit next to the repository", missing, [str(DATASETS[name]["path"]) for name in missing])
        return 2
    fractions = args.fractions or ([0.1, 0.25, 1.0] if args.quick else [0.1, 0.25, 0.5, 1.0])
    seeds = [0] if args.quick else list(range(args.seeds))
    if args.epochs is not None:
        TRAINING["epochs"] = args.epochs

    # Records of datasets not run this time are kept from the previous results,
    # so the datasets can be run one command at a time.
    previous = read_json(args.output / "results.json", what="transfer results") if (args.output / "results.json").is_file() else None
    kept = [] if previous is None or previous.get("quick") != args.quick else [d for d in previous.get("datasets", []) if d not in datasets]
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)

    sources: dict[str, Any] = {}
    scarce_records: list[dict[str, Any]] = []
    cold_records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in datasets:
        source_name = DATASETS[name]["source"]
        source_folder = output / "sources" / source_name
        sources[source_name] = train_source(source_name, source_folder)
        scarce_records += scarce(name, fractions, seeds, source_folder, policies=not args.quick and name == "ml-100k")
        cold_records += cold(name, seeds[:1])

    command = (".venv/bin/python benchmarks/transfer.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))).strip()
    commands = {name: command for name in datasets}
    if previous is not None and kept:
        scarce_records = [r for r in previous["scarce"] if r["dataset"] in kept] + scarce_records
        cold_records = [r for r in previous["cold"] if r["dataset"] in kept] + cold_records
        sources = {**{DATASETS[name]["source"]: previous["sources"][DATASETS[name]["source"]] for name in kept}, **sources}
        commands = {**{name: previous["commands"][name] for name in kept}, **commands}
        datasets = kept + datasets
    summary: dict[str, Any] = {
        "benchmark": "transfer",
        "commands": commands,
        "datasets": datasets,
        "quick": args.quick,
        "seeds": seeds,
        "fractions": fractions,
        "model": MODEL,
        "training": TRAINING,
        "sources": sources,
        "scarce": scarce_records,
        "cold": cold_records,
        "time_to_quality": time_to_quality(scarce_records),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {"recx": recx.__version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "torch_threads": torch.get_num_threads()},
    }
    summary["acceptance"] = acceptance(scarce_records, cold_records)
    write_json_atomic(output / "results.json", summary)
    report(summary, output, docs=not args.no_docs)
    return 0


def report(summary: dict[str, Any], output: Path, *, docs: bool) -> None:
    """Write results.md and the plots from ``summary``, and the docs section unless ``docs`` is false."""
    table = markdown(summary)
    write_bytes_atomic(output / "results.md", table.encode("utf-8"))
    plots(summary, output)
    if docs:
        write_docs(table, output, summary)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
