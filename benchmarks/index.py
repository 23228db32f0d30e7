"""Recall@100 against queries per second for each ItemIndex kind, at 100k and 1M items of trained embeddings.

Usage (from the repository root, after `make setup`)::

    .venv/bin/python benchmarks/index.py              # full run: 100k and 1M items, writes docs/index.md
    .venv/bin/python benchmarks/index.py --quick      # a few minutes: 100k items, short sweeps, no docs

Steps:

1. Train a ``TwoTowerRecommender`` briefly on the embedded MovieLens
   latest-small and take its item embeddings (9,724 x 64, unit norm) and
   user embeddings (610 x 64, norm 1 / temperature).
2. Replicate the items to each catalogue size. Each copy of an item is
   the trained vector plus Gaussian noise, normalised again to unit length.
   The expected noise norm is ``--noise`` times the median distance from a
   trained item to its nearest neighbour. Copy 0 is the trained vector
   itself. Queries are user embeddings perturbed the same
   way, at the users' norm. Neighbourhoods therefore keep the structure
   of a trained model instead of the uniform noise on which approximate
   indexes look far worse than in use.
3. Search the exact flat index for the top 100 of every query (the ground
   truth and the exact baseline), then each approximate kind at several
   search widths, and record Recall@100 and queries per second.
4. Time ``ItemIndex.search_indices`` against the FAISS index it wraps,
   called directly with the same queries and widths, in the same run.

Outputs in ``--output`` (default ``benchmarks/results/index``): ``results.json``
(every number, the settings, versions and machine), ``results.md`` and
``recall_qps.png``. A full run also rewrites ``docs/index.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

import recx
from recx._io import write_bytes_atomic, write_json_atomic
from recx.data.idmap import IdMap
from recx.index import AUTO_EXACT_MAX_ITEMS, INDEX_FORMAT_VERSION, INDEX_KINDS, INDEX_METRICS, ItemIndex
from recx.index.gpu import GPU_MAX_K
from recx.index.kinds import MIN_POINTS_PER_CENTROID, default_nlist, default_nprobe

REPO = Path(__file__).resolve().parents[1]
DOCS_PAGE = REPO / "docs" / "index.md"

#: Cut-off of the recall measured here.
K = 100

#: The acceptance bar at the largest catalogue: some approximate kind reaches
#: this recall at this multiple of exact search's queries per second.
TARGET_RECALL = 0.95
TARGET_SPEEDUP = 5.0

#: ItemIndex.search_indices may add at most this share of the time of the FAISS call it wraps.
TARGET_OVERHEAD = 0.10

# Search widths swept per kind; the first list is the full run, the second --quick.
SWEEPS: dict[str, dict[str, list[int]]] = {
    "hnsw": {"full": [32, 64, 128, 256, 512], "quick": [64, 128, 256]},
    "ivf_flat": {"full": [4, 8, 16, 32, 64, 128], "quick": [8, 32, 128]},
    "ivf_pq": {"full": [8, 16, 32, 64, 128], "quick": [16, 64]},
    "factory": {"full": [8, 16, 32, 64, 128], "quick": [16, 64]},
}

logger = logging.getLogger("benchmarks.index")


# ----------------------------------------------------------------- data


def trained_embeddings(epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train the two-tower model on ml-latest-small; return item embeddings, user embeddings and a record."""
    from recx.data import load_dataset
    from recx.training import TrainConfig, TwoTowerRecommender

    started = time.perf_counter()
    interactions = load_dataset("movielens-latest-small")
    model = TwoTowerRecommender(training=TrainConfig(epochs=epochs, show_progress=False, seed=seed, device="cpu"))
    model.fit(interactions)
    items, users = model.item_embeddings(), model.user_embeddings()
    record = {"dataset": "movielens-latest-small", "epochs": epochs, "seed": seed, "items": list(items.shape), "users": list(users.shape), "seconds": round(time.perf_counter() - started, 1)}
    logger.info("trained embeddings: %d items, %d users, dimension %d, in %.0f s", len(items), len(users), items.shape[1], record["seconds"])
    return items, users, record


def nearest_neighbour_distance(items: np.ndarray) -> float:
    """Return the median Euclidean distance from each item to its nearest other item."""
    index = faiss.IndexFlatL2(items.shape[1])
    index.add(items)
    distances, _ = index.search(items, 2)
    return float(np.median(np.sqrt(np.maximum(distances[:, 1], 0.0))))


def perturbed_copies(base: np.ndarray, n: int, noise_norm: float, rng: np.random.Generator, *, keep_norm: bool) -> np.ndarray:
    """Return ``n`` rows: ``base`` cycled, each copy after the first plus Gaussian noise of expected norm ``noise_norm``.

    With ``keep_norm`` every row is rescaled to the norm of its source row;
    otherwise rows are unit length, like the item tower's output.
    """
    dimension = base.shape[1]
    source = np.arange(n) % len(base)
    rows = base[source].astype(np.float32)
    noisy = np.arange(n) >= len(base)
    rows[noisy] += (noise_norm / np.sqrt(dimension)) * rng.standard_normal((int(noisy.sum()), dimension), dtype=np.float32)
    target = np.linalg.norm(base[source], axis=1, keepdims=True) if keep_norm else 1.0
    rows *= target / np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows, dtype=np.float32)


# ----------------------------------------------------------------- timing


def best_seconds(function: Any, repeats: int) -> float:
    """Return the fastest of ``repeats`` timed calls; the minimum is the least disturbed by other load."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    hits = [len(np.intersect1d(row, expected, assume_unique=True)) for row, expected in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


def faiss_parameters(kind: str, width: int | None) -> faiss.SearchParameters | None:
    """Build the FAISS parameters for a direct call, independently of recx's own helper."""
    if width is None:
        return None
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=width)
    return faiss.SearchParametersIVF(nprobe=width)


def width_keyword(kind: str, width: int | None) -> dict[str, int]:
    """Return the search_indices keyword that sets ``width`` for ``kind``: ef_search for HNSW, else nprobe."""
    if width is None:
        return {}
    if kind == "hnsw":
        return {"ef_search": width}
    return {"nprobe": width}


def measure_overhead(index: ItemIndex, kind: str, width: int | None, queries: np.ndarray, repeats: int) -> dict[str, Any]:
    """Time ItemIndex.search_indices and the FAISS call it wraps, interleaved, with the same queries and width."""
    keyword = width_keyword(kind, width)
    parameters = faiss_parameters(kind, width)
    raw, wrapped = [], []
    for _ in range(repeats):
        raw.append(best_seconds(lambda: index.faiss_index.search(queries, K, params=parameters), 1))
        wrapped.append(best_seconds(lambda: index.search_indices(queries, K, **keyword), 1))
    return {
        "kind": kind,
        "width": width,
        "faiss_seconds": min(raw),
        "recx_seconds": min(wrapped),
        "ratio": min(wrapped) / min(raw),
        "faiss_seconds_median": float(np.median(raw)),
        "recx_seconds_median": float(np.median(wrapped)),
        "ratio_median": float(np.median(wrapped) / np.median(raw)),
    }


# ----------------------------------------------------------------- one catalogue size


def kind_options(kind: str, n_items: int) -> dict[str, Any]:
    """Build options per kind at ``n_items``: recx defaults, and for the factory an IVF with 8-bit scalar quantisation."""
    if kind == "factory":
        return {"factory": f"IVF{default_nlist(n_items)},SQ8"}
    return {}


def run_size(n_items: int, items: np.ndarray, users: np.ndarray, settings: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Build every kind over ``n_items`` replicated items and return the size's record."""
    noise = settings["noise_norm"]
    catalogue = perturbed_copies(items, n_items, noise, rng, keep_norm=False)
    queries = perturbed_copies(users, settings["queries"] + len(users), noise * float(np.median(np.linalg.norm(users, axis=1))), rng, keep_norm=True)[len(users) :]
    ids = IdMap(np.arange(n_items))
    repeats = settings["repeats"]
    record: dict[str, Any] = {"n_items": n_items, "n_queries": len(queries), "points": [], "builds": [], "overhead": []}

    # Exact search: ground truth and the baseline speed.
    started = time.perf_counter()
    exact = ItemIndex(catalogue, ids, kind="flat", device="cpu")
    record["builds"].append({"kind": "flat", "parameters": {}, "seconds": time.perf_counter() - started, "index_bytes": catalogue.nbytes})
    truth, _ = exact.search_indices(queries, K)
    seconds = best_seconds(lambda: exact.search_indices(queries, K), repeats)
    exact_qps = len(queries) / seconds
    record["exact_qps"] = exact_qps
    record["points"].append({"kind": "flat", "width": None, "recall": 1.0, "qps": exact_qps, "speedup": 1.0})
    record["overhead"].append(measure_overhead(exact, "flat", None, queries, repeats))
    logger.info("%d items: exact search %.0f queries/s", n_items, exact_qps)
    del exact
    gc.collect()

    for kind in ("hnsw", "ivf_flat", "ivf_pq", "factory"):
        options = kind_options(kind, n_items)
        started = time.perf_counter()
        index = ItemIndex(catalogue, ids, kind=kind, device="cpu", **options)
        build_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            index.save(folder)
            size = (Path(folder) / "index.faiss").stat().st_size
        record["builds"].append({"kind": kind, "parameters": index.parameters, "seconds": build_seconds, "index_bytes": size})
        logger.info("%d items: built %r in %.1f s", n_items, index, build_seconds)

        widths = SWEEPS[kind][settings["mode"]]
        for width in widths:
            keyword = width_keyword(kind, width)
            found, _ = index.search_indices(queries, K, **keyword)
            seconds = best_seconds(lambda: index.search_indices(queries, K, **keyword), repeats)
            point = {"kind": kind, "width": width, "recall": recall_at_k(found, truth), "qps": len(queries) / seconds}
            point["speedup"] = point["qps"] / exact_qps
            record["points"].append(point)
            logger.info("%d items: %s %s=%d recall@%d %.4f, %.0f queries/s (%.1fx exact)", n_items, kind, next(iter(keyword)), width, K, point["recall"], point["qps"], point["speedup"])

        default_width = index.parameters.get("ef_search" if kind == "hnsw" else "nprobe", widths[len(widths) // 2])
        record["overhead"].append(measure_overhead(index, kind, default_width, queries, repeats))
        del index
        gc.collect()

    qualifying = [point for point in record["points"] if point["kind"] != "flat" and point["recall"] >= TARGET_RECALL and point["speedup"] >= TARGET_SPEEDUP]
    record["best_qualifying"] = max(qualifying, key=lambda point: point["qps"]) if qualifying else None
    return record


# ----------------------------------------------------------------- reports


def markdown_tables(results: dict[str, Any]) -> str:
    """Render the results as Markdown tables: recall and speed per kind and width, build cost, overhead."""
    lines = []
    for size in results["sizes"]:
        lines.append(f"### {size['n_items']:,} items, {size['n_queries']:,} queries, k={K}")
        lines.append("")
        lines.append("| kind | width | recall@100 | queries/s | x exact |")
        lines.append("|:--|--:|--:|--:|--:|")
        for point in size["points"]:
            setting = "-"
            if point["width"] is not None:
                setting = f"{next(iter(width_keyword(point['kind'], point['width'])))} {point['width']}"
            lines.append(f"| {point['kind']} | {setting} | {point['recall']:.4f} | {point['qps']:,.0f} | {point['speedup']:.1f} |")
        lines.append("")
        lines.append("| kind | parameters | build seconds | index file MB |")
        lines.append("|:--|:--|--:|--:|")
        for build in size["builds"]:
            parameters = ", ".join(f"{name}={value}" for name, value in build["parameters"].items()) or "-"
            lines.append(f"| {build['kind']} | {parameters} | {build['seconds']:.1f} | {build['index_bytes'] / 1e6:.0f} |")
        lines.append("")
        lines.append("| kind | width | FAISS call s | ItemIndex.search_indices s | ratio (best of runs) | ratio (median) |")
        lines.append("|:--|--:|--:|--:|--:|--:|")
        for entry in size["overhead"]:
            width = "-" if entry["width"] is None else str(entry["width"])
            lines.append(f"| {entry['kind']} | {width} | {entry['faiss_seconds']:.3f} | {entry['recx_seconds']:.3f} | {entry['ratio']:.3f} | {entry['ratio_median']:.3f} |")
        lines.append("")
        best = size["best_qualifying"]
        if best is None:
            lines.append(f"No approximate kind reaches recall@{K} >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x exact search's queries per second at this size.")
        else:
            lines.append(
                f"Fastest point with recall@{K} >= {TARGET_RECALL} and >= {TARGET_SPEEDUP:.0f}x exact speed: {best['kind']} at width {best['width']}, "
                f"recall {best['recall']:.4f}, {best['qps']:,.0f} queries/s, {best['speedup']:.1f}x exact."
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Draw recall@100 against queries per second (log scale), one panel per catalogue size."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        for kind in ("flat", "hnsw", "ivf_flat", "ivf_pq", "factory"):
            points = [point for point in size["points"] if point["kind"] == kind]
            label = kind if kind != "factory" else f"factory ({size['builds'][-1]['parameters']['factory']})"
            axis.plot([point["qps"] for point in points], [point["recall"] for point in points], marker="*" if kind == "flat" else "o", markersize=10 if kind == "flat" else 5, label=label)
        axis.axhline(TARGET_RECALL, color="grey", linewidth=0.8, linestyle=":")
        axis.axvline(TARGET_SPEEDUP * size["exact_qps"], color="grey", linewidth=0.8, linestyle=":")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("queries per second (log scale)")
        axis.set_ylabel(f"recall@{K}")
        axis.set_title(f"{size['n_items']:,} items")
        axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        figure.savefig(handle.name, dpi=110)
    Path(handle.name).replace(path)
    plt.close(figure)


def machine_record() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(), "python": sys.version.split()[0]}


def versions_record() -> dict[str, str]:
    import scipy
    import torch

    return {"recx": recx.__version__, "faiss": faiss.__version__, "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}


# ----------------------------------------------------------------- docs/index.md


def write_docs(results: dict[str, Any], tables: str, output: Path) -> None:
    """Rewrite docs/index.md: the index reference with the constants read from recx, then the measured tables."""
    relative = output.relative_to(REPO) if output.is_relative_to(REPO) else output
    machine, versions = results["machine"], results["versions"]
    largest = results["sizes"][-1]
    best = largest["best_qualifying"]
    verdict = (
        f"At {largest['n_items']:,} items, {best['kind']} at width {best['width']} reaches recall@{K} {best['recall']:.4f} at "
        f"{best['speedup']:.1f}x the queries per second of exact search (target: >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x)."
        if best
        else f"At {largest['n_items']:,} items no approximate kind reached recall@{K} >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x exact speed in this run."
    )
    overheads = [entry["ratio"] for size in results["sizes"] for entry in size["overhead"]]
    builds = {build["kind"]: build["seconds"] for build in largest["builds"]}
    best_recall = {kind: max(point["recall"] for point in largest["points"] if point["kind"] == kind) for kind in ("hnsw", "ivf_flat")}
    page = f"""# Item index

<!-- Written by benchmarks/index.py from its results; edit the script, not this page. -->

Written by `benchmarks/index.py` from `{relative / 'results.json'}`; edit the script, not this page.

`recx.index.ItemIndex` searches item embeddings for the top k items of each
query and returns external item ids (`search`) or item indices
(`search_indices`). `TwoTowerRecommender` builds an exact inner-product
index over its item embeddings; a service can build any kind below from
the same embeddings.

## Kinds

```python
from recx.index import ItemIndex

index = ItemIndex(embeddings, item_ids, metric="inner_product", kind="ivf_flat", nlist=4096, nprobe=64)
ids, scores = index.search(user_vector, k=10, exclude=seen_ids)
indices, scores = index.search_indices(user_matrix, k=100, exclude=train_matrix[users], nprobe=128)
```

| kind | FAISS structure | build options (search options) | exact |
|:--|:--|:--|:--|
| `flat` | `IndexFlatIP` / `IndexFlatL2` | none | yes |
| `hnsw` | `IndexHNSWFlat` | `hnsw_m`, `ef_construction` (`ef_search`) | no |
| `ivf_flat` | `IndexIVFFlat` | `nlist` (`nprobe`) | no |
| `ivf_pq` | `IndexIVFPQ` | `nlist`, `pq_m`, `pq_bits` (`nprobe`) | no |
| `factory` | `faiss.index_factory(d, factory, metric)` | `factory` (`nprobe` for IVF, `ef_search` for HNSW) | no |
| `auto` | `flat` below {AUTO_EXACT_MAX_ITEMS:,} items, `ivf_flat` from there on | none | below the threshold |

A FAISS factory string goes in through `kind="factory", factory="OPQ16,IVF256,PQ16"`;
`kind` itself never takes a factory string, so a typo in a kind name is an
error rather than a structure. `index.is_exact` is true for `flat` only.
Every kind keeps FAISS label = embedding row, and the id map turns rows into
external ids, so a factory string must not contain `IDMap`.

**Why these `auto` thresholds.** Exact search needs no training, has no
recall loss and, in the tables below, still serves
{results['sizes'][0]['exact_qps']:,.0f} queries/s at {results['sizes'][0]['n_items']:,} items on this machine;
below {AUTO_EXACT_MAX_ITEMS:,} items it is the safe choice. From there on `auto`
builds `ivf_flat` with the default `nlist` (the power of two nearest
`4 * sqrt(n_items)`: {default_nlist(100_000)} lists at 100k items, {default_nlist(1_000_000)} at 1M) and
`nprobe = max(8, nlist / 32)` ({default_nprobe(default_nlist(100_000))} and {default_nprobe(default_nlist(1_000_000))}). IVF was chosen over HNSW
because it reached higher recall at every speed on these embeddings. At
{largest['n_items']:,} items the best HNSW recall@{K} in the sweep was {best_recall['hnsw']:.3f} and IVF-Flat's
{best_recall['ivf_flat']:.4f}. IVF-Flat also built in {builds['ivf_flat']:.0f} s against HNSW's {builds['hnsw']:.0f} s, and FAISS
can train and search it on a GPU. HNSW probably loses recall here because
the replicated catalogue contains many near-duplicates of each trained
item, so its recall on real catalogues of the same size may differ.

**Defaults.** HNSW: `hnsw_m` 32, `ef_construction` 128, `ef_search` 128
(FAISS uses a beam of at least k). IVF-PQ: `pq_m` is the largest divisor
of the dimension up to half of it (2 components per 8-bit code) and
`pq_bits` 8.

**Too few items for IVF or PQ training.** FAISS k-means warns when it gets
fewer than {MIN_POINTS_PER_CENTROID} training points per centroid. recx raises a `ValueError`
instead when an explicit `nlist` exceeds `n_items // {MIN_POINTS_PER_CENTROID}` or when
`{MIN_POINTS_PER_CENTROID} * 2**pq_bits > n_items`; the message names the largest value that
fits. The default `nlist` is lowered to fit, so `kind="ivf_flat"` with no
options works from {MIN_POINTS_PER_CENTROID} items on.

## Metrics

`metric` is one of {', '.join(f'`{name}`' for name in INDEX_METRICS)}. Scores are always "higher is
better": inner product, cosine similarity (items normalised at build time,
queries at search time), or the negated squared Euclidean distance for
`l2`. The index records its metric (in memory and in the manifest). A
caller declares what its queries were encoded for with
`search(..., metric="cosine")`; a metric other than the index's raises a
`ValueError`, and `metric=None` (the default) skips the check.

## Search semantics

- `k` must be between 1 and the catalogue size; 0, negative, non-integer
  and too large values raise a `ValueError` naming k and the catalogue
  size. `k = n_items` ranks every item.
- Queries are a batch of shape (m, d) for `search_indices`, or one vector
  or a batch for `search`. NaN, infinite values and a wrong dimension
  raise a `ValueError`.
- `exclude` removes items per query (a sparse matrix of item indices, or
  external ids in `search`). FAISS cannot skip items, so the search fetches
  k plus the largest number of excluded items in the batch and drops the
  excluded ones. Approximate kinds may still come back short, for example
  when an IVF probe reaches too few lists or an HNSW beam misses nodes.
  Those rows are searched again with twice the candidates and twice
  `nprobe` or `ef_search` until the search is exhaustive. A row still short
  after that is ranked exactly over the vectors FAISS reconstructs.
- Guarantee: every row contains `min(k, items left after exclusion)` valid,
  distinct, non-excluded items, best first, then -1 padding, for `flat`,
  `hnsw`, `ivf_flat` and `ivf_pq`. A factory structure that misses items
  and cannot reconstruct its vectors may pad early, with a logged warning.
  Approximate kinds do not promise the true top k; the tables below measure
  how close they get.
- `nprobe` and `ef_search` can be passed per call. They travel in
  `faiss.SearchParametersIVF` / `SearchParametersHNSW` and never change
  the shared index, so threads can search one index concurrently, each
  with its own widths; the tests check that 8 threads return exactly the
  serial results.

## GPU

`device` is `"auto"` (default), `"cpu"` or `"cuda"`, for the constructor and
`ItemIndex.load`.

- With faiss-gpu and a GPU (`faiss.get_num_gpus() > 0`), `flat`,
  `ivf_flat`, `ivf_pq` and factory structures that FAISS can copy are
  trained, filled and searched on GPU 0; a CPU copy is kept for saving.
  FAISS GPU indexes accept k and nprobe up to {GPU_MAX_K}; a search that needs
  more (a large k, or k plus many excluded items) runs on the CPU copy,
  which contains the same vectors. GPU searches are serialised by a lock,
  because FAISS GPU resources must not be used from several threads at once.
  FAISS has no GPU HNSW: `hnsw` stays on the CPU under `auto` and raises
  under `cuda`.
- With CUDA through torch but no faiss-gpu, `flat` searches exactly with a
  matrix product and `torch.topk` on the GPU, in batches that keep the score
  matrix near 512 MiB; `torch.topk` has no k limit. Approximate kinds stay
  on the CPU.
- torch is imported only on these paths. `device="cpu"` never imports it,
  so `recx.index` works in processes without torch; `device="auto"` imports
  torch, when installed, to check whether CUDA is available.

The GPU paths have not run on the machines recx is tested on (no GPU);
their tests skip there with that reason.

## Saving and loading

`index.save(folder)` writes `index.faiss` (FAISS's own format, the CPU
index), `items.json` (the id map) and `index.json`, a manifest with the
format version ({INDEX_FORMAT_VERSION}), kind, metric, parameters, dimension, number of
items and the SHA-256 of `index.faiss`. Each file is written atomically and
the manifest last. `ItemIndex.load` checks the checksum, that the FAISS
structure and metric match the manifest, and the counts. Manifests written
before index kinds existed (no `parameters`) load as `flat`. Kinds are
{', '.join(f'`{kind}`' for kind in INDEX_KINDS)}.

## Benchmark: recall@{K} against queries per second

Command:

```
{results['command']}
```

Embeddings come from a `TwoTowerRecommender` trained for {results['training']['epochs']} epochs on
MovieLens latest-small ({results['training']['items'][0]:,} items x {results['training']['items'][1]}). Items are replicated to
each catalogue size with Gaussian noise of expected norm
{results['settings']['noise']} x the median nearest-neighbour distance of the trained items
({results['settings']['nearest_neighbour_distance']:.3f}), then normalised; queries are perturbed user
embeddings. Ground truth is exact flat search. Queries per second are the
best of {results['settings']['repeats']} timed runs of one batch of all queries through
`ItemIndex.search_indices` with FAISS using {machine['faiss_threads']} threads; the machine is shared,
so read them as ratios.

{verdict}

`ItemIndex.search_indices` took at most {max(overheads):.3f}x the time of the FAISS call it
wraps (target: at most {1 + TARGET_OVERHEAD:.2f}x), for the same queries and widths in the
same run; the per-kind ratios are in the last table of each size.
`search_indices` includes the same FAISS call, so ratios below 1 are timing
noise from other processes on this shared machine.

![recall@{K} against queries per second]({Path('..') / relative / 'recall_qps.png'})

{tables}
Machine: {machine['platform']}, {machine['cpu']}, {machine['cpu_count']} CPUs. Versions: recx {versions['recx']},
FAISS {versions['faiss']}, numpy {versions['numpy']}, torch {versions['torch']}. Peak resident memory of the run:
{results['peak_memory_mb']:,.0f} MB.
"""
    write_bytes_atomic(DOCS_PAGE, page.encode("utf-8"))


# ----------------------------------------------------------------- main


def write_reports(results: dict[str, Any], output: Path, *, write_page: bool) -> None:
    """Write results.md and recall_qps.png into ``output`` and, when ``write_page`` is set, docs/index.md."""
    tables = markdown_tables(results)
    write_bytes_atomic(output / "results.md", (f"Written by `benchmarks/index.py`: `{results['command']}`\n\n" + tables).encode("utf-8"))
    plot(results, output / "recall_qps.png")
    if write_page:
        write_docs(results, tables, output)
    print(tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k items only, 1 training epoch, 1000 queries and short sweeps (a few minutes); does not rewrite docs/index.md")
    parser.add_argument("--output", type=Path, help="folder for results.json, results.md and recall_qps.png (default benchmarks/results/index, or runs/index-quick with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", help="catalogue sizes in items (default 100000 1000000, or 100000 with --quick)")
    parser.add_argument("--queries", type=int, help="number of queries (default 5000, or 1000 with --quick)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 3, or 1 with --quick)")
    parser.add_argument("--noise", type=float, default=0.75, help="expected noise norm of each copy, as a multiple of the median nearest-neighbour distance of the trained items (default 0.75)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the fastest counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the perturbations")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/index.md")
    parser.add_argument("--render-only", action="store_true", help="measure nothing: rewrite results.md, the plot and docs/index.md from the results.json already in --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

    mode = "quick" if args.quick else "full"
    output = args.output or (REPO / "runs" / "index-quick" if args.quick else REPO / "benchmarks" / "results" / "index")
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    n_queries = args.queries or (1000 if args.quick else 5000)
    epochs = args.epochs or (1 if args.quick else 3)
    output.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results = json.loads((output / "results.json").read_text(encoding="utf-8"))
        write_reports(results, output, write_page=results["settings"]["mode"] == "full" and not args.no_docs)
        return 0
    started = time.perf_counter()

    items, users, training = trained_embeddings(epochs, args.seed)
    distance = nearest_neighbour_distance(items)
    settings = {"mode": mode, "queries": n_queries, "noise": args.noise, "nearest_neighbour_distance": distance, "noise_norm": args.noise * distance, "repeats": args.repeats, "seed": args.seed, "k": K}
    rng = np.random.default_rng(args.seed)
    records = [run_size(n_items, items, users, settings, rng) for n_items in sizes]

    results = {
        "command": " ".join(["python", "benchmarks/index.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "settings": settings,
        "training": training,
        "sizes": records,
        "targets": {"recall": TARGET_RECALL, "speedup": TARGET_SPEEDUP, "overhead": TARGET_OVERHEAD},
        # ru_maxrss is in KiB on Linux.
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_record(),
        "versions": versions_record(),
    }
    write_json_atomic(output / "results.json", results)
    write_reports(results, output, write_page=mode == "full" and not args.no_docs)
    logger.info("wrote %s in %.0f s; peak memory %.0f MB", output, results["seconds"], results["peak_memory_mb"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
