"""The interactions container: a user x item CSR matrix with its id maps."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recx._io import atomic_path, read_json, write_json_atomic
from recx.data.idmap import IdMap

logger = logging.getLogger(__name__)

DuplicatePolicy = Literal["sum", "max", "first", "last", "error"]
DUPLICATE_POLICIES: tuple[str, ...] = ("sum", "max", "first", "last", "error")

# Keys of the metadata frame that recx reads; any other column is carried along.
TITLE_COLUMN = "title"
GENRES_COLUMN = "genres"


@dataclass(eq=False)
class Interactions:
    """Implicit feedback as a user x item CSR matrix plus the id maps.

    Rows are users and columns are items (``user_items`` orientation): row
    ``u`` holds the items user ``u`` interacted with and their weights.
    Train, validation and test splits of one dataset share the same id maps
    and shape, so their matrices can be combined and compared directly.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix of shape (n_users, n_items), float32
        Interaction weights; sorted column indices, no duplicate entries.
    users, items : IdMap
        External ids of rows and columns.
    timestamps : np.ndarray of shape (nnz,), float64, or None
        Seconds since the epoch of each stored entry, aligned with
        ``matrix.data`` (the entry at position ``p`` of ``matrix.indices``).
    item_metadata : pandas.DataFrame or None
        One row per item index, in index order (row ``i`` describes item
        ``items.to_id([i])``). Known columns: ``title`` (str) and ``genres``
        (list of str); other columns are kept as they are.
    """

    matrix: sp.csr_matrix
    users: IdMap
    items: IdMap
    timestamps: np.ndarray | None = None
    item_metadata: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not sp.issparse(self.matrix):
            raise TypeError(f"matrix must be a scipy sparse matrix, got {type(self.matrix).__name__}.")
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        matrix.sort_indices()
        self.matrix = matrix
        expected = (len(self.users), len(self.items))
        if matrix.shape != expected:
            hint = " It looks transposed: pass the items x users matrix's transpose (matrix.T), rows are users." if matrix.shape == expected[::-1] else ""
            raise ValueError(f"matrix shape {matrix.shape} does not match {expected[0]} users x {expected[1]} items.{hint}")
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
            if self.timestamps.shape != (matrix.nnz,):
                raise ValueError(f"timestamps must have one value per stored interaction ({matrix.nnz}), got shape {self.timestamps.shape}.")
        if self.item_metadata is not None and len(self.item_metadata) != len(self.items):
            raise ValueError(f"item_metadata must have one row per item ({len(self.items)}), got {len(self.item_metadata)} rows.")

    # ------------------------------------------------------------------ sizes

    @property
    def n_users(self) -> int:
        """Number of users (rows)."""
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue (columns)."""
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        """Number of stored (user, item) interactions."""
        return int(self.matrix.nnz)

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        extras = []
        if self.timestamps is not None:
            extras.append("timestamps")
        if self.item_metadata is not None:
            extras.append(f"item_metadata={list(self.item_metadata.columns)}")
        suffix = (", " + ", ".join(extras)) if extras else ""
        return f"Interactions(n_users={self.n_users}, n_items={self.n_items}, nnz={self.nnz}{suffix})"

    # ------------------------------------------------------------- accessors

    def user_items(self, user: int) -> np.ndarray:
        """Return the item indices of user index ``user``, sorted ascending (int64)."""
        start, end = self.matrix.indptr[user], self.matrix.indptr[user + 1]
        return self.matrix.indices[start:end].astype(np.int64)

    def item_counts(self) -> np.ndarray:
        """Return the number of users who interacted with each item, shape (n_items,), int64."""
        return np.bincount(self.matrix.indices, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """Return the number of items of each user, shape (n_users,), int64."""
        return np.diff(self.matrix.indptr).astype(np.int64)

    def item_titles(self) -> np.ndarray | None:
        """Return the title of each item index, or None without metadata titles."""
        if self.item_metadata is None or TITLE_COLUMN not in self.item_metadata:
            return None
        return self.item_metadata[TITLE_COLUMN].to_numpy()

    def item_genres(self) -> list[list[str]] | None:
        """Return the genre list of each item index, or None without metadata genres."""
        if self.item_metadata is None or GENRES_COLUMN not in self.item_metadata:
            return None
        return [list(g) if isinstance(g, (list, tuple, np.ndarray)) else [] for g in self.item_metadata[GENRES_COLUMN]]

    def with_entries(self, matrix: sp.csr_matrix, timestamps: np.ndarray | None) -> Interactions:
        """Return interactions over the same users, items and metadata with other entries."""
        return Interactions(matrix, self.users, self.items, timestamps, self.item_metadata)

    def to_dataframe(self) -> pd.DataFrame:
        """Return one row per interaction: ``user_id``, ``item_id``, ``weight`` and, if known, ``timestamp``."""
        coo = self.matrix.tocoo()
        # tocoo keeps CSR order for a canonical matrix, so timestamps stay aligned.
        frame = pd.DataFrame(
            {
                "user_id": self.users.to_id(coo.row),
                "item_id": self.items.to_id(coo.col),
                "weight": coo.data,
            }
        )
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        return frame

    # -------------------------------------------------------------- builders

    @classmethod
    def from_dataframe(
        cls,
        frame: pd.DataFrame,
        *,
        user_col: str = "user_id",
        item_col: str = "item_id",
        weight_col: str | None = None,
        timestamp_col: str | None = None,
        min_weight: float | None = None,
        binarize: bool = False,
        duplicates: DuplicatePolicy = "sum",
        item_metadata: pd.DataFrame | None = None,
        include_metadata_items: bool = False,
    ) -> Interactions:
        """Build interactions from one row per event.

        Parameters
        ----------
        frame : pandas.DataFrame
            The interaction log.
        user_col, item_col : str
            Columns holding external user and item ids (int or str).
        weight_col : str or None, default=None
            Column of non-negative weights (ratings, counts). None gives every
            interaction weight 1.
        timestamp_col : str or None, default=None
            Column of event times: numbers (seconds since the epoch) or
            datetimes. Needed by temporal splits.
        min_weight : float or None, default=None
            Rating threshold: events whose weight is below it are dropped
            before duplicates are merged, for example 4.0 to keep only
            ratings of 4 and 5 as positives.
        binarize : bool, default=False
            Set every kept weight to 1 after filtering.
        duplicates : {"sum", "max", "first", "last", "error"}, default="sum"
            How to merge repeated (user, item) events: add their weights, keep
            the largest, keep the earliest or the latest (by timestamp, then by
            row order), or raise. The merged entry keeps the latest timestamp
            for "sum" and "max", and the kept event's timestamp otherwise.
        item_metadata : pandas.DataFrame or None
            Item descriptions indexed by external item id, for example with
            ``title`` and ``genres`` (list of str) columns.
        include_metadata_items : bool, default=False
            Add items that appear only in ``item_metadata`` to the catalogue
            (as columns without interactions), for cold-start evaluation.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}.")
        if duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"invalid duplicates policy {duplicates!r}: expected one of {list(DUPLICATE_POLICIES)}.")
        for option, column in (("user_col", user_col), ("item_col", item_col), ("weight_col", weight_col), ("timestamp_col", timestamp_col)):
            if column is not None and column not in frame.columns:
                raise ValueError(f"column {column!r} ({option}) not found; the input has columns {list(frame.columns)}. Pass {option}=<name> to choose another column.")
        if len(frame) == 0:
            raise ValueError("no interactions: the input has 0 rows. Check the file path and any filters applied before loading.")

        # Step 1: validate ids, weights and timestamps column by column.
        for option, column in (("user_col", user_col), ("item_col", item_col)):
            missing = frame[column].isna()
            if missing.any():
                first = int(np.flatnonzero(missing.to_numpy())[0])
                raise ValueError(f"column {column!r} ({option}) has {int(missing.sum())} missing ids, first at row {first}. Drop or fill those rows before loading.")
        if weight_col is None:
            weights = np.ones(len(frame), dtype=np.float64)
        else:
            try:
                weights = pd.to_numeric(frame[weight_col], errors="raise").to_numpy(dtype=np.float64)
            except (ValueError, TypeError) as error:
                raise ValueError(f"weight column {weight_col!r} must be numeric: {error}.") from error
            _check_weights(weights, f"weight column {weight_col!r}")
        timestamps = None if timestamp_col is None else _timestamps_to_seconds(frame[timestamp_col], timestamp_col)

        # Step 2: apply the rating threshold, then binarize.
        keep = np.ones(len(frame), dtype=bool) if min_weight is None else weights >= min_weight
        if not keep.any():
            raise ValueError(f"no interactions left: every weight is below min_weight={min_weight} (largest weight {weights.max():g}). Lower min_weight or drop it.")
        user_values = frame[user_col].to_numpy()[keep]
        item_values = frame[item_col].to_numpy()[keep]
        weights = weights[keep]
        if binarize:
            weights = np.ones_like(weights)
        if timestamps is not None:
            timestamps = timestamps[keep]

        # Step 3: map ids to indices. The catalogue may also include metadata-only items.
        users, user_index = IdMap.from_values(user_values, name="user")
        items, item_index = IdMap.from_values(item_values, name="item")
        metadata = None
        if item_metadata is not None:
            metadata_ids = IdMap(item_metadata.index.to_numpy(), name="item")
            if include_metadata_items:
                merged = np.concatenate([items.ids, metadata_ids.ids])
                items, _ = IdMap.from_values(merged, name="item")
                item_index = items.to_index(item_values)
            metadata = _align_metadata(item_metadata, items)

        # Step 4: merge duplicate (user, item) events by the chosen policy.
        matrix, merged_timestamps = _merge_duplicates(user_index, item_index, weights, timestamps, (len(users), len(items)), duplicates, (users, items))
        logger.info("built interactions: %d users, %d items, %d interactions (%d input rows)", len(users), len(items), matrix.nnz, len(frame))
        return cls(matrix, users, items, merged_timestamps, metadata)

    @classmethod
    def from_scipy(
        cls,
        matrix: sp.spmatrix | sp.sparray,
        *,
        users: IdMap | None = None,
        items: IdMap | None = None,
        item_metadata: pd.DataFrame | None = None,
    ) -> Interactions:
        """Wrap a user x item sparse matrix; without id maps, ids are ``0 .. n - 1``.

        Raises
        ------
        ValueError
            If weights are NaN or negative, the matrix is empty, or its shape
            does not match the id maps (a transposed matrix is named as such).
        """
        if not sp.issparse(matrix):
            raise TypeError(f"matrix must be a scipy sparse matrix (for example scipy.sparse.csr_matrix), got {type(matrix).__name__}.")
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        if csr.nnz == 0:
            raise ValueError(f"no interactions: the {csr.shape[0]} x {csr.shape[1]} matrix has no non-zero entries.")
        _check_weights(csr.data, "matrix values")
        users = users if users is not None else IdMap(np.arange(csr.shape[0]), name="user")
        items = items if items is not None else IdMap(np.arange(csr.shape[1]), name="item")
        return cls(csr, users, items, None, item_metadata)

    # ---------------------------------------------------------------- saving

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the matrix, timestamps, id maps and metadata into ``directory``.

        Files: ``interactions.npz`` (plain arrays, loaded without pickle),
        ``users.json``, ``items.json`` and, with metadata, ``item_metadata.parquet``.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "indptr": self.matrix.indptr.astype(np.int64),
            "indices": self.matrix.indices.astype(np.int64),
            "data": self.matrix.data.astype(np.float32),
            "shape": np.asarray(self.matrix.shape, dtype=np.int64),
        }
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps
        with atomic_path(folder / "interactions.npz") as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, **arrays)
        self.users.save(folder / "users.json")
        self.items.save(folder / "items.json")
        if self.item_metadata is not None:
            with atomic_path(folder / "item_metadata.parquet") as temporary:
                self.item_metadata.reset_index(drop=True).to_parquet(temporary, index=False)
        write_json_atomic(folder / "interactions.json", {"n_users": self.n_users, "n_items": self.n_items, "nnz": self.nnz})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Interactions:
        """Read interactions written by :meth:`save`."""
        folder = Path(directory)
        path = folder / "interactions.npz"
        if not path.is_file():
            raise FileNotFoundError(f"interactions not found: {path} does not exist. Pass a folder written by Interactions.save or a recx run folder.")
        with np.load(path, allow_pickle=False) as arrays:
            shape = tuple(int(v) for v in arrays["shape"])
            matrix = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
            timestamps = arrays["timestamps"] if "timestamps" in arrays.files else None
        users = IdMap.load(folder / "users.json")
        items = IdMap.load(folder / "items.json")
        metadata = None
        if (folder / "item_metadata.parquet").is_file():
            metadata = pd.read_parquet(folder / "item_metadata.parquet")
            metadata.index = pd.Index(items.ids, name="item_id")
            if GENRES_COLUMN in metadata:
                metadata[GENRES_COLUMN] = [list(g) if g is not None else [] for g in metadata[GENRES_COLUMN]]
        # Stored counts catch a folder whose files come from different saves.
        summary: dict[str, Any] = read_json(folder / "interactions.json", what="interactions summary")
        if summary.get("nnz") != matrix.nnz:
            raise ValueError(f"interactions in {folder} are inconsistent: interactions.json says {summary.get('nnz')} entries, the matrix has {matrix.nnz}. Save the interactions again.")
        return cls(matrix, users, items, timestamps, metadata)


def _check_weights(weights: np.ndarray, what: str) -> None:
    """Raise if ``weights`` hold NaN, infinite or negative values."""
    not_finite = ~np.isfinite(weights)
    if not_finite.any():
        first = int(np.flatnonzero(not_finite)[0])
        raise ValueError(f"{what} has {int(not_finite.sum())} NaN or infinite values, first at position {first}. Drop or fill them before loading.")
    negative = weights < 0
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{what} has {int(negative.sum())} negative values, first {weights[first]:g} at position {first}. "
            f"Implicit feedback weights must be >= 0; drop negative events or shift the scale."
        )


def _timestamps_to_seconds(column: pd.Series, name: str) -> np.ndarray:
    """Convert numbers or datetimes to float64 seconds since the epoch."""
    if column.isna().any():
        first = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise ValueError(f"timestamp column {name!r} has {int(column.isna().sum())} missing values, first at row {first}. Fill or drop them, or load without timestamp_col.")
    if pd.api.types.is_datetime64_any_dtype(column):
        # Time-zone-aware values must become naive UTC before the cast to datetime64[ns].
        values = column.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(column.dt, "tz", None) is not None else column
        return values.astype("datetime64[ns]").astype(np.int64).to_numpy() / 1e9
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        pass
    try:
        parsed = pd.to_datetime(column, utc=True)
    except (ValueError, TypeError) as error:
        raise ValueError(f"timestamp column {name!r} contains neither numbers nor dates, for example {column.iloc[0]!r}.") from error
    return parsed.astype("datetime64[ns, UTC]").astype(np.int64).to_numpy() / 1e9


def _align_metadata(metadata: pd.DataFrame, items: IdMap) -> pd.DataFrame:
    """Return ``metadata`` reindexed to ``items`` order; unknown items get empty rows."""
    if not metadata.index.is_unique:
        duplicated = metadata.index[metadata.index.duplicated()][:3].tolist()
        raise ValueError(f"item_metadata index must hold unique item ids, but {duplicated} repeat.")
    index = pd.Index(items.ids, name="item_id")
    source = metadata.copy()
    if items.kind == "int" and source.index.dtype.kind not in "iu":
        source.index = pd.Index(IdMap(source.index.to_numpy()).ids)
    aligned = source.reindex(index)
    if TITLE_COLUMN in aligned:
        aligned[TITLE_COLUMN] = aligned[TITLE_COLUMN].fillna("").astype(str)
    if GENRES_COLUMN in aligned:
        aligned[GENRES_COLUMN] = [list(g) if isinstance(g, (list, tuple, np.ndarray)) else [] for g in aligned[GENRES_COLUMN]]
    return aligned


def _merge_duplicates(
    user_index: np.ndarray,
    item_index: np.ndarray,
    weights: np.ndarray,
    timestamps: np.ndarray | None,
    shape: tuple[int, int],
    policy: str,
    id_maps: tuple[IdMap, IdMap] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Build a canonical CSR matrix, merging repeated (user, item) pairs by ``policy``.

    ``id_maps`` (users, items), when given, name the external ids in the error of policy "error".
    """
    # Sort by user, item, then time (or input order) so each pair forms one run
    # whose first and last elements are its earliest and latest events.
    # np.lexsort treats its last key as the primary one.
    order_keys = [np.arange(len(user_index))]
    if timestamps is not None:
        order_keys.append(timestamps)
    order = np.lexsort((*order_keys, item_index, user_index))
    users, items, values = user_index[order], item_index[order], weights[order]
    times = None if timestamps is None else timestamps[order]

    starts = np.ones(len(users), dtype=bool)
    starts[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    run_starts = np.flatnonzero(starts)
    n_duplicates = len(users) - len(run_starts)
    if n_duplicates and policy == "error":
        first = run_starts[np.flatnonzero(np.diff(np.append(run_starts, len(users))) > 1)[0]]
        example = f"user index {users[first]} and item index {items[first]}"
        if id_maps is not None:
            example = f"user id {id_maps[0].to_id([users[first]]).tolist()[0]!r} and item id {id_maps[1].to_id([items[first]]).tolist()[0]!r}"
        raise ValueError(
            f"{n_duplicates} duplicate (user, item) events, for example {example}. "
            f"Choose a duplicates policy: 'sum', 'max', 'first' or 'last'."
        )
    if n_duplicates:
        logger.info("merged %d duplicate (user, item) events with policy %r", n_duplicates, policy)

    run_ends = np.append(run_starts[1:], len(users)) - 1
    if policy == "sum":
        merged = np.add.reduceat(values, run_starts)
        kept_times = None if times is None else times[run_ends]
    elif policy == "max":
        merged = np.maximum.reduceat(values, run_starts)
        kept_times = None if times is None else times[run_ends]
    elif policy == "first":
        merged = values[run_starts]
        kept_times = None if times is None else times[run_starts]
    else:
        merged = values[run_ends]
        kept_times = None if times is None else times[run_ends]

    row_users, row_items = users[run_starts], items[run_starts]
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.add.at(indptr, row_users + 1, 1)
    indptr = np.cumsum(indptr)
    matrix = sp.csr_matrix((merged.astype(np.float32), row_items.astype(np.int32), indptr), shape=shape)
    return matrix, kept_times


def merge_interactions(first: Interactions, second: Interactions) -> Interactions:
    """Return the union of two disjoint parts of one dataset (for example train and validation).

    Both parts must share id maps. A (user, item) pair present in both is a
    sign that the parts overlap, and raises.
    """
    if first.users != second.users or first.items != second.items:
        raise ValueError("cannot merge interactions with different id maps: both parts must come from the same dataset split.")
    overlap = first.matrix.multiply(second.matrix)
    overlap.eliminate_zeros()
    if overlap.nnz:
        raise ValueError(f"cannot merge interactions: {overlap.nnz} (user, item) pairs appear in both parts.")
    first_coo, second_coo = first.matrix.tocoo(), second.matrix.tocoo()
    rows = np.concatenate([first_coo.row, second_coo.row])
    columns = np.concatenate([first_coo.col, second_coo.col])
    data = np.concatenate([first_coo.data, second_coo.data])
    timestamps = None
    if first.timestamps is not None and second.timestamps is not None:
        timestamps = np.concatenate([first.timestamps, second.timestamps])
    order = np.lexsort((columns, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=first.n_users))])
    matrix = sp.csr_matrix((data[order], columns[order], indptr), shape=first.matrix.shape)
    return first.with_entries(matrix, None if timestamps is None else timestamps[order])
