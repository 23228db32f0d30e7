"""Turn user and item indices into the KeyedJaggedTensor inputs of the towers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torchrec import KeyedJaggedTensor

from recx.data.interactions import Interactions
from recx.models.config import TwoTowerConfig
from recx.models.towers import ITEM_GENRES, ITEM_ID, ITEM_TEXT, USER_HISTORY, USER_ID, USER_RECENT


def genre_vocabulary(interactions: Interactions) -> list[str]:
    """Return the sorted distinct genre names of the catalogue (empty without genres)."""
    genres = interactions.item_genres()
    if genres is None:
        return []
    return sorted({name for names in genres for name in names})


def genre_matrix(interactions: Interactions, genre_names: list[str]) -> sp.csr_matrix:
    """Return the (n_items, n_genres) 0/1 CSR matrix of each item's genres.

    Genres of the data that are not in ``genre_names`` are ignored, so a
    saved model keeps its own vocabulary when applied to new metadata.
    """
    genres = interactions.item_genres()
    position = {name: column for column, name in enumerate(genre_names)}
    rows: list[int] = []
    columns: list[int] = []
    for item, names in enumerate(genres or []):
        for name in names:
            if name in position:
                rows.append(item)
                columns.append(position[name])
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, columns)), shape=(interactions.n_items, len(genre_names)))


#: Histories longer than this many times ``max_history`` are sampled without
#: reading the whole row (see FeatureBuilder._history_bags).
LONG_BAG_FACTOR = 8


def _gather_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate CSR rows ``rows``.

    Returns the gathered column indices, the length of each row, and the
    position in ``indices`` that each gathered value came from.
    """
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    row_offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(total, dtype=np.int64) - row_offsets + np.repeat(starts, lengths)
    return indices[positions], lengths, positions


def _distinct_offsets(sizes: np.ndarray, counts: np.ndarray, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[r]`` distinct offsets uniformly from ``range(sizes[r])`` for each row ``r``.

    Draws with replacement and redraws repeats until every row has its count,
    which gives a uniformly random subset. Callers keep ``counts`` well below
    ``sizes``, so few rounds are needed. Returns (row, offset) pairs
    sorted by row, then offset.
    """
    width = int(sizes.max(initial=0)) + 1
    keys = np.empty(0, dtype=np.int64)
    need = counts.astype(np.int64)
    while need.any():
        rows = np.repeat(np.arange(len(sizes), dtype=np.int64), need)
        offsets = (generator.random(len(rows)) * sizes[rows]).astype(np.int64)
        # Sorting the keys row * width + offset finds the repeats without hashing.
        keys = np.sort(np.concatenate([keys, rows * width + offsets]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        need = counts - np.bincount(keys // width, minlength=len(sizes))
    return keys // width, keys % width


class FeatureBuilder:
    """Build tower inputs from training interactions and item metadata.

    The user history is the set of the user's training items. During
    training, the target item of each example is left out of its user's
    bag (otherwise the model learns to find the item in its own input), and
    bags longer than ``max_history`` are subsampled at random (to about
    ``max_history`` items), which also acts as input dropout. At inference the whole history is used: the mean
    of a random subset estimates the mean of the whole bag.

    Parameters
    ----------
    config : TwoTowerConfig
        Which features the towers read.
    train : Interactions
        Training interactions; their matrix gives each user's history.
    max_history : int or None, default=10
        About how many items a training bag keeps; None keeps all items.
    """

    def __init__(self, config: TwoTowerConfig, train: Interactions, max_history: int | None = 10) -> None:
        if train.n_users != config.n_users or train.n_items != config.n_items:
            raise ValueError(
                f"the model was built for {config.n_users} users x {config.n_items} items, "
                f"but the interactions have {train.n_users} x {train.n_items}. Use the training interactions the model was built from."
            )
        if max_history is not None and max_history <= 0:
            raise ValueError(f"max_history must be a positive integer or None, got {max_history}.")
        self.config = config
        self.max_history = max_history
        self.history_indptr = train.matrix.indptr.astype(np.int64)
        self.history_indices = train.matrix.indices.astype(np.int64)
        if config.recent_items:
            self._order_by_time(train)
        genres = genre_matrix(train, config.genre_names)
        self.genre_indptr = genres.indptr.astype(np.int64)
        self.genre_indices = genres.indices.astype(np.int64)

    def _order_by_time(self, train: Interactions) -> None:
        """Store each user's entries sorted by time, and each entry's rank in its user's order."""
        if train.timestamps is None:
            raise ValueError("recent_items needs timestamps, but the training interactions have none. Load them with a timestamp column or set recent_items to 0.")
        rows = np.repeat(np.arange(train.n_users, dtype=np.int64), np.diff(self.history_indptr))
        # Sorting by user first keeps user u's entries in indptr[u] .. indptr[u + 1].
        self.time_order = np.lexsort((self.history_indices, train.timestamps, rows)).astype(np.int64)
        self.time_rank = np.empty(len(rows), dtype=np.int64)
        self.time_rank[self.time_order] = np.arange(len(rows)) - self.history_indptr[rows[self.time_order]]

    def _recent_bags(self, users: np.ndarray, target_positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return the latest ``recent_items`` items of each user, before the target when one is given."""
        limit = self.config.recent_items
        first = self.history_indptr[users]
        end = self.history_indptr[users + 1] if target_positions is None else first + self.time_rank[np.asarray(target_positions, dtype=np.int64)]
        start = np.maximum(first, end - limit)
        lengths = end - start
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.arange(int(lengths.sum()), dtype=np.int64) - offsets + np.repeat(start, lengths)
        return self.history_indices[self.time_order[positions]], lengths

    @classmethod
    def vocabulary(cls, train: Interactions) -> list[str]:
        """Return the genre names a new model should use for ``train``."""
        return genre_vocabulary(train)

    def user_features(
        self,
        users: np.ndarray,
        *,
        target_positions: np.ndarray | None = None,
        generator: np.random.Generator | None = None,
    ) -> KeyedJaggedTensor:
        """Build the user tower input for a batch of user indices.

        Parameters
        ----------
        users : np.ndarray of shape (B,), int64
            User indices.
        target_positions : np.ndarray of shape (B,), int64, or None
            For training: the position in the training matrix's ``indices``
            of each example's target item, which is left out of the bag.
        generator : numpy.random.Generator or None
            Source of randomness for subsampling long bags during training;
            None uses whole bags.
        """
        users = np.asarray(users, dtype=np.int64)
        keys: list[str] = []
        values: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        if self.config.use_user_id:
            keys.append(USER_ID)
            values.append(users)
            lengths.append(np.ones(len(users), dtype=np.int64))
        if self.config.use_history:
            items, bag_lengths = self._history_bags(users, target_positions, generator)
            keys.append(USER_HISTORY)
            values.append(items)
            lengths.append(bag_lengths)
        if self.config.recent_items:
            recent, recent_lengths = self._recent_bags(users, target_positions)
            keys.append(USER_RECENT)
            values.append(recent)
            lengths.append(recent_lengths)
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(np.concatenate(lengths)),
        )

    def _history_bags(self, users: np.ndarray, target_positions: np.ndarray | None, generator: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Return the history bags of ``users``: their values, concatenated, and their (B,) lengths.

        Rows of up to ``LONG_BAG_FACTOR * max_history`` items are gathered
        whole, then subsampled by independent coin flips. Longer rows are
        sampled directly, so a batch costs O(B * max_history) instead of the
        sum of its users' history lengths. With heavy users (tens of
        thousands of items), that sum made feature building the slowest part
        of a training step. Both ways keep ``Binomial(n, max_history / n)``
        items drawn uniformly from the ``n`` history items other than the target.
        """
        long_rows = np.zeros(len(users), dtype=bool)
        if generator is not None and self.max_history is not None:
            long_rows = np.diff(self.history_indptr)[users] > LONG_BAG_FACTOR * self.max_history + 1
        short = np.flatnonzero(~long_rows)
        targets = None if target_positions is None else np.asarray(target_positions, dtype=np.int64)

        items, bag_lengths, positions = _gather_rows(self.history_indptr, self.history_indices, users[short])
        row_of_value = np.repeat(short, bag_lengths)
        keep = np.ones(len(items), dtype=bool)
        if targets is not None:
            keep &= positions != np.repeat(targets[short], bag_lengths)
        if generator is not None and self.max_history is not None and bag_lengths.max(initial=0) > self.max_history:
            keep &= self._subsample_mask(row_of_value, keep, generator)
        items, row_of_value = items[keep], row_of_value[keep]

        if long_rows.any():
            assert generator is not None and self.max_history is not None
            long = np.flatnonzero(long_rows)
            starts = self.history_indptr[users[long]]
            sizes = self.history_indptr[users[long] + 1] - starts
            skip = np.full(len(long), -1, dtype=np.int64)
            if targets is not None:
                inside = (targets[long] >= starts) & (targets[long] < starts + sizes)
                skip[inside] = targets[long][inside] - starts[inside]
                sizes = sizes - inside
            counts = generator.binomial(sizes, self.max_history / sizes)
            rows, offsets = _distinct_offsets(sizes, counts, generator)
            offsets = offsets + ((skip[rows] >= 0) & (offsets >= skip[rows]))
            items = np.concatenate([items, self.history_indices[starts[rows] + offsets]])
            row_of_value = np.concatenate([row_of_value, long[rows]])
            # Bags must follow the order of users: a stable sort keeps each bag's own order.
            order = np.argsort(row_of_value, kind="stable")
            items, row_of_value = items[order], row_of_value[order]
        return items, np.bincount(row_of_value, minlength=len(users)).astype(np.int64)

    def _subsample_mask(self, row_of_value: np.ndarray, keep: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """Keep each value of a row longer than ``max_history`` with probability ``max_history / length``.

        Independent coin flips cost O(values), unlike an exact per-row sample
        that needs a sort; bags end up with ``max_history`` items on average.
        """
        assert self.max_history is not None
        row_lengths = np.bincount(row_of_value[keep], minlength=int(row_of_value.max(initial=-1)) + 1)
        keep_probability = np.minimum(1.0, self.max_history / np.maximum(row_lengths, 1))
        return generator.random(len(row_of_value)) < keep_probability[row_of_value]

    def item_features(self, items: np.ndarray) -> KeyedJaggedTensor:
        """Build the item tower input for item indices of shape (B,), int64."""
        items = np.asarray(items, dtype=np.int64)
        keys: list[str] = []
        values: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        if self.config.use_item_id:
            keys.append(ITEM_ID)
            values.append(items)
            lengths.append(np.ones(len(items), dtype=np.int64))
        if self.config.n_genres > 0:
            genres, genre_lengths, _ = _gather_rows(self.genre_indptr, self.genre_indices, items)
            keys.append(ITEM_GENRES)
            values.append(genres)
            lengths.append(genre_lengths)
        if self.config.text_dim:
            keys.append(ITEM_TEXT)
            values.append(items)
            lengths.append(np.ones(len(items), dtype=np.int64))
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(np.concatenate(lengths)),
        )
