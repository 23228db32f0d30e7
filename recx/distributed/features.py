"""Tower inputs built from a memory-mapped :class:`~recx.data.streaming.CsrStore`."""

from __future__ import annotations

import numpy as np

from recx.data.streaming import CsrStore
from recx.models.config import TwoTowerConfig
from recx.models.features import FeatureBuilder


class StoreFeatureBuilder(FeatureBuilder):
    """A :class:`FeatureBuilder` whose user histories stay on disk.

    It reads the history bags and recent-item bags from the store's
    memory-mapped ``indptr``, ``indices``, ``time_order`` and ``time_rank``,
    so building a batch reads only the rows of that batch's users. The parent
    class would copy these arrays into memory. The batches it builds equal
    those of ``FeatureBuilder(config, store.to_interactions())``.

    NOTE: this sets the arrays that :class:`FeatureBuilder` reads
    (``history_indptr``, ``history_indices``, ``time_order``, ``time_rank``,
    ``genre_indptr``, ``genre_indices``) directly instead of calling its
    constructor. A rename there must be made here too.

    Parameters
    ----------
    config : TwoTowerConfig
        Must have ``n_genres == 0``: a store carries no item metadata.
    store : CsrStore
    max_history : int or None, default=10
    """

    def __init__(self, config: TwoTowerConfig, store: CsrStore, max_history: int | None = 10) -> None:
        if store.n_users != config.n_users or store.n_items != config.n_items:
            raise ValueError(
                f"the model was built for {config.n_users} users x {config.n_items} items, but the store has {store.n_users} x {store.n_items}. "
                f"Build the model from the store it trains on."
            )
        if config.n_genres:
            raise ValueError(f"the model reads {config.n_genres} item genres, but a store carries no item metadata. Build the model with n_genres=0.")
        if max_history is not None and max_history <= 0:
            raise ValueError(f"max_history must be a positive integer or None, got {max_history}.")
        self.config = config
        self.max_history = max_history
        self.history_indptr = store.indptr
        self.history_indices = store.indices
        if config.recent_items:
            if store.time_order is None or store.time_rank is None:
                raise ValueError("recent_items needs timestamps, but the store has none. Ingest the log with a timestamp column or set recent_items to 0.")
            self.time_order = store.time_order
            self.time_rank = store.time_rank
        self.genre_indptr = np.zeros(config.n_items + 1, dtype=np.int64)
        self.genre_indices = np.empty(0, dtype=np.int64)
