"""The full-ranking evaluation protocol and a plain-text report table."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recx.data.interactions import Interactions
from recx.evaluation.metrics import CATALOGUE_METRICS, METRICS, PER_USER_METRICS, isin_rows, per_user_metrics, recommended_item_mask
from recx.recommender import Recommender

logger = logging.getLogger(__name__)

__all__ = ["SCORE_BUDGET_BYTES", "default_batch_size", "evaluate", "format_metrics_table"]

#: Memory the default batch size allows for one batch's dense float32 score
#: matrix (``batch_size * n_items * 4`` bytes). Larger batches cost fewer
#: Python round trips, but beyond a few tens of MiB they no longer get faster.
#: A fixed row count would instead need gigabytes on a catalogue of millions.
SCORE_BUDGET_BYTES = 64 * 2**20


def evaluate(
    recommender: Recommender,
    train: Interactions,
    test: Interactions,
    k: int | Sequence[int] = (10, 20),
    *,
    metrics: Iterable[str] | None = None,
    batch_size: int | None = None,
    users: np.ndarray | Sequence[int] | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Rank the whole catalogue for every test user and average the metrics.

    The protocol, applied to every model and baseline alike:

    1. Only users with at least one relevant test item (a stored, non-zero
       entry of ``test.matrix``) are scored; the others have no defined
       recall or NDCG.
    2. Each user's training items (``train.matrix[user]``, every stored
       entry) are excluded from the ranking, so a model is never credited
       for, or penalised by, items the user has already seen.
    3. Every remaining item of the catalogue is a candidate: no sampled
       negatives, so the numbers are comparable with full-ranking papers.
    4. Per-user metrics are averaged with equal weight per user. Coverage is
       the share of the catalogue that appears in any evaluated user's top k.

    Parameters
    ----------
    recommender : Recommender
        A fitted recommender whose item indices follow ``train.items``.
    train, test : Interactions
        Splits of one dataset that share shape and id maps.
    k : int or sequence of int, default=(10, 20)
        Cut-offs; each metric is reported at each of them.
    metrics : iterable of str or None, default=None
        Names from :data:`~recx.evaluation.metrics.METRICS`; None computes all.
    batch_size : int or None, default=None
        Users ranked per call to ``recommender.recommend_indices``. Memory
        grows with ``batch_size * n_items`` for recommenders that score the
        whole catalogue densely. None fits one batch's float32 scores in
        :data:`SCORE_BUDGET_BYTES` (64 MiB): 4,096 users at 4,096 items,
        about 900 at 18,000. The results do not depend on it.
    users : array-like of int or None, default=None
        User indices (rows of ``train.matrix``) to evaluate, for example a
        sample for quick validation; repeated indices count once, and users
        without test items are skipped. None evaluates all test users.
    show_progress : bool, default=False
        Show a tqdm progress bar over batches.

    Returns
    -------
    dict of str to float
        ``"<metric>@<k>"`` keys (``"ndcg@20"``, ``"recall@10"``,
        ``"coverage@20"``, ...) in the order of ``metrics`` then ``k``, plus
        ``"users"``, the number of users evaluated.

    Raises
    ------
    ValueError
        If the splits do not share shape and id maps, a cut-off exceeds the
        catalogue size, the recommender was fitted on another catalogue or
        returns training items, an argument is invalid, or no selected user
        has a test item.
    """
    cutoffs = _check_cutoffs(k)
    names = _check_metric_names(metrics)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    _check_splits(train, test)
    _check_cutoffs_fit_catalogue(cutoffs, train.n_items)
    _check_recommender(recommender, train)
    evaluated = _select_users(train, test, users)
    n_items = train.n_items
    max_k = max(cutoffs)
    rows = default_batch_size(n_items) if batch_size is None else int(batch_size)

    # Running sums of per-user values and, for coverage, the items seen so far.
    per_user = [name for name in names if name in PER_USER_METRICS]
    sums = {(name, cutoff): 0.0 for name in per_user for cutoff in cutoffs}
    covered = {cutoff: np.zeros(n_items, dtype=bool) for cutoff in cutoffs if any(name in CATALOGUE_METRICS for name in names)}
    started = time.perf_counter()
    batches = range(0, len(evaluated), rows)
    for start in tqdm(batches, desc="evaluate", unit="batch", disable=not show_progress):
        batch = evaluated[start : start + rows]
        exclude = train.matrix[batch]
        ranked, _ = recommender.recommend_indices(batch, max_k, exclude=exclude)
        ranked = _check_ranked_output(ranked, recommender, len(batch), max_k, n_items, exclude)
        if per_user:
            # One hit matrix per batch serves every metric and cut-off.
            values = per_user_metrics(ranked, test.matrix[batch], per_user, cutoffs)
            for key in sums:
                sums[key] += float(values[key].sum())
        for cutoff, mask in covered.items():
            mask |= recommended_item_mask(ranked, n_items, cutoff)
        logger.debug("evaluated users %d .. %d of %d", start, start + len(batch) - 1, len(evaluated))

    results: dict[str, float] = {}
    for name in names:
        for cutoff in cutoffs:
            if name in PER_USER_METRICS:
                results[f"{name}@{cutoff}"] = sums[name, cutoff] / len(evaluated)
            else:
                results[f"{name}@{cutoff}"] = float(covered[cutoff].mean())
    results["users"] = len(evaluated)
    logger.info("evaluated %s on %d users in %.2f s", type(recommender).__name__, len(evaluated), time.perf_counter() - started)
    return results


def default_batch_size(n_items: int) -> int:
    """Return the users per batch whose float32 scores over ``n_items`` items fit :data:`SCORE_BUDGET_BYTES`, at least 1."""
    return max(1, SCORE_BUDGET_BYTES // (4 * max(1, int(n_items))))


def format_metrics_table(results: dict[str, dict[str, float]], *, digits: int = 4) -> str:
    """Render evaluation results as a Markdown table, one row per model.

    Parameters
    ----------
    results : dict of str to dict of str to float
        Model name to the output of :func:`evaluate`. Columns follow the
        order in which metric names first appear, with ``"users"`` last; a
        model without a metric shows ``-`` in that column.
    digits : int, default=4
        Decimal places of float values. Integers (the user count) print
        without decimals.

    Returns
    -------
    str
        A table with padded columns, readable as plain text and as Markdown,
        ending without a newline.

    Examples
    --------
    >>> print(format_metrics_table({"most_popular": {"ndcg@10": 0.1234567, "users": 610}}))
    | model        | ndcg@10 | users |
    |:-------------|--------:|------:|
    | most_popular |  0.1235 |   610 |
    """
    if not results:
        raise ValueError("results is empty: pass at least one model, for example {'model': evaluate(...)}.")
    columns: list[str] = []
    for metrics in results.values():
        columns.extend(name for name in metrics if name not in columns)
    if "users" in columns:
        columns.append(columns.pop(columns.index("users")))

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return str(int(value))
        return f"{float(value):.{digits}f}"

    header = ["model", *columns]
    rows = [[str(model), *(cell(metrics.get(name)) for name in columns)] for model, metrics in results.items()]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    # The model column is left-aligned, numbers right-aligned so decimals line up.
    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [text.rjust(width) for text, width in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (width + 1) + ":" for width in widths[1:]) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


# ------------------------------------------------------------------ argument checks


def _check_cutoffs(k: int | Sequence[int]) -> list[int]:
    """Return the distinct cut-offs in ascending order."""
    values = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not values:
        raise ValueError("k is empty: pass at least one cut-off, for example k=(10, 20).")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"every k must be a positive integer, got {value!r} in k={k!r}.")
    return sorted({int(value) for value in values})


def _check_cutoffs_fit_catalogue(cutoffs: list[int], n_items: int) -> None:
    """Reject a cut-off above the catalogue size, before any recommender is called, so every model fails alike."""
    too_large = [cutoff for cutoff in cutoffs if cutoff > n_items]
    if too_large:
        raise ValueError(
            f"cut-off k={too_large[-1]} exceeds the catalogue size ({n_items} items), so no model can fill the list. "
            f"Pass cut-offs <= {n_items}; k={n_items} ranks every item."
        )


def _check_metric_names(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError(f"metrics is empty: pass None for all metrics or names from {list(METRICS)}.")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: expected names from {list(METRICS)}, without the '@k' suffix.")
    return list(dict.fromkeys(names))


def _check_splits(train: Interactions, test: Interactions) -> None:
    for name, split in (("train", train), ("test", test)):
        if not isinstance(split, Interactions):
            raise TypeError(f"{name} must be an Interactions, got {type(split).__name__}.")
    if train.matrix.shape != test.matrix.shape:
        raise ValueError(
            f"train and test have different shapes: {train.n_users} x {train.n_items} and {test.n_users} x {test.n_items} (users x items). "
            f"Split one Interactions so that both share its id maps."
        )
    if train.users != test.users:
        raise ValueError("train and test have different user id maps. Split one Interactions so that both share its id maps.")
    if train.items != test.items:
        raise ValueError("train and test have different item id maps. Split one Interactions so that both share its id maps.")


def _check_recommender(recommender: Recommender, train: Interactions) -> None:
    if not isinstance(recommender, Recommender):
        raise TypeError(f"recommender must be a recx Recommender, got {type(recommender).__name__}.")
    fitted_on = recommender.train
    if fitted_on is None:
        raise RuntimeError(f"{type(recommender).__name__} is not fitted: call fit(train) first.")
    if fitted_on is not train and fitted_on.items != train.items:
        raise ValueError(
            f"{type(recommender).__name__} was fitted on a catalogue of {fitted_on.n_items} items that differs from train's {train.n_items} items. "
            f"Fit it on the train split passed to evaluate."
        )


def _select_users(train: Interactions, test: Interactions, users: np.ndarray | Sequence[int] | None) -> np.ndarray:
    """Return the sorted user indices to evaluate: those selected that have a relevant test item."""
    relevant_counts = np.diff(sp.csr_matrix(test.matrix != 0).indptr)
    has_test = relevant_counts > 0
    if users is None:
        selected = np.flatnonzero(has_test)
    else:
        requested = np.asarray(users)
        if requested.ndim != 1 or (requested.size and requested.dtype.kind not in "iu"):
            raise ValueError(f"users must be a 1-D array of user indices (integers), got shape {requested.shape} and dtype {requested.dtype}. Map external ids with train.users.to_index(ids).")
        requested = np.unique(requested.astype(np.int64))
        if requested.size and (requested[0] < 0 or requested[-1] >= train.n_users):
            bad = requested[(requested < 0) | (requested >= train.n_users)][:3].tolist()
            raise ValueError(f"users contains indices {bad} outside 0 .. {train.n_users - 1}.")
        selected = requested[has_test[requested]]
    if selected.size == 0:
        raise ValueError("no user to evaluate: none of the selected users has a non-zero test interaction. Check the split and the users argument.")
    return selected.astype(np.int64)


def _check_ranked_output(ranked: Any, recommender: Recommender, n_users: int, max_k: int, n_items: int, exclude: sp.csr_matrix) -> np.ndarray:
    """Return the recommender's ranked lists after checking their shape and that no training item leaked."""
    name = type(recommender).__name__
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != n_users or ranked.shape[1] > max_k or ranked.dtype.kind not in "iu":
        raise ValueError(f"{name}.recommend_indices returned shape {ranked.shape} and dtype {ranked.dtype}, expected integers of shape ({n_users}, <= {max_k}).")
    if ranked.size and (ranked.min() < -1 or ranked.max() >= n_items):
        raise ValueError(f"{name}.recommend_indices returned item indices outside -1 .. {n_items - 1}.")

    # A returned training item would inflate precision on splits that overlap; stop rather than score it.
    leaked = isin_rows(ranked, exclude)
    if leaked.any():
        row = int(np.flatnonzero(leaked.any(axis=1))[0])
        raise ValueError(f"{name}.recommend_indices returned training item {int(ranked[row][leaked[row]][0])} for batch row {row} despite exclude. Fix its exclusion of seen items.")
    return ranked.astype(np.int64, copy=False)
