"""Interaction logs larger than memory: chunked ingestion into an on-disk CSR store, and batches read from it.

:func:`ingest` reads a CSV/TSV or Parquet log in chunks (pandas ``chunksize``,
pyarrow ``iter_batches``) and writes a :class:`CsrStore` folder: the same
user x item CSR matrix, id maps and timestamps that
:func:`recx.data.read_interactions` builds in memory, as ``.npy`` arrays that
load memory-mapped. No dense user x item matrix is built at any step, and
peak memory is about one chunk plus the id maps, whatever the file size.

:class:`EntryBatches` yields shuffled training batches of (user, item,
entry position) straight from the store's memory-mapped ``indptr`` and
``indices``. Past ``shuffle_buffer`` entries it shuffles block-wise, so it
needs no array with one element per interaction either.

Store layout (format version :data:`STORE_FORMAT_VERSION`)::

    STORE/
      store.json       format version, sizes, source file and options
      users.json       IdMap of the rows
      items.json       IdMap of the columns
      indptr.npy       (n_users + 1,) int64
      indices.npy      (nnz,) int64, sorted within each row
      data.npy         (nnz,) float32 weights
      item_counts.npy  (n_items,) int64, users per item
      timestamps.npy   (nnz,) float64 seconds, only with a timestamp column
      time_order.npy   (nnz,) int64, entry positions sorted by user, then time, then item
      time_rank.npy    (nnz,) int64, each entry's rank in its user's time order
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as parquet
import scipy.sparse as sp

from recx._io import read_json, write_json_atomic
from recx.data.idmap import IdMap, _infer_kind
from recx.data.interactions import DUPLICATE_POLICIES, Interactions, _timestamps_to_seconds
from recx.data.readers import (
    _CANONICAL_INTEGER,
    _check_columns,
    _check_file,
    _check_id_dtype,
    _format_from_extension,
    _looks_like_data,
    _parse_text,
    _requested_columns,
    _text_ids_to_array,
    _typed_ids_to_array,
)

logger = logging.getLogger(__name__)

#: Version of the store layout; opening refuses any other.
STORE_FORMAT_VERSION = 1
STORE_FILE = "store.json"

#: Rows read per chunk by default: about 100 MB of parsed columns.
DEFAULT_CHUNK_ROWS = 1_000_000

#: Entries that :class:`EntryBatches` shuffles as one exact permutation by
#: default (128 MB of int64 positions). Larger stores shuffle block-wise.
DEFAULT_SHUFFLE_BUFFER = 16_000_000

#: Blocks per shuffle window in block-wise shuffling.
BLOCKS_PER_WINDOW = 16


# ------------------------------------------------------------------ ingestion


class _IdCollector:
    """Distinct ids of one column across chunks, numbered in order of first appearance.

    The numbers are provisional: once every chunk has been read,
    :meth:`final_map` sorts the ids (as :meth:`IdMap.from_values` does) and
    returns the translation from provisional numbers to final indices.
    """

    def __init__(self, column: str, option: str, name: str) -> None:
        self.column, self.option, self.name = column, option, name
        self.index = pd.Index([], dtype=object)
        self.kind: str | None = None
        # An example of each kind and where it was read, for the mixed-kind error.
        self.examples: dict[str, tuple[Any, str]] = {}
        self.used = np.zeros(0, dtype=bool)

    def codes(self, values: np.ndarray, where: str) -> np.ndarray:
        """Return provisional numbers of ``values`` (int64 or str ids), adding new ids."""
        # Typed as IdMap.from_values types a whole column (integral floats are int ids).
        kind = _infer_kind(values, name=self.name) if len(values) else (self.kind or "int")
        values = values.astype(np.int64) if kind == "int" else values.astype(object)
        if len(values):
            self.examples.setdefault(kind, (values[0], where))
        if self.kind is None:
            self.kind = kind
            self.index = pd.Index(np.empty(0, dtype=np.int64 if kind == "int" else object))
        elif kind != self.kind:
            values = self._reconcile(values, kind)
        codes, uniques = pd.factorize(values)
        positions = self.index.get_indexer(uniques)
        new = positions < 0
        if new.any():
            positions[new] = np.arange(len(self.index), len(self.index) + int(new.sum()))
            self.index = self.index.append(pd.Index(uniques[new]))
            self.used = np.concatenate([self.used, np.zeros(int(new.sum()), dtype=bool)])
        return positions[codes].astype(np.int64)

    def _reconcile(self, values: np.ndarray, kind: str) -> np.ndarray:
        """Merge a chunk whose ids came out as the other kind than earlier chunks.

        The in-memory reader types a text column as a whole. Integer literals
        too large for int64 make it keep every id as text, so a chunk of such
        literals turns the ids read so far into text. Any other mixture of
        integers and text is an error there too.
        """
        text_values = values if kind == "str" else None
        text_examples = pd.Series(np.asarray(text_values if text_values is not None else self.index.to_numpy(), dtype=object), dtype=object)
        if text_examples.str.fullmatch(_CANONICAL_INTEGER).all():
            if self.kind == "int":
                self.index = pd.Index(self.index.astype(str).to_numpy(dtype=object))
                self.kind = "str"
            return values.astype(str).astype(object) if kind == "int" else values
        integer, integer_where = self.examples["int"]
        text, text_where = self.examples["str"]
        raise ValueError(
            f"column {self.column!r} ({self.option}) mixes integer ids and other text, "
            f"for example {int(integer)} ({integer_where}) and {text!r} ({text_where}). "
            f"Pass id_dtype='str' to read every id as text, or id_dtype='int' if all ids are integers written in different ways (such as '007')."
        )

    def mark_used(self, codes: np.ndarray) -> None:
        self.used[codes] = True

    def final_map(self) -> tuple[IdMap, np.ndarray]:
        """Return the sorted IdMap of the used ids and the (n_provisional,) int64 translation (-1 for unused ids)."""
        values = self.index.to_numpy()[self.used]
        id_map, final_codes = IdMap.from_values(values, name=self.name)
        translation = np.full(len(self.index), -1, dtype=np.int64)
        translation[np.flatnonzero(self.used)] = final_codes
        return id_map, translation


def _read_chunks(file: Path, format: str, columns: dict[str, str], chunk_rows: int, *, sep: str | None, encoding: str, names: list[str] | None) -> Iterator[tuple[pd.DataFrame, int]]:
    """Yield (chunk, index of its first data row) with the requested columns of the file."""
    needed = list(dict.fromkeys(columns.values()))
    if format == "parquet":
        try:
            handle = parquet.ParquetFile(file)
        except (pyarrow.ArrowException, OSError) as error:
            raise ValueError(f"could not read {file} as Parquet ({error}). Check that it is a Parquet file, or pass format='csv'.") from error
        _check_columns(columns, list(handle.schema_arrow.names), file, header_is_data=False)
        first = 0
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=needed):
            frame = batch.to_pandas()
            yield frame, first
            first += len(frame)
        return

    if sep is None:
        sep = "\t" if format == "tsv" else ","
    header_options: dict[str, Any] = {"header": None, "names": names} if names is not None else {"header": 0}
    available = list(_parse_text(file, encoding, sep=sep, nrows=0, **header_options).columns)
    _check_columns(columns, available, file, header_is_data=names is None and _looks_like_data(available))
    reader = _parse_text(
        file,
        encoding,
        sep=sep,
        usecols=needed,
        dtype={columns["user_col"]: str, columns["item_col"]: str},
        keep_default_na=False,
        na_values={column: [""] for column in needed},
        skipinitialspace=True,
        chunksize=chunk_rows,
        **header_options,
    )
    first = 0
    try:
        for frame in reader:
            yield frame, first
            first += len(frame)
    except UnicodeDecodeError as error:
        raise ValueError(f"could not decode {file} as {encoding} ({error.reason}). Pass the file's encoding, for example encoding='latin-1'.") from error
    except pd.errors.ParserError as error:
        raise ValueError(f"could not parse {file}: {error}. Check the separator (sep=) and quoting.") from error
    finally:
        reader.close()


def _check_missing(frame: pd.DataFrame, column: str, option: str, first_row: int, file: Path, what: str) -> None:
    """Raise naming the first row (counted from 0 over the whole file) where ``column`` is empty."""
    missing = frame[column].isna().to_numpy()
    if missing.any():
        row = first_row + int(np.flatnonzero(missing)[0])
        raise ValueError(f"column {column!r} ({option}) in {file} has missing {what}, first at data row {row}. Drop or fill those rows before loading.")


def _chunk_weights(frame: pd.DataFrame, column: str | None, first_row: int, file: Path) -> np.ndarray:
    """Return the chunk's weights as float64, checking them as the in-memory reader does."""
    if column is None:
        return np.ones(len(frame), dtype=np.float64)
    try:
        weights = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{file}: weight column {column!r} must be numeric: {error}.") from error
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{file}: weight column {column!r} has a NaN, infinite or negative value ({weights[bad][0]:g}) at data row {row}. "
            f"Implicit feedback weights must be finite and >= 0; drop or fix those rows."
        )
    return weights


@dataclass
class _Spill:
    """Kept rows of every chunk, appended to flat binary files in the work folder."""

    folder: Path

    def __post_init__(self) -> None:
        self.files = {name: open(self.folder / f"spill-{name}.bin", "wb") for name in ("users", "items", "weights", "times")}
        self.rows = 0

    def append(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray | None) -> None:
        users.astype(np.int64).tofile(self.files["users"])
        items.astype(np.int64).tofile(self.files["items"])
        weights.astype(np.float64).tofile(self.files["weights"])
        if times is not None:
            times.astype(np.float64).tofile(self.files["times"])
        self.rows += len(users)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()

    def array(self, name: str, dtype: type) -> np.ndarray:
        path = self.folder / f"spill-{name}.bin"
        if self.rows == 0 or path.stat().st_size == 0:
            return np.empty(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(self.rows,))


def ingest(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    id_dtype: str = "auto",
    min_weight: float | None = None,
    binarize: bool = False,
    duplicates: str = "sum",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
) -> CsrStore:
    """Read an interaction log in chunks and write it as a memory-mappable :class:`CsrStore`.

    The result equals :func:`recx.data.read_interactions` on the same file
    with the same options: the same id maps (sorted distinct ids of the kept
    rows), the same merged weights and timestamps, the same CSR order.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv``/``.tsv`` file (optionally compressed) or a ``.parquet`` file.
    output : str or os.PathLike
        Store folder to write. It must not exist or be empty, unless
        ``overwrite`` is set.
    format, user_col, item_col, weight_col, timestamp_col, sep, names, encoding, id_dtype, min_weight, binarize, duplicates
        As in :func:`recx.data.read_csv` and :func:`recx.data.read_parquet`.
    chunk_rows : int, default=DEFAULT_CHUNK_ROWS
        Rows read and processed at a time; memory grows with it.
    overwrite : bool, default=False
        Replace an existing store at ``output``.

    Returns
    -------
    CsrStore
        The new store, opened memory-mapped.

    Notes
    -----
    Four steps, each bounded by one chunk of memory plus arrays with one
    element per user or item:

    1. Parse each chunk once, check and type its columns, number new ids in
       order of appearance, and append the kept rows to spill files.
    2. Sort the distinct ids into the final id maps, count each user's rows
       and turn the counts into row offsets.
    3. Scatter the spilled rows into row order (arrival order within a row).
    4. For blocks of users, sort each row by item, merge duplicate pairs by
       ``duplicates`` and write indices, weights, timestamps and time order.
    """
    started = time.perf_counter()
    file = _check_file(path)
    _check_id_dtype(id_dtype)
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"invalid duplicates policy {duplicates!r}: expected one of {list(DUPLICATE_POLICIES)}.")
    if not isinstance(chunk_rows, int) or chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}.")
    if format is None:
        format = _format_from_extension(file)
    elif format not in ("csv", "tsv", "parquet"):
        raise ValueError(f"unknown format {format!r}: expected one of ['csv', 'tsv', 'parquet'].")
    target = Path(output)
    _check_store_target(target, overwrite)
    columns = _requested_columns(user_col, item_col, weight_col, timestamp_col)

    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        # Step 1: one pass over the file.
        users = _IdCollector(user_col, "user_col", "user")
        items = _IdCollector(item_col, "item_col", "item")
        spill = _Spill(work)
        total_rows = 0
        first_data_line = 1 if names is not None else 2
        try:
            for frame, first_row in _read_chunks(file, format, columns, chunk_rows, sep=sep, encoding=encoding, names=names):
                total_rows += len(frame)
                user_codes, item_codes, weights, times = _process_chunk(
                    frame, first_row, columns, file, format, id_dtype, first_data_line, users, items, min_weight=min_weight, binarize=binarize
                )
                spill.append(user_codes, item_codes, weights, times)
                logger.debug("ingest %s: %d rows read, %d kept", file, total_rows, spill.rows)
        finally:
            spill.close()
        if total_rows == 0:
            raise ValueError(f"no interactions: {file} has no data rows.")
        if spill.rows == 0:
            raise ValueError(f"{file}: no interactions left: every weight is below min_weight={min_weight}. Lower min_weight or drop it.")

        # Step 2: final id maps and row offsets.
        user_map, user_translation = users.final_map()
        item_map, item_translation = items.final_map()
        n_users, n_items = len(user_map), len(item_map)
        spilled_users = spill.array("users", np.int64)
        raw_counts = np.zeros(n_users, dtype=np.int64)
        for start in range(0, spill.rows, chunk_rows):
            raw_counts += np.bincount(user_translation[spilled_users[start : start + chunk_rows]], minlength=n_users)
        raw_indptr = np.concatenate([[0], np.cumsum(raw_counts)]).astype(np.int64)

        # Step 3: rows into user order, arrival order kept within each user.
        has_times = timestamp_col is not None
        raw = {
            "items": np.lib.format.open_memmap(work / "raw-items.npy", mode="w+", dtype=np.int64, shape=(spill.rows,)),
            "weights": np.lib.format.open_memmap(work / "raw-weights.npy", mode="w+", dtype=np.float64, shape=(spill.rows,)),
        }
        if has_times:
            raw["times"] = np.lib.format.open_memmap(work / "raw-times.npy", mode="w+", dtype=np.float64, shape=(spill.rows,))
        spilled = {"items": spill.array("items", np.int64), "weights": spill.array("weights", np.float64)}
        if has_times:
            spilled["times"] = spill.array("times", np.float64)
        cursor = raw_indptr[:-1].copy()
        for start in range(0, spill.rows, chunk_rows):
            stop = min(start + chunk_rows, spill.rows)
            rows = user_translation[spilled_users[start:stop]]
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            rank = np.arange(len(rows)) - np.searchsorted(sorted_rows, sorted_rows, side="left")
            destination = cursor[sorted_rows] + rank
            raw["items"][destination] = item_translation[spilled["items"][start:stop][order]]
            raw["weights"][destination] = spilled["weights"][start:stop][order]
            if has_times:
                raw["times"][destination] = spilled["times"][start:stop][order]
            cursor += np.bincount(rows, minlength=n_users)
        del spilled, spilled_users
        for name in ("users", "items", "weights", "times"):
            (work / f"spill-{name}.bin").unlink(missing_ok=True)

        # Step 4: sort rows, merge duplicates, write the store arrays.
        nnz = _merge_rows(work, raw, raw_indptr, (user_map, item_map), duplicates, chunk_rows, file)
        user_map.save(work / "users.json")
        item_map.save(work / "items.json")
        write_json_atomic(
            work / STORE_FILE,
            {
                "format_version": STORE_FORMAT_VERSION,
                "n_users": n_users,
                "n_items": n_items,
                "nnz": nnz,
                "has_timestamps": has_times,
                "source": {
                    "path": str(file),
                    "rows": total_rows,
                    "kept_rows": spill.rows,
                    "options": {
                        "format": format,
                        "user_col": user_col,
                        "item_col": item_col,
                        "weight_col": weight_col,
                        "timestamp_col": timestamp_col,
                        "id_dtype": id_dtype,
                        "min_weight": min_weight,
                        "binarize": binarize,
                        "duplicates": duplicates,
                    },
                },
            },
        )
        _replace_folder(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info("ingested %s: %d users, %d items, %d interactions (%d rows) in %.1f s", file, n_users, n_items, nnz, total_rows, time.perf_counter() - started)
    return CsrStore.open(target)


def _process_chunk(
    frame: pd.DataFrame,
    first_row: int,
    columns: dict[str, str],
    file: Path,
    format: str,
    id_dtype: str,
    first_data_line: int,
    users: _IdCollector,
    items: _IdCollector,
    *,
    min_weight: float | None,
    binarize: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Type and check one chunk; return provisional user and item numbers, weights and times of its kept rows."""
    codes = {}
    for collector, what in ((users, "user ids"), (items, "item ids")):
        column, option = collector.column, collector.option
        _check_missing(frame, column, option, first_row, file, what)
        if format == "parquet":
            values = _typed_ids_to_array(frame[column], column=column, option=option, id_dtype=id_dtype, file=file)
            where = f"data row {first_row}"
        else:
            values = _text_ids_to_array(frame[column], column=column, option=option, id_dtype=id_dtype, file=file, first_data_line=first_data_line + first_row)
            where = f"line {first_data_line + first_row}"
        codes[what] = collector.codes(np.asarray(values), f"{file}, chunk from {where}")
    weights = _chunk_weights(frame, columns.get("weight_col"), first_row, file)
    times = None
    if "timestamp_col" in columns:
        column = columns["timestamp_col"]
        _check_missing(frame, column, "timestamp_col", first_row, file, "timestamps")
        times = _timestamps_to_seconds(frame[column], column)

    keep = np.ones(len(frame), dtype=bool) if min_weight is None else weights >= min_weight
    user_codes, item_codes = codes["user ids"][keep], codes["item ids"][keep]
    users.mark_used(user_codes)
    items.mark_used(item_codes)
    weights = np.ones(int(keep.sum())) if binarize else weights[keep]
    return user_codes, item_codes, weights, None if times is None else times[keep]


def _merge_rows(work: Path, raw: dict[str, np.ndarray], raw_indptr: np.ndarray, id_maps: tuple[IdMap, IdMap], duplicates: str, block_entries: int, file: Path) -> int:
    """Sort each user's entries by item, merge duplicates, and write the store arrays; return nnz.

    Follows :meth:`Interactions.from_dataframe`. Within a (user, item) pair,
    entries sort by time, then by arrival. "sum" and "max" keep the latest
    timestamp, and "first" and "last" keep the timestamp of the kept entry.
    """
    user_map, item_map = id_maps
    n_users, n_items = len(user_map), len(item_map)
    upper = len(raw["items"])
    has_times = "times" in raw
    out = {
        "indices": np.lib.format.open_memmap(work / "indices.npy", mode="w+", dtype=np.int64, shape=(upper,)),
        "data": np.lib.format.open_memmap(work / "data.npy", mode="w+", dtype=np.float32, shape=(upper,)),
    }
    if has_times:
        out["timestamps"] = np.lib.format.open_memmap(work / "timestamps.npy", mode="w+", dtype=np.float64, shape=(upper,))
        out["time_order"] = np.lib.format.open_memmap(work / "time_order.npy", mode="w+", dtype=np.int64, shape=(upper,))
        out["time_rank"] = np.lib.format.open_memmap(work / "time_rank.npy", mode="w+", dtype=np.int64, shape=(upper,))
    counts = np.zeros(n_users, dtype=np.int64)
    item_counts = np.zeros(n_items, dtype=np.int64)
    written = 0
    first_user = 0
    while first_user < n_users:
        # A block of whole users with about block_entries entries (at least one user).
        last_user = int(np.searchsorted(raw_indptr, raw_indptr[first_user] + block_entries, side="right")) - 1
        last_user = min(max(last_user, first_user + 1), n_users)
        start, stop = int(raw_indptr[first_user]), int(raw_indptr[last_user])
        rows = np.repeat(np.arange(first_user, last_user, dtype=np.int64), np.diff(raw_indptr[first_user : last_user + 1]))
        items = np.asarray(raw["items"][start:stop])
        values = np.asarray(raw["weights"][start:stop])
        times = np.asarray(raw["times"][start:stop]) if has_times else None

        order_keys: list[np.ndarray] = [np.arange(len(rows))]
        if times is not None:
            order_keys.append(times)
        order = np.lexsort((*order_keys, items, rows))
        rows, items, values = rows[order], items[order], values[order]
        times = None if times is None else times[order]
        starts = np.ones(len(rows), dtype=bool)
        starts[1:] = (rows[1:] != rows[:-1]) | (items[1:] != items[:-1])
        run_starts = np.flatnonzero(starts)
        if len(run_starts) < len(rows) and duplicates == "error":
            first = run_starts[np.flatnonzero(np.diff(np.append(run_starts, len(rows))) > 1)[0]]
            raise ValueError(
                f"{file}: duplicate (user, item) events, for example user {user_map.to_id([rows[first]]).tolist()[0]!r} and item {item_map.to_id([items[first]]).tolist()[0]!r}. "
                f"Choose a duplicates policy: 'sum', 'max', 'first' or 'last'."
            )
        run_ends = np.append(run_starts[1:], len(rows)) - 1
        if duplicates == "sum":
            merged = np.add.reduceat(values, run_starts)
        elif duplicates == "max":
            merged = np.maximum.reduceat(values, run_starts)
        elif duplicates == "first":
            merged = values[run_starts]
        else:
            merged = values[run_ends]
        kept_times = None
        if times is not None:
            kept_times = times[run_starts] if duplicates == "first" else times[run_ends]

        block_rows, block_items = rows[run_starts], items[run_starts]
        end = written + len(block_items)
        out["indices"][written:end] = block_items
        out["data"][written:end] = merged.astype(np.float32)
        block_counts = np.bincount(block_rows - first_user, minlength=last_user - first_user)
        counts[first_user:last_user] = block_counts
        item_counts += np.bincount(block_items, minlength=n_items)
        if kept_times is not None:
            # Same keys as FeatureBuilder's time order: user, then time, then item.
            local_order = np.lexsort((block_items, kept_times, block_rows))
            row_starts = np.concatenate([[0], np.cumsum(block_counts)])[block_rows - first_user]
            rank = np.empty(len(local_order), dtype=np.int64)
            rank[local_order] = np.arange(len(local_order)) - row_starts[local_order]
            out["timestamps"][written:end] = kept_times
            out["time_order"][written:end] = local_order + written
            out["time_rank"][written:end] = rank
        written = end
        first_user = last_user

    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    np.save(work / "indptr.npy", indptr)
    np.save(work / "item_counts.npy", item_counts)
    for name, array in out.items():
        array.flush()
        if written < upper:
            _truncate_npy(work / f"{name}.npy", array, written)
    del out
    for name in ("items", "weights", "times"):
        (work / f"raw-{name}.npy").unlink(missing_ok=True)
    return written


def _truncate_npy(path: Path, array: np.ndarray, length: int, block: int = 1 << 22) -> None:
    """Rewrite a 1-D ``.npy`` file keeping its first ``length`` elements, copying in blocks."""
    shorter = path.with_name(path.name + ".short")
    copy = np.lib.format.open_memmap(shorter, mode="w+", dtype=array.dtype, shape=(length,))
    for start in range(0, length, block):
        copy[start : start + block] = array[start : min(start + block, length)]
    copy.flush()
    del copy
    os.replace(shorter, path)


def _check_store_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"store output {target} exists and is not a folder. Choose another output path.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        what = "a recx store" if (target / STORE_FILE).is_file() else "files that are not a recx store"
        raise FileExistsError(f"store output {target} already contains {what}. Pass overwrite=True (--overwrite) to replace it, or choose another folder.")
    if target.is_dir() and any(target.iterdir()) and not (target / STORE_FILE).is_file():
        raise FileExistsError(f"store output {target} contains files that are not a recx store, so it is not replaced. Choose an empty or new folder.")
    target.parent.mkdir(parents=True, exist_ok=True)


def _replace_folder(work: Path, target: Path) -> None:
    """Move the finished work folder to ``target``; an old store there is removed only after the move."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(work, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, target)


# ---------------------------------------------------------------------- store


class CsrStore:
    """A user x item CSR matrix on disk, opened memory-mapped.

    Attributes
    ----------
    folder : Path
    users, items : IdMap
    indptr : np.ndarray of shape (n_users + 1,), int64
    indices : np.ndarray of shape (nnz,), int64
        Item indices, sorted within each user's row.
    data : np.ndarray of shape (nnz,), float32
    item_counts : np.ndarray of shape (n_items,), int64
    timestamps, time_order, time_rank : np.ndarray of shape (nnz,) or None
        Present when the log had a timestamp column. ``time_order`` lists
        entry positions by user, then time, then item; ``time_rank`` is each
        entry's rank in its user's time order (what
        :class:`recx.models.FeatureBuilder` computes in memory).
    """

    def __init__(self, folder: Path, summary: dict[str, Any], arrays: dict[str, np.ndarray], users: IdMap, items: IdMap) -> None:
        self.folder = folder
        self.summary = summary
        self.users = users
        self.items = items
        self.indptr = arrays["indptr"]
        self.indices = arrays["indices"]
        self.data = arrays["data"]
        self.item_counts = arrays["item_counts"]
        self.timestamps = arrays.get("timestamps")
        self.time_order = arrays.get("time_order")
        self.time_rank = arrays.get("time_rank")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def nnz(self) -> int:
        return int(self.summary["nnz"])

    def __repr__(self) -> str:
        return f"CsrStore({str(self.folder)!r}, n_users={self.n_users}, n_items={self.n_items}, nnz={self.nnz}, timestamps={self.timestamps is not None})"

    @classmethod
    def open(cls, folder: str | os.PathLike[str], *, mmap: bool = True) -> CsrStore:
        """Open a store written by :func:`ingest`; ``mmap=False`` reads the arrays into memory."""
        path = Path(folder)
        if not (path / STORE_FILE).is_file():
            raise FileNotFoundError(f"no recx store at {path}: {STORE_FILE} not found. Write one with recx.data.streaming.ingest or `recx ingest`.")
        summary = read_json(path / STORE_FILE, what="store summary")
        if summary.get("format_version") != STORE_FORMAT_VERSION:
            raise ValueError(f"unsupported store format version {summary.get('format_version')!r} in {path / STORE_FILE}: this recx reads version {STORE_FORMAT_VERSION}. Ingest the log again.")
        names = ["indptr", "indices", "data", "item_counts"]
        if summary.get("has_timestamps"):
            names += ["timestamps", "time_order", "time_rank"]
        arrays = {}
        for name in names:
            file = path / f"{name}.npy"
            if not file.is_file():
                raise FileNotFoundError(f"store {path} is incomplete: {file.name} is missing. Ingest the log again.")
            arrays[name] = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        users = IdMap.load(path / "users.json")
        items = IdMap.load(path / "items.json")
        expected = {
            "indptr": (len(users) + 1,),
            "item_counts": (len(items),),
            **{name: (summary["nnz"],) for name in names if name not in ("indptr", "item_counts")},
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"store {path} is inconsistent: {name}.npy has shape {arrays[name].shape}, {STORE_FILE} implies {shape}. Ingest the log again.")
        return cls(path, summary, arrays, users, items)

    def to_interactions(self) -> Interactions:
        """Load the whole store into an in-memory :class:`Interactions` (for evaluation and splits)."""
        matrix = sp.csr_matrix((np.asarray(self.data), np.asarray(self.indices), np.asarray(self.indptr)), shape=(self.n_users, self.n_items))
        timestamps = None if self.timestamps is None else np.asarray(self.timestamps)
        return Interactions(matrix, self.users, self.items, timestamps)


# -------------------------------------------------------------------- batches


@dataclass
class EntryBatch:
    """One rank's part of a training batch.

    Attributes
    ----------
    users, items, positions : np.ndarray of shape (b,), int64
        User index, item index and position in ``indices`` of each example.
    global_size : int
        Examples in the whole batch over all ranks.
    """

    users: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    global_size: int


class EntryBatches:
    """Shuffled batches of the stored (user, item) entries of a CSR matrix.

    Every entry is one example per epoch. With ``nnz <= shuffle_buffer``,
    an epoch is one exact permutation, as in :class:`recx.training.Trainer`.
    Larger matrices shuffle block-wise: the entries are cut into blocks of
    ``shuffle_buffer / BLOCKS_PER_WINDOW`` consecutive positions, the blocks
    are permuted, and each window of :data:`BLOCKS_PER_WINDOW` blocks is
    permuted again as a whole. Memory then stays at ``shuffle_buffer`` int64
    positions, and each entry is still seen once per epoch.

    With ``world_size > 1``, every rank draws the same global batches (the
    shared ``seed``) and keeps its own contiguous slice of each, so the ranks
    together see every example once. A global batch is cut to a multiple of
    ``world_size``; only the last batch of an epoch can lose up to
    ``world_size - 1`` examples that way.

    Parameters
    ----------
    indptr : np.ndarray of shape (n_users + 1,), int64
    indices : np.ndarray of shape (nnz,), int
        Memory-mapped arrays work: only the rows of each batch are read.
    batch_size : int
        Examples per global batch.
    seed : int, default=0
    shuffle_buffer : int, default=DEFAULT_SHUFFLE_BUFFER
    rank, world_size : int, default=0, 1
    """

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {batch_size!r}.")
        if not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank!r} and world_size {world_size!r}.")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not a multiple of the {world_size} processes: each process takes an equal part of every batch. Use a batch size divisible by {world_size}.")
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < batch_size:
            raise ValueError(f"shuffle_buffer must be an integer >= batch_size ({batch_size}), got {shuffle_buffer!r}.")
        self.indptr = indptr
        self.indices = indices
        self.nnz = int(indptr[-1])
        if self.nnz < 2:
            raise ValueError(f"training needs at least 2 interactions, got {self.nnz}.")
        self.batch_size = min(batch_size - batch_size % world_size, self.nnz - self.nnz % world_size)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size

    @property
    def exact_shuffle(self) -> bool:
        """Whether an epoch is one exact permutation of all entries."""
        return self.nnz <= self.shuffle_buffer

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.nnz, self.batch_size)
        rest -= rest % self.world_size
        return full + (1 if rest >= max(2, self.world_size) else 0)

    def epoch(self, epoch: int) -> Iterator[EntryBatch]:
        """Yield this rank's part of every batch of epoch ``epoch`` (1-based); the order depends on (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        carry = np.empty(0, dtype=np.int64)
        for window in self._windows(rng):
            pool = np.concatenate([carry, window])
            n_full = len(pool) // self.batch_size
            for step in range(n_full):
                yield self._batch(pool[step * self.batch_size : (step + 1) * self.batch_size])
            carry = pool[n_full * self.batch_size :]
        usable = len(carry) - len(carry) % self.world_size
        if usable >= max(2, self.world_size):
            yield self._batch(carry[:usable])

    def _windows(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Yield arrays of entry positions; together they are a permutation of ``0 .. nnz - 1``."""
        if self.exact_shuffle:
            yield rng.permutation(self.nnz)
            return
        block = max(1, self.shuffle_buffer // BLOCKS_PER_WINDOW)
        n_blocks = -(-self.nnz // block)
        block_order = rng.permutation(n_blocks)
        for first in range(0, n_blocks, BLOCKS_PER_WINDOW):
            pieces = [np.arange(b * block, min((b + 1) * block, self.nnz), dtype=np.int64) for b in block_order[first : first + BLOCKS_PER_WINDOW]]
            window = np.concatenate(pieces)
            yield window[rng.permutation(len(window))]

    def _batch(self, global_positions: np.ndarray) -> EntryBatch:
        part = len(global_positions) // self.world_size
        positions = np.ascontiguousarray(global_positions[self.rank * part : (self.rank + 1) * part])
        users = np.searchsorted(self.indptr, positions, side="right").astype(np.int64) - 1
        items = np.asarray(self.indices[positions], dtype=np.int64)
        return EntryBatch(users=users, items=items, positions=positions, global_size=len(global_positions))
