"""Full-ranking evaluation speed: recx's `evaluate` against implicit's `ranking_metrics_at_k` on the same iALS model.

Usage (from the repository root, after `make setup`)::

    .venv/bin/python benchmarks/evaluation_speed.py                       # all four datasets, writes docs
    .venv/bin/python benchmarks/evaluation_speed.py --datasets ml-100k --no-docs

Steps, for each dataset of `recx bench` (ml-latest-small, embedded;
ml-100k; amazon-beauty; amazon-sports):

1. Load and split it exactly as `recx bench` does (:mod:`recx.bench.specs`),
   and merge train and validation into the history, as the bench's refit does.
2. Fit iALS once on that history with the configuration `recx bench` chose
   on validation, read from its ``results.json``. A dataset missing there
   gets the first configuration of the bench's grid instead.
3. Time recx's :func:`~recx.evaluation.evaluate` (NDCG, MAP and precision at
   the bench's selection cut-off) and ``implicit.evaluation.ranking_metrics_at_k``
   on the same model, history and test matrix, through
   :func:`recx.bench.runner.compare_evaluation_speed`: one untimed run of
   each, then ``--repeats`` rounds of recx, implicit, recx, implicit, ...
   The median of each is reported, and their ratio is recx / implicit, so
   below 1 means recx is faster. Interleaving makes load from other
   processes fall on both alike.

Outputs in ``--output`` (default ``benchmarks/results/evaluation_speed``):
``results.json`` (every timing, versions, thread counts), ``results.md`` and
``seconds.png``. Unless ``--no-docs``, the script also rewrites its own
section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recx._io import write_bytes_atomic, write_json_atomic
from recx.baselines import IALS
from recx.bench.report import replace_section
from recx.bench.runner import compare_evaluation_speed, library_versions, machine_description, thread_counts
from recx.bench.specs import DATASETS, DEFAULT_DATA_ROOT, baseline_grid
from recx.data.interactions import merge_interactions

REPO = Path(__file__).resolve().parents[1]
DOCS_PAGE = REPO / "docs" / "benchmarks.md"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "evaluation_speed"
DEFAULT_BENCH_RESULTS = REPO / "benchmarks" / "results" / "bench" / "results.json"

SECTION_START = "<!-- benchmarks/evaluation_speed.py: start -->"
SECTION_END = "<!-- benchmarks/evaluation_speed.py: end -->"

#: recx's evaluate must not be slower than implicit's on any dataset: median ratio at most this.
TARGET_RATIO = 1.0

logger = logging.getLogger("benchmarks.evaluation_speed")


def chosen_ials_configs(path: Path) -> dict[str, dict[str, Any]]:
    """Return the IALS configuration `recx bench` chose per dataset, from its results.json; empty if the file is absent."""
    if not path.is_file():
        logger.warning("%s not found; every dataset uses the first configuration of the bench's IALS grid", path)
        return {}
    results = json.loads(path.read_text(encoding="utf-8"))
    chosen = {}
    for dataset in results.get("datasets", []):
        for entry in dataset.get("models", []):
            if entry.get("model") == "IALS" and "chosen" in entry:
                chosen[dataset["dataset"]] = dict(entry["chosen"])
    return chosen


def run_dataset(name: str, data_root: Path, chosen: dict[str, dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Split one dataset as `recx bench` does, fit iALS once and time both evaluations on it."""
    spec = DATASETS[name]
    reason = spec.missing(data_root)
    if reason is not None:
        logger.warning("skipping %s: %s", name, reason)
        return {"dataset": name, "skipped": reason}

    started = time.perf_counter()
    interactions = spec.load(data_root)
    split = spec.split(interactions)
    assert split.validation is not None
    history = merge_interactions(split.train, split.validation)
    load_seconds = time.perf_counter() - started

    if name in chosen:
        params, source = chosen[name], "chosen by recx bench on validation"
    else:
        params, source = baseline_grid("IALS", name, quick=False)[0], "first configuration of the recx bench grid"
    started = time.perf_counter()
    model = IALS(**params).fit(history)
    fit_seconds = time.perf_counter() - started

    cutoff = int(spec.selection_metric.split("@")[1])
    logger.info("%s: %d users x %d items, iALS %s; timing at k=%d", name, interactions.n_users, interactions.n_items, params, cutoff)
    speed = compare_evaluation_speed(model, history, split.test, cutoff, repeats=repeats, warmup=True)
    return {
        "dataset": name,
        "source": spec.source(data_root),
        "protocol": spec.protocol,
        "users": interactions.n_users,
        "items": interactions.n_items,
        "history_interactions": history.nnz,
        "test_users": int(np.count_nonzero(split.test.user_counts())),
        "ials": {"params": params, "source": source, "fit_seconds": round(fit_seconds, 2)},
        "load_seconds": round(load_seconds, 2),
        "speed": speed,
    }


def markdown_table(records: list[dict[str, Any]]) -> str:
    """Return the per-dataset timings as a Markdown table."""
    lines = [
        "| dataset | test users | items | k | recx s (median) | implicit s (median) | ratio (median) | ratio (fastest) | NDCG difference | MAP difference |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for record in records:
        if "skipped" in record:
            lines.append(f"| {record['dataset']} | skipped: {record['skipped']} | | | | | | | | |")
            continue
        speed = record["speed"]
        lines.append(
            f"| {record['dataset']} | {speed['users']:,} | {record['items']:,} | {speed['k']} | {speed['recx_median_seconds']:.3f} | "
            f"{speed['implicit_median_seconds']:.3f} | {speed['median_ratio']:.2f} | {speed['ratio']:.2f} | "
            f"{speed['ndcg_difference']:.1e} | {speed['map_difference']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Draw the median ratio per dataset (left) and the median seconds of recx and implicit on a log scale (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [record for record in records if "skipped" not in record]
    names = [record["dataset"] for record in done]
    positions = np.arange(len(done))
    ratios = [record["speed"]["median_ratio"] for record in done]
    figure, (ratio_axes, seconds_axes) = plt.subplots(1, 2, figsize=(11, 3.8))

    ratio_axes.bar(positions, ratios, width=0.6, color="tab:blue")
    ratio_axes.axhline(TARGET_RATIO, color="black", linewidth=1, linestyle="--", label="equal time")
    for position, ratio in zip(positions, ratios):
        ratio_axes.annotate(f"{ratio:.2f}", (position, ratio), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ratio_axes.set_xticks(positions, names, fontsize=8)
    ratio_axes.set_ylabel("recx seconds / implicit seconds (median)")
    ratio_axes.set_ylim(0, max([*ratios, TARGET_RATIO]) * 1.2)
    ratio_axes.set_title("Time ratio, below 1: recx faster")
    ratio_axes.legend(loc="upper right", fontsize=8)

    seconds_axes.bar(positions - 0.2, [record["speed"]["recx_median_seconds"] for record in done], width=0.4, label="recx evaluate")
    seconds_axes.bar(positions + 0.2, [record["speed"]["implicit_median_seconds"] for record in done], width=0.4, label="implicit ranking_metrics_at_k")
    seconds_axes.set_yscale("log")
    seconds_axes.set_xticks(positions, names, fontsize=8)
    seconds_axes.set_ylabel("seconds (median, log scale)")
    seconds_axes.set_title("Full-ranking evaluation of the same iALS model")
    seconds_axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def write_docs(summary: dict[str, Any], table: str, output: Path) -> None:
    """Rewrite this benchmark's section of docs/benchmarks.md from the results."""
    relative = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    figure = Path("..") / relative / "seconds.png" if output.is_relative_to(REPO) else output / "seconds.png"
    machine, versions, threads = summary["machine"], summary["versions"], summary["threads"]
    section = f"""## Evaluation speed against implicit

Written by `benchmarks/evaluation_speed.py`; edit the script, not this section.

Both libraries rank the whole catalogue for every test user of the
`recx bench` split of each dataset, with the same fitted iALS model. That
model has the configuration `recx bench` chose on validation and is fitted
once on train + validation. Both exclude the same history items and score
the same test matrix. recx's `evaluate` computes NDCG, MAP and precision
at the cut-off, and `implicit.evaluation.ranking_metrics_at_k` computes
those and AUC. After one untimed run of each, the two are timed in turn,
{summary['repeats']} rounds, and the table gives the medians. The ratio is recx seconds
over implicit seconds, so below 1 means recx is faster. NDCG and MAP have
the same definitions in both, and the last two columns show how far apart
they are. Other processes may share the machine, so the runs are
interleaved and the median is quoted.

recx scores each batch of users with the model and picks each row's top
k with `torch.topk` on torch's threads. Numpy then settles, by item index,
the rows where items tie at the k-th score. A batch contains about 64 MiB
of scores (see [evaluation.md](evaluation.md#speed)).

Command:

```
{summary['command']}
```

{table}
![median time ratio and seconds per dataset]({figure})

The evaluation speed lines in the `recx bench` section come from that
section's own run and change only when it runs again.

Machine: {machine['platform']} ({machine['processor']}), {machine['cpu_cores']} cores; threads: torch {threads['torch']}, BLAS {threads['blas']}, implicit {threads['implicit']}.
Libraries: implicit {versions['implicit']}, torch {versions['torch']}, numpy {versions['numpy']}.
Every timing, the iALS settings and the versions: `{relative / 'results.json'}`.
"""
    header = "# Benchmarks\n\nEach section below is written by the script it names, from that script's own output.\n"
    page = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.is_file() else header
    write_bytes_atomic(DOCS_PAGE, replace_section(page, section, SECTION_START, SECTION_END).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS), help="datasets to time (default: all four)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each library per dataset (default 3)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding ml-100k/ and s3rec-sequential/")
    parser.add_argument("--bench-results", type=Path, default=DEFAULT_BENCH_RESULTS, help="recx bench results.json whose chosen iALS configurations to use")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder for results.json, results.md and seconds.png")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite this benchmark's section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    # Warnings from every library, progress from this script and the bench runner only.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for name in ("benchmarks", "recx.bench"):
        logging.getLogger(name).setLevel(logging.INFO)

    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    chosen = chosen_ials_configs(args.bench_results)
    records = [run_dataset(name, args.data_root, chosen, args.repeats) for name in args.datasets]

    command = " ".join([".venv/bin/python benchmarks/evaluation_speed.py", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))])
    done = [record for record in records if "skipped" not in record]
    summary = {
        "benchmark": "evaluation_speed",
        "command": command,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
        "meets_target": all(record["speed"]["median_ratio"] <= TARGET_RATIO for record in done),
        "datasets": records,
        "versions": library_versions(),
        "machine": machine_description(),
        "threads": done[0]["speed"]["threads"] if done else thread_counts(),
        "started_at": started_at,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(output / "results.json", summary)
    table = markdown_table(records)
    write_bytes_atomic(output / "results.md", table.encode("utf-8"))
    if done:
        plot(records, output / "seconds.png")
    if not args.no_docs:
        write_docs(summary, table, output)
    print(table)
    slower = [record["dataset"] for record in done if record["speed"]["median_ratio"] > TARGET_RATIO]
    if slower:
        logger.warning("recx evaluate is slower than implicit (median ratio above %.2f) on %s", TARGET_RATIO, slower)
    return 0


if __name__ == "__main__":
    sys.exit(main())
