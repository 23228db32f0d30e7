"""Synthetic interaction logs with power-law popularity and activity and clustered tastes.

The generator replaces production logs when measuring speed and memory
at scale (for example 200k users, 1M items and 20M interactions). It writes
Parquet row groups one block of users at a time, so the log never has to fit
in memory.

Model of the data
-----------------
- Item popularity follows a Zipf law: the item of popularity rank ``r``
  (1-based) has weight ``r ** -item_exponent``. Ranks are a random
  permutation of the item indices, so popular items are spread over the id
  range.
- User activity follows a Zipf law too: the user of activity rank ``r`` gets
  about ``c * r ** -user_exponent`` interactions, clipped to
  ``[min_user_items, max_user_items]``. The scale ``c`` is solved so that the
  counts add up to exactly ``n_interactions``.
- Tastes are clustered: every item and every user belongs to one of
  ``n_clusters`` clusters. Each interaction of a user comes, with probability
  ``cluster_affinity``, from the items of the user's cluster (weighted by
  popularity) and otherwise from the whole catalogue (weighted by popularity).
  Users join a cluster with probability proportional to its popularity mass,
  so each item's expected share of all draws stays proportional to its weight.
  Observed counts follow the Zipf law below the head. Popular items count at
  most once per user, so the head is flatter, as in real logs.
- A user never has the same item twice: duplicates are redrawn, from the
  same mixture for the first ``MAX_REDRAW_ROUNDS - 2`` rounds and from the
  whole catalogue by popularity for the last two. The few slots still
  missing then get items drawn uniformly, so counts are always exact.
  Redrawing matters for heavy users, and for users of a cluster whose top
  item carries much of the cluster's mass: it lowers the share of their
  items that come from their own cluster below ``cluster_affinity``
  (tests/test_synthetic.py checks that it stays within 0.1 of it).
- Timestamps: each user starts at a uniform time within ``time_span_days``
  of ``start_time`` and interacts at exponential gaps (mean ``mean_gap_seconds``),
  in the order the items were drawn.

Determinism: the output depends only on the configuration. Each block of
:data:`USERS_PER_BLOCK` users draws from its own child of
``numpy.random.SeedSequence(seed)``, so the row-group size of the file does
not change the data.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as parquet

from recx._io import atomic_path

logger = logging.getLogger(__name__)

#: Users generated together with one random stream. Fixed, because changing
#: it would change the data a seed produces.
USERS_PER_BLOCK = 4096

#: Redraw rounds for duplicate (user, item) pairs before the uniform fallback.
MAX_REDRAW_ROUNDS = 8

#: Extra draws per missing slot in a redraw round. Drawing a little more than
#: needed makes most users complete in one or two rounds.
OVERSAMPLING = 1.25

#: Column names of the generated log.
USER_COLUMN, ITEM_COLUMN, TIMESTAMP_COLUMN = "user_id", "item_id", "timestamp"


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of a synthetic interaction log.

    Attributes
    ----------
    n_users, n_items : int
        Users and items. User ids are ``0 .. n_users - 1`` and item ids
        ``0 .. n_items - 1``; every user has at least one interaction, while
        an item can end up with none.
    n_interactions : int
        Exact number of distinct (user, item) rows.
    item_exponent : float, default=1.0
        Zipf exponent of item popularity.
    user_exponent : float, default=1.0
        Zipf exponent of user activity.
    n_clusters : int, default=64
        Taste clusters shared by users and items.
    cluster_affinity : float, default=0.8
        Probability that an interaction is drawn from the user's cluster.
    min_user_items : int, default=5
        Minimum number of interactions of a user.
    max_user_items : int or None, default=None
        Maximum number of interactions of a user; None means ``max(min_user_items, n_items // 20)``.
    seed : int, default=0
    start_time : int, default=1_600_000_000
        Earliest user start, in seconds since the epoch.
    time_span_days : float, default=365.0
    mean_gap_seconds : float, default=3600.0
    """

    n_users: int
    n_items: int
    n_interactions: int
    item_exponent: float = 1.0
    user_exponent: float = 1.0
    n_clusters: int = 64
    cluster_affinity: float = 0.8
    min_user_items: int = 5
    max_user_items: int | None = None
    seed: int = 0
    start_time: int = 1_600_000_000
    time_span_days: float = 365.0
    mean_gap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def user_cap(self) -> int:
        """Maximum number of interactions of one user."""
        return self.max_user_items if self.max_user_items is not None else max(self.min_user_items, self.n_items // 20)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and how to fix it."""
        for name in ("n_users", "n_items", "n_interactions", "n_clusters", "min_user_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.max_user_items is not None and (not isinstance(self.max_user_items, int) or self.max_user_items < self.min_user_items):
            raise ValueError(f"max_user_items must be an integer >= min_user_items ({self.min_user_items}), got {self.max_user_items!r}.")
        if self.user_cap > self.n_items:
            raise ValueError(f"max_user_items ({self.user_cap}) exceeds n_items ({self.n_items}): a user cannot have more distinct items than the catalogue contains.")
        if self.n_clusters > self.n_items:
            raise ValueError(f"n_clusters ({self.n_clusters}) exceeds n_items ({self.n_items}): every cluster needs at least one item.")
        low, high = self.n_users * self.min_user_items, self.n_users * self.user_cap
        if not low <= self.n_interactions <= high:
            raise ValueError(
                f"n_interactions must be between n_users * min_user_items ({low}) and n_users * max_user_items ({high}), "
                f"got {self.n_interactions}. Change n_interactions, min_user_items or max_user_items."
            )
        for name in ("item_exponent", "user_exponent"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}. 0 gives uniform weights, about 1 a classic Zipf law.")
        if not 0.0 <= self.cluster_affinity <= 1.0:
            raise ValueError(f"cluster_affinity must be in [0, 1], got {self.cluster_affinity!r}.")
        if not self.time_span_days >= 0 or not self.mean_gap_seconds > 0:
            raise ValueError(f"time_span_days must be >= 0 and mean_gap_seconds > 0, got {self.time_span_days!r} and {self.mean_gap_seconds!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict."""
        return asdict(self)


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Return the (n,) float64 weights ``r ** -exponent`` of ranks ``r = 1 .. n``."""
    return np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)


def user_activity(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Return the (n_users,) int64 interaction counts, summing to ``n_interactions``.

    Counts are ``clip(c * r ** -user_exponent, min_user_items, max_user_items)``
    for a random activity rank ``r`` of each user. The scale ``c`` is found by
    bisection, and the fractional parts are rounded by largest remainder so
    that the total is exact.
    """
    weights = zipf_weights(config.n_users, config.user_exponent)[rng.permutation(config.n_users)]
    low, high = float(config.min_user_items), float(config.user_cap)
    target = float(config.n_interactions)

    def total(scale: float) -> float:
        return float(np.clip(scale * weights, low, high).sum())

    # total() grows with the scale, from n_users * low to n_users * high.
    lower, upper = 0.0, high / weights.min()
    for _ in range(200):
        middle = (lower + upper) / 2
        if total(middle) < target:
            lower = middle
        else:
            upper = middle
    real = np.clip(upper * weights, low, high)
    counts = np.floor(real).astype(np.int64)
    missing = int(config.n_interactions - counts.sum())
    if missing > 0:
        room = counts < config.user_cap
        remainder = np.where(room, real - counts, -1.0)
        counts[np.argsort(-remainder, kind="stable")[:missing]] += 1
    elif missing < 0:
        room = counts > config.min_user_items
        remainder = np.where(room, real - counts, 2.0)
        counts[np.argsort(remainder, kind="stable")[:-missing]] -= 1
    return counts


class _Catalogue:
    """Item popularity and clusters, with cumulative weights for inverse-CDF sampling."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        n_items = config.n_items
        self.n_items = n_items
        self.weights = zipf_weights(n_items, config.item_exponent)[rng.permutation(n_items)]
        # Every cluster gets at least one item: a permutation fills them round-robin.
        self.item_cluster = np.empty(n_items, dtype=np.int64)
        self.item_cluster[rng.permutation(n_items)] = np.arange(n_items) % config.n_clusters
        self.global_cdf = np.cumsum(self.weights)
        self.cluster_items: list[np.ndarray] = []
        self.cluster_cdfs: list[np.ndarray] = []
        order = np.argsort(self.item_cluster, kind="stable")
        bounds = np.searchsorted(self.item_cluster[order], np.arange(config.n_clusters + 1))
        for cluster in range(config.n_clusters):
            items = order[bounds[cluster] : bounds[cluster + 1]]
            self.cluster_items.append(items)
            self.cluster_cdfs.append(np.cumsum(self.weights[items]))

    def cluster_mass(self) -> np.ndarray:
        """Return each cluster's share of the total popularity weight, shape (n_clusters,)."""
        mass = np.array([cdf[-1] for cdf in self.cluster_cdfs])
        return mass / mass.sum()

    def sample_global(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``count`` items by popularity from the whole catalogue."""
        draws = rng.random(count) * self.global_cdf[-1]
        return np.minimum(np.searchsorted(self.global_cdf, draws, side="right"), self.n_items - 1)

    def sample_cluster(self, cluster: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``count`` items by popularity from one cluster."""
        cdf = self.cluster_cdfs[cluster]
        draws = rng.random(count) * cdf[-1]
        positions = np.minimum(np.searchsorted(cdf, draws, side="right"), len(cdf) - 1)
        return self.cluster_items[cluster][positions]


def _draw_items(users: np.ndarray, user_cluster: np.ndarray, catalogue: _Catalogue, affinity: float, rng: np.random.Generator) -> np.ndarray:
    """Draw one item for each entry of ``users`` (block-local indices), mixing cluster and global popularity."""
    items = np.empty(len(users), dtype=np.int64)
    from_cluster = rng.random(len(users)) < affinity
    global_rows = np.flatnonzero(~from_cluster)
    items[global_rows] = catalogue.sample_global(len(global_rows), rng)
    cluster_rows = np.flatnonzero(from_cluster)
    clusters = user_cluster[users[cluster_rows]]
    order = np.argsort(clusters, kind="stable")
    bounds = np.searchsorted(clusters[order], np.arange(len(catalogue.cluster_items) + 1))
    for cluster in np.flatnonzero(np.diff(bounds)):
        rows = cluster_rows[order[bounds[cluster] : bounds[cluster + 1]]]
        items[rows] = catalogue.sample_cluster(int(cluster), len(rows), rng)
    return items


def _keep_new_pairs(users: np.ndarray, items: np.ndarray, taken: np.ndarray, need: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the drawn (user, item) pairs to keep: not taken yet, first copy only, at most ``need[user]`` per user.

    ``taken`` contains the sorted keys ``user * n_items + item`` of pairs kept earlier.
    """
    keys = users * n_items + items
    fresh = ~np.isin(keys, taken, assume_unique=False)
    keys, users, items = keys[fresh], users[fresh], items[fresh]
    _, first = np.unique(keys, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    # Rank of each draw among its user's draws, in draw order.
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts
    keep = rank < need[users]
    return users[keep], items[keep]


def _generate_block(config: SyntheticConfig, catalogue: _Catalogue, counts: np.ndarray, user_cluster: np.ndarray, first_user: int, rng: np.random.Generator) -> pd.DataFrame:
    """Generate the rows of one block of users, ordered by user then time."""
    n_items = catalogue.n_items
    need = counts.astype(np.int64).copy()
    kept_users: list[np.ndarray] = []
    kept_items: list[np.ndarray] = []
    taken = np.empty(0, dtype=np.int64)
    for round_index in range(MAX_REDRAW_ROUNDS + 1):
        if not need.any():
            break
        draws = np.ceil(need * (OVERSAMPLING if round_index else 1.0)).astype(np.int64)
        users = np.repeat(np.arange(len(need), dtype=np.int64), draws)
        if round_index < MAX_REDRAW_ROUNDS - 2:
            items = _draw_items(users, user_cluster, catalogue, config.cluster_affinity, rng)
        elif round_index < MAX_REDRAW_ROUNDS:
            # A user who exhausted the popular items of their cluster draws
            # from the whole catalogue by popularity, which keeps the Zipf law.
            items = catalogue.sample_global(len(users), rng)
        else:
            # Uniform fallback: a user still short of items after the redraw
            # rounds gets items from anywhere, until its count is met.
            items = rng.integers(0, n_items, size=len(users))
        users, items = _keep_new_pairs(users, items, taken, need, n_items)
        if round_index == MAX_REDRAW_ROUNDS and len(users):
            logger.debug("users %d..: %d items drawn uniformly after %d redraw rounds", first_user, len(users), MAX_REDRAW_ROUNDS)
        kept_users.append(users)
        kept_items.append(items)
        taken = np.sort(np.concatenate([taken, users * n_items + items]))
        need -= np.bincount(users, minlength=len(need))
    while need.any():
        # Rare: the uniform round itself drew duplicates. Repeat it until done.
        users = np.repeat(np.arange(len(need), dtype=np.int64), need)
        items = rng.integers(0, n_items, size=len(users))
        users, items = _keep_new_pairs(users, items, taken, need, n_items)
        kept_users.append(users)
        kept_items.append(items)
        taken = np.sort(np.concatenate([taken, users * n_items + items]))
        need -= np.bincount(users, minlength=len(need))

    users = np.concatenate(kept_users)
    items = np.concatenate(kept_items)
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]

    # Timestamps: a start per user, then exponential gaps in draw order.
    starts = config.start_time + rng.random(len(counts)) * config.time_span_days * 86400.0
    gaps = rng.exponential(config.mean_gap_seconds, size=len(users))
    group_start = np.searchsorted(users, users, side="left")
    cumulative = np.cumsum(gaps)
    offsets = cumulative - (cumulative[group_start] - gaps[group_start])
    timestamps = (starts[users] + offsets).astype(np.int64)
    return pd.DataFrame({USER_COLUMN: users + first_user, ITEM_COLUMN: items, TIMESTAMP_COLUMN: timestamps})


def _setup(config: SyntheticConfig) -> tuple[np.ndarray, _Catalogue, np.ndarray, np.random.SeedSequence]:
    """Draw the per-user counts, the catalogue and the user clusters; return them with the seed of the user blocks."""
    seeds = np.random.SeedSequence(config.seed).spawn(2)
    setup_rng = np.random.default_rng(seeds[0])
    counts = user_activity(config, setup_rng)
    catalogue = _Catalogue(config, setup_rng)
    # Users join a cluster with probability proportional to the cluster's
    # popularity mass, so that the mixture of cluster and global draws keeps
    # each item's overall share at weight / total weight (the Zipf law).
    user_cluster = setup_rng.choice(config.n_clusters, size=config.n_users, p=catalogue.cluster_mass())
    return counts, catalogue, user_cluster, seeds[1]


def synthetic_clusters(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return the taste cluster of every user, shape (n_users,), and of every item, shape (n_items,), both int64.

    These are the clusters the log of ``config`` was drawn from: ground truth
    for checking that a model recovers them.
    """
    _, catalogue, user_cluster, _ = _setup(config)
    return user_cluster.astype(np.int64), catalogue.item_cluster


def iter_synthetic_blocks(config: SyntheticConfig) -> Iterator[pd.DataFrame]:
    """Yield the synthetic log as data frames of :data:`USERS_PER_BLOCK` users each.

    Columns: ``user_id`` (int64), ``item_id`` (int64), ``timestamp`` (int64
    seconds). Rows are ordered by user, then by time.
    """
    counts, catalogue, user_cluster, block_seeds = _setup(config)
    n_blocks = -(-config.n_users // USERS_PER_BLOCK)
    for block, block_seed in enumerate(block_seeds.spawn(n_blocks)):
        first = block * USERS_PER_BLOCK
        last = min(first + USERS_PER_BLOCK, config.n_users)
        yield _generate_block(config, catalogue, counts[first:last], user_cluster[first:last], first, np.random.default_rng(block_seed))


@dataclass
class SyntheticSummary:
    """Summary of the file written by :func:`write_synthetic_parquet`."""

    path: Path
    rows: int
    row_groups: int
    seconds: float


def write_synthetic_parquet(config: SyntheticConfig, path: str | os.PathLike[str]) -> SyntheticSummary:
    """Write the synthetic log to a Parquet file, one row group per block of users.

    The file is written under a temporary name and renamed when complete.
    Memory stays at about one block of rows plus the (n_items,) popularity
    arrays, whatever ``n_interactions`` is.
    """
    target = Path(path)
    started = time.perf_counter()
    schema = pyarrow.schema([(USER_COLUMN, pyarrow.int64()), (ITEM_COLUMN, pyarrow.int64()), (TIMESTAMP_COLUMN, pyarrow.int64())])
    rows = row_groups = 0
    with atomic_path(target) as temporary:
        with parquet.ParquetWriter(str(temporary), schema) as writer:
            for frame in iter_synthetic_blocks(config):
                writer.write_table(pyarrow.Table.from_pandas(frame, schema=schema, preserve_index=False))
                rows += len(frame)
                row_groups += 1
                if row_groups % 10 == 0:
                    logger.info("synthetic log: %d of %d rows written", rows, config.n_interactions)
    seconds = time.perf_counter() - started
    logger.info("wrote %d synthetic interactions to %s in %.1f s", rows, target, seconds)
    return SyntheticSummary(target, rows, row_groups, seconds)
