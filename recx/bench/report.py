"""Reports of a benchmark run: results.json, results.md, plots and a marked section of docs/benchmarks.md."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recx._io import write_bytes_atomic, write_json_atomic
from recx.bench.specs import TWO_TOWER_VARIANTS

__all__ = ["DOCS_END", "DOCS_START", "markdown_report", "replace_section", "write_docs_section", "write_outputs"]

DOCS_START = "<!-- recx bench: start -->"
DOCS_END = "<!-- recx bench: end -->"

#: Test metrics shown in the report tables, in column order.
TABLE_COLUMNS: tuple[str, ...] = ("ndcg@10", "ndcg@20", "recall@10", "recall@20", "hit_rate@10", "mrr@20", "coverage@20")


def _tested(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in dataset.get("models", []) if "test" in entry]


def _params_text(entry: dict[str, Any]) -> str:
    chosen = entry["chosen"]
    if "variant" in chosen:
        return f"variant {chosen['variant']}, {entry['refit'].get('epochs', '?')} epochs"
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in chosen.items() if key != "seed") or "-"


def markdown_report(results: dict[str, Any]) -> str:
    """Render the test metrics, the chosen configurations and the evaluation timings as Markdown."""
    lines = []
    for dataset in results["datasets"]:
        name = dataset["dataset"]
        if "skipped" in dataset:
            lines += [f"### {name}", "", f"Skipped: {dataset['skipped']}.", ""]
            continue
        split = dataset["split"]
        lines += [
            f"### {name}",
            "",
            f"{split['users']:,} users, {split['items']:,} items, {split['interactions']:,} interactions; {dataset['protocol']}. "
            f"Configurations chosen by validation {dataset['selection_metric']}; test scored once per model.",
            "",
            "| model | " + " | ".join(TABLE_COLUMNS) + " | validation " + dataset["selection_metric"] + " | configs tried | chosen |",
            "|:--|" + "--:|" * (len(TABLE_COLUMNS) + 2) + ":--|",
        ]
        for entry in dataset["models"]:
            if "skipped" in entry:
                lines.append(f"| {entry['model']} | skipped: {entry['skipped']} |" + " |" * (len(TABLE_COLUMNS) + 2))
                continue
            values = " | ".join(f"{entry['test'][column]:.4f}" for column in TABLE_COLUMNS)
            best_validation = entry["grid"][entry["chosen_index"]]["validation"][entry["selection_metric"]]
            lines.append(f"| {entry['model']} | {values} | {best_validation:.4f} | {len(entry['grid'])} | {_params_text(entry)} |")
        lines.append("")
        speed = dataset.get("evaluation_speed")
        if speed:
            lines += [
                f"Evaluation speed, same fitted IALS model, {speed['users']:,} test users, full catalogue, k={speed['k']} "
                f"(fastest of {speed['repeats']}): recx `evaluate` {speed['recx_seconds']:.2f} s, "
                f"`implicit.evaluation.ranking_metrics_at_k` {speed['implicit_seconds']:.2f} s, ratio {speed['ratio']:.2f}; "
                f"all seven recx metrics at 10 and 20: {speed['recx_all_metrics_seconds']:.2f} s. "
                f"NDCG@{speed['k']} differs by {speed['ndcg_difference']:.1e} and MAP@{speed['k']} by {speed['map_difference']:.1e}.",
                "",
            ]
    lines += _two_tower_variant_lines(results)
    return "\n".join(lines).rstrip() + "\n"


def _two_tower_variant_lines(results: dict[str, Any]) -> list[str]:
    """Return a table of the two-tower variants' validation scores, when more than one was tried."""
    rows = []
    for dataset in results["datasets"]:
        for entry in dataset.get("models", []):
            if entry.get("model") != "TwoTower" or "grid" not in entry or len(entry["grid"]) < 2:
                continue
            metric = entry["selection_metric"]
            for row in entry["grid"]:
                rows.append(f"| {dataset['dataset']} | {row['params']['variant']} | {row['validation'][metric]:.4f} ({metric}) | {row.get('best_epoch')} | {row['fit_seconds']:.0f} |")
    if not rows:
        return []
    descriptions = [f"- `{name}`: {text}." for name, _, text in TWO_TOWER_VARIANTS]
    return [
        "### Two-tower variants on validation",
        "",
        *descriptions,
        "",
        "| dataset | variant | validation | best epoch | fit seconds |",
        "|:--|:--|--:|--:|--:|",
        *rows,
        "",
    ]


def plot_ndcg(results: dict[str, Any], path: Path) -> None:
    """Draw each dataset's test selection metric per model as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [dataset for dataset in results["datasets"] if _tested(dataset)]
    models = list(dict.fromkeys(entry["model"] for dataset in datasets for entry in _tested(dataset)))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.8 * len(datasets) + 2), 3.8))
    width = 0.8 / max(1, len(models))
    positions = np.arange(len(datasets))
    for offset, model in enumerate(models):
        heights = []
        for dataset in datasets:
            entry = next((item for item in _tested(dataset) if item["model"] == model), None)
            heights.append(np.nan if entry is None else entry["test"][dataset["selection_metric"]])
        axes.bar(positions + (offset - (len(models) - 1) / 2) * width, heights, width=width, label=model)
    axes.set_xticks(positions, [f"{dataset['dataset']}\n({dataset['selection_metric']})" for dataset in datasets])
    axes.set_ylabel("test NDCG (full ranking)")
    axes.set_title("Tuned on validation, scored once on test")
    axes.legend(fontsize=8, ncols=3)
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def plot_validation(results: dict[str, Any], path: Path) -> None:
    """Draw every configuration's validation score, one panel per dataset, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [dataset for dataset in results["datasets"] if _tested(dataset)]
    figure, axes_list = plt.subplots(1, max(1, len(datasets)), figsize=(3.6 * max(1, len(datasets)), 3.4), squeeze=False)
    for axes, dataset in zip(axes_list[0], datasets):
        metric = dataset["selection_metric"]
        for position, entry in enumerate(_tested(dataset)):
            scores = [row["validation"][metric] for row in entry["grid"]]
            axes.scatter([position] * len(scores), scores, s=12, color="grey")
            axes.scatter([position], [scores[entry["chosen_index"]]], s=40, color="black", marker="D")
        axes.set_xticks(range(len(_tested(dataset))), [entry["model"] for entry in _tested(dataset)], rotation=45, fontsize=8)
        axes.set_title(dataset["dataset"], fontsize=9)
        axes.set_ylabel(f"validation {metric}", fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def _save_figure(figure: Any, path: Path) -> None:
    """Save a figure as PNG through a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        figure.savefig(handle.name, dpi=120)
    Path(handle.name).replace(path)


def write_outputs(results: dict[str, Any], output: Path) -> str:
    """Write ``results.json``, ``results.md``, ``ndcg.png`` and ``validation.png`` into ``output``; return the Markdown."""
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "results.json", results)
    report = markdown_report(results)
    write_bytes_atomic(output / "results.md", report.encode("utf-8"))
    if any(_tested(dataset) for dataset in results["datasets"]):
        plot_ndcg(results, output / "ndcg.png")
        plot_validation(results, output / "validation.png")
    return report


def replace_section(page: str, section: str, start: str, end: str) -> str:
    """Return ``page`` with the text between the ``start`` and ``end`` markers replaced by ``section``.

    Without the markers, the section is appended, so other sections of the
    page stay as they are.
    """
    block = f"{start}\n{section.strip()}\n{end}"
    if start in page and end in page:
        before, rest = page.split(start, 1)
        _, after = rest.split(end, 1)
        return before + block + after
    return page.rstrip() + "\n\n" + block + "\n"


def write_docs_section(results: dict[str, Any], report: str, output: Path, docs: Path, repository: Path) -> None:
    """Rewrite the `recx bench` section of the benchmarks page from a run's report."""
    relative = output.relative_to(repository) if output.is_relative_to(repository) else output
    figures = Path("..") / relative if output.is_relative_to(repository) else output
    machine, versions = results["machine"], results["versions"]
    section = f"""## Baselines, tuned, against the two-tower

Written by `recx bench`; edit `recx/bench/`, not this section.

Every model gets the same split of each dataset and a fixed tuning budget:
each configuration of its grid (`recx/bench/specs.py`) is fitted on train
and scored on validation, and the best validation NDCG (NDCG@20 on the
MovieLens sets, NDCG@10 on the leave-one-out Amazon sets) picks the
configuration. Rule: {results['refit_rule']}. The two-tower model is
refitted for its best validation epoch count. All metrics rank the whole
catalogue (see [evaluation.md](evaluation.md)).

Mode: {results['mode']}. Command:

```
{results['command']}
```

{report}
![test NDCG per dataset and model]({figures / 'ndcg.png'})

![validation score of every configuration tried]({figures / 'validation.png'})

Machine: {machine['platform']} ({machine['processor']}), {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads, {machine['device']}.
Libraries: implicit {versions['implicit']}, torch {versions['torch']}, faiss {versions['faiss']}, numpy {versions['numpy']}.
Run time {results['seconds'] / 60:.1f} minutes. Every number, including each validation grid, is in `{relative / 'results.json'}`.
"""
    header = "# Benchmarks\n\nEach section below is written by the script it names, from that script's own output.\n"
    page = docs.read_text(encoding="utf-8") if docs.is_file() else header
    write_bytes_atomic(docs, replace_section(page, section, DOCS_START, DOCS_END).encode("utf-8"))
