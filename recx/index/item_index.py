"""An item embedding index over FAISS that searches and returns external item ids."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

import recx
from recx._io import atomic_path, read_json, write_json_atomic
from recx.data.idmap import IdMap
from recx.evaluation.metrics import isin_rows

logger = logging.getLogger(__name__)

__all__ = ["INDEX_FORMAT_VERSION", "INDEX_KINDS", "INDEX_METRICS", "ItemIndex"]

#: Version of the on-disk layout written by :meth:`ItemIndex.save`; load rejects any other.
INDEX_FORMAT_VERSION = 1

#: Similarity measures: "inner_product" scores ``q . e``; "cosine" scores ``q . e / (|q| |e|)``.
INDEX_METRICS: tuple[str, ...] = ("inner_product", "cosine")

#: Index structures; "flat" is exact, brute-force search.
INDEX_KINDS: tuple[str, ...] = ("flat",)

MANIFEST_FILE = "index.json"
FAISS_FILE = "index.faiss"
ITEM_IDS_FILE = "items.json"

# Bytes read at a time when hashing, so large indexes are not read into memory at once.
_HASH_CHUNK_BYTES = 1 << 20


class ItemIndex:
    """Exact top-k search over item embeddings, with results in external item ids.

    Item ``i`` of the index is row ``i`` of ``embeddings`` and has external id
    ``item_ids.to_id([i])``, so the index shares item indices with the
    :class:`~recx.data.Interactions` and models it was built from.

    Parameters
    ----------
    embeddings : np.ndarray of shape (n_items, d), float
        One vector per item, converted to float32. Must be finite.
    item_ids : IdMap or array-like of shape (n_items,)
        External id of each row.
    metric : {"inner_product", "cosine"}, default="inner_product"
        Similarity to maximise. With "cosine", item vectors are normalised to
        unit length when the index is built and queries when searched, so
        scores are cosine similarities in [-1, 1].

    Attributes
    ----------
    kind : str
        Index structure, "flat" (exact search with ``faiss.IndexFlatIP``).
        Other structures, such as approximate ones, would add a kind.
    metric : str
    dimension : int
        Embedding size ``d``.
    item_ids : IdMap

    Notes
    -----
    The index is not changed after construction, and a FAISS flat search
    only reads it, so several threads may search one index at once.
    """

    def __init__(self, embeddings: np.ndarray, item_ids: IdMap | Sequence[Any] | np.ndarray, metric: str = "inner_product") -> None:
        _check_metric(metric)
        vectors = _check_embeddings(embeddings)
        ids = item_ids if isinstance(item_ids, IdMap) else IdMap(item_ids, name="item")
        if len(ids) != len(vectors):
            raise ValueError(f"item_ids has {len(ids)} ids but embeddings has {len(vectors)} rows. Pass one id per embedding row, in row order.")
        if metric == "cosine":
            vectors = _normalise(vectors, what="item embedding")

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        self._attach(index, ids, metric, "flat")

    def _attach(self, index: faiss.Index, item_ids: IdMap, metric: str, kind: str) -> None:
        """Set the attributes shared by the constructor and :meth:`load`."""
        self._index = index
        self.item_ids = item_ids
        self.metric = metric
        self.kind = kind
        self.dimension = int(index.d)

    # ------------------------------------------------------------- properties

    @property
    def is_exact(self) -> bool:
        """Whether search returns the true top k (True for the "flat" kind)."""
        return self.kind == "flat"

    @property
    def n_items(self) -> int:
        """Number of indexed items."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return f"ItemIndex(kind={self.kind!r}, metric={self.metric!r}, n_items={self.n_items}, dimension={self.dimension})"

    # ------------------------------------------------------------- search

    def search_indices(self, queries: np.ndarray, k: int, exclude: sp.spmatrix | sp.sparray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` best items for each query, as item indices.

        Parameters
        ----------
        queries : np.ndarray of shape (m, d), float
            Query vectors (user embeddings), one per row. Must be finite.
        k : int
            Number of items per query, >= 1.
        exclude : scipy.sparse matrix of shape (m, n_items) or None
            Stored entries of row ``u`` (explicit zeros included) are items
            query ``u`` must not return, for example ``train.matrix[users]``.

        Returns
        -------
        indices : np.ndarray of shape (m, min(k, n_items)), int64
            Item indices, best first. A row ends with -1 only when fewer
            than ``k`` items remain after exclusion.
        scores : np.ndarray of the same shape, float32
            Similarity of each item; ``-inf`` where the index is -1.

        Notes
        -----
        FAISS cannot skip items during a flat search, so the search fetches
        ``k`` plus the largest number of excluded items of any row in the
        batch and drops the excluded ones afterwards. One user with a long
        history therefore makes the whole batch fetch more.

        Items with equal scores are listed in ascending index order. When
        items tie at the ``k``-th score, which of them are returned is up
        to FAISS.
        """
        vectors = self._check_queries(queries)
        k = _check_k(k)
        n_queries = len(vectors)
        k_returned = min(k, self.n_items)
        blocked = None if exclude is None else self._check_exclude(exclude, n_queries)
        if n_queries == 0:
            return np.empty((0, k_returned), dtype=np.int64), np.empty((0, k_returned), dtype=np.float32)

        # Fetch enough that k items survive exclusion in every row where k remain.
        extra = 0 if blocked is None else int(np.diff(blocked.indptr).max(initial=0))
        n_fetched = min(self.n_items, k_returned + extra)
        scores, labels = self._index.search(vectors, n_fetched)
        allowed = labels >= 0
        if blocked is not None:
            allowed &= ~isin_rows(labels, blocked)

        # Move allowed items first, keeping best-first order with ties by index, then cut to k.
        order = np.lexsort((labels, -scores, ~allowed), axis=1)[:, :k_returned]
        indices = np.take_along_axis(labels, order, axis=1).astype(np.int64)
        top_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        empty = ~np.take_along_axis(allowed, order, axis=1)
        indices[empty] = -1
        top_scores[empty] = -np.inf
        return indices, top_scores

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.spmatrix | sp.sparray | Collection[Any] | Sequence[Collection[Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """Find the ``k`` best items for one query or a batch, as external item ids.

        Parameters
        ----------
        queries : np.ndarray of shape (d,) or (m, d), float
            One query vector, or one per row.
        k : int
            Number of items per query, >= 1.
        exclude : optional
            Items not to return. Either a scipy sparse matrix of item indices
            as in :meth:`search_indices` (one row per query), or external item
            ids: for a 1-D query one collection of ids, for a 2-D batch a
            sequence with one collection per query. Ids the index does not
            contain are ignored, since they can never be returned.

        Returns
        -------
        ids : np.ndarray of shape (<= k,), or list of m such arrays
            External item ids, best first. For a 1-D query, one array; for a
            2-D batch, a list with one array per query. Each array contains
            ``min(k, items left after exclusion)`` ids, so lengths may differ.
        scores : np.ndarray of shape (<= k,), float32, or list of m such arrays
            Matching similarities.
        """
        array = np.asarray(queries)
        if array.ndim not in (1, 2):
            raise ValueError(f"queries must have shape ({self.dimension},) or (m, {self.dimension}), got shape {array.shape}.")
        single = array.ndim == 1
        batch = array[None, :] if single else array
        n_queries = len(batch)
        blocked = exclude if exclude is None or sp.issparse(exclude) else self._exclude_from_ids(exclude, n_queries, single)
        indices, scores = self.search_indices(batch, k, blocked)

        valid = indices >= 0
        ids = [self.item_ids.to_id(row[keep]) for row, keep in zip(indices, valid)]
        kept_scores = [row[keep] for row, keep in zip(scores, valid)]
        if single:
            return ids[0], kept_scores[0]
        return ids, kept_scores

    # ------------------------------------------------------------- saving

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index into ``directory``, creating it if needed.

        Files: ``index.faiss`` (``faiss.write_index``), ``items.json`` (the
        id map) and ``index.json``, a manifest with the format version, kind,
        metric, dimension, number of items and the SHA-256 of
        ``index.faiss``. Each file is written to a temporary name and renamed,
        and the manifest comes last, so an interrupted save leaves a folder
        that :meth:`load` rejects rather than a silently mixed one.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / FAISS_FILE) as temporary:
            faiss.write_index(self._index, str(temporary))
            digest = _sha256(temporary)
        self.item_ids.save(folder / ITEM_IDS_FILE)
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "kind": self.kind,
            "metric": self.metric,
            "dimension": self.dimension,
            "n_items": self.n_items,
            "index_file": FAISS_FILE,
            "index_sha256": digest,
            "recx_version": recx.__version__,
            "faiss_version": faiss.__version__,
        }
        write_json_atomic(folder / MANIFEST_FILE, manifest)
        logger.info("saved %r to %s", self, folder)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ItemIndex:
        """Read an index written by :meth:`save`, verifying every file.

        Raises
        ------
        FileNotFoundError
            If the folder or one of its files is missing.
        ValueError
            If the format version, kind or metric is unknown, the checksum of
            ``index.faiss`` does not match the manifest, or the files
            disagree on dimension or number of items.
        """
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"item index not found: {folder} is not a folder. Pass a folder written by ItemIndex.save.")
        manifest_path = folder / MANIFEST_FILE
        manifest = read_json(manifest_path, what="item index manifest")
        if not isinstance(manifest, dict):
            raise ValueError(f"invalid item index manifest {manifest_path}: expected a JSON object, got {type(manifest).__name__}.")

        # Step 1: the manifest must describe a layout this version can read.
        version = manifest.get("format_version")
        if version != INDEX_FORMAT_VERSION:
            raise ValueError(f"unsupported item index format version {version!r} in {manifest_path}: this recx reads version {INDEX_FORMAT_VERSION}. Build the index again and save it with this recx.")
        missing = [key for key in ("kind", "metric", "dimension", "n_items", "index_sha256") if key not in manifest]
        if missing:
            raise ValueError(f"invalid item index manifest {manifest_path}: missing keys {missing}. Save the index again.")
        kind, metric = manifest["kind"], manifest["metric"]
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown item index kind {kind!r} in {manifest_path}: expected one of {list(INDEX_KINDS)}.")
        _check_metric(metric)

        # Step 2: the FAISS file must be the one the manifest was written for.
        index_path = folder / FAISS_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"item index file not found: {index_path} does not exist. The folder is incomplete; save the index again.")
        digest = _sha256(index_path)
        if digest != manifest["index_sha256"]:
            raise ValueError(
                f"checksum mismatch for {index_path}: the manifest expects sha256 {manifest['index_sha256']}, the file has {digest}. "
                f"The file is corrupt or was changed after saving; save the index again."
            )
        index = faiss.read_index(str(index_path))
        if not isinstance(index, faiss.IndexFlatIP):
            raise ValueError(f"item index file {index_path} contains a {type(index).__name__}, expected IndexFlatIP for kind {kind!r}.")
        if index.d != manifest["dimension"] or index.ntotal != manifest["n_items"]:
            raise ValueError(
                f"item index file {index_path} contains {index.ntotal} vectors of dimension {index.d}, "
                f"but the manifest says {manifest['n_items']} of dimension {manifest['dimension']}. Save the index again."
            )

        # Step 3: one external id per indexed vector.
        item_ids = IdMap.load(folder / ITEM_IDS_FILE)
        if len(item_ids) != index.ntotal:
            raise ValueError(f"{folder / ITEM_IDS_FILE} contains {len(item_ids)} item ids but the index contains {index.ntotal} items. Save the index again.")
        loaded = cls.__new__(cls)
        loaded._attach(index, item_ids, metric, kind)
        return loaded

    # ------------------------------------------------------------- argument checks

    def _check_queries(self, queries: Any) -> np.ndarray:
        """Return ``queries`` as a C-contiguous float32 array of shape (m, d), normalised for cosine."""
        array = np.asarray(queries)
        if array.ndim != 2:
            raise ValueError(f"queries must be a 2-D array of shape (m, {self.dimension}), got shape {array.shape}. For one query, pass query[None, :] or use search().")
        if array.dtype.kind not in "fiu":
            raise TypeError(f"queries must be numeric, got dtype {array.dtype}.")
        if array.shape[1] != self.dimension:
            raise ValueError(f"queries have dimension {array.shape[1]} but the index contains items of dimension {self.dimension}. Encode queries with the model that produced the item embeddings.")
        with np.errstate(over="ignore"):
            vectors = np.ascontiguousarray(array, dtype=np.float32)
        not_finite = ~np.isfinite(vectors).all(axis=1)
        if not_finite.any():
            raise ValueError(f"queries contain NaN or infinite values in {int(not_finite.sum())} rows, first row {int(np.flatnonzero(not_finite)[0])}. Check the model that produced them.")
        if self.metric == "cosine":
            vectors = _normalise(vectors, what="query")
        return vectors

    def _check_exclude(self, exclude: Any, n_queries: int) -> sp.csr_matrix:
        if not sp.issparse(exclude):
            raise TypeError(f"exclude must be a scipy sparse matrix of shape ({n_queries}, {self.n_items}) or None, got {type(exclude).__name__}. For external ids use search().")
        if exclude.shape != (n_queries, self.n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected ({n_queries}, {self.n_items}): one row per query, one column per indexed item.")
        return sp.csr_matrix(exclude)

    def _exclude_from_ids(self, exclude: Any, n_queries: int, single: bool) -> sp.csr_matrix:
        """Build the exclusion matrix from collections of external ids, one per query."""
        groups = [exclude] if single else exclude
        if not single and (isinstance(exclude, (str, bytes)) or len(exclude) != n_queries):
            raise ValueError(f"exclude must contain one collection of item ids per query ({n_queries}), got {len(exclude)} entries.")
        rows, columns = [], []
        for row, group in enumerate(groups):
            if isinstance(group, (str, bytes)):
                raise TypeError(f"exclude entry {row} is the string {group!r}, not a collection of item ids. Wrap a single id in a list: [{group!r}].")
            found = self.item_ids.to_index(list(group), missing="drop")
            rows.append(np.full(len(found), row, dtype=np.int64))
            columns.append(found)
        row_index = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        column_index = np.concatenate(columns) if columns else np.empty(0, dtype=np.int64)
        values = np.ones(len(row_index), dtype=np.int8)
        return sp.csr_matrix((values, (row_index, column_index)), shape=(n_queries, self.n_items))


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def _check_metric(metric: Any) -> None:
    if metric not in INDEX_METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {list(INDEX_METRICS)}.")


def _check_embeddings(embeddings: Any) -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 array of shape (n_items, d)."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array of shape (n_items, d), got shape {array.shape}.")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"embeddings must be numeric, got dtype {array.dtype}.")
    if array.shape[0] == 0:
        raise ValueError("cannot build an index over an empty catalogue: embeddings has 0 rows. Pass one row per item.")
    if array.shape[1] == 0:
        raise ValueError(f"embeddings have dimension 0 (shape {array.shape}). Pass vectors with at least one component.")
    # Checked after the cast, because float64 values beyond the float32 range become inf.
    with np.errstate(over="ignore"):
        vectors = np.ascontiguousarray(array, dtype=np.float32)
    not_finite = ~np.isfinite(vectors).all(axis=1)
    if not_finite.any():
        raise ValueError(
            f"embeddings contain NaN or infinite float32 values in {int(not_finite.sum())} rows, first row {int(np.flatnonzero(not_finite)[0])}. "
            f"Check the model that produced them, for example for a diverged training run."
        )
    return vectors


def _normalise(vectors: np.ndarray, *, what: str) -> np.ndarray:
    """Return unit-length copies of the rows of ``vectors``; a zero row has no direction and is rejected."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise ValueError(f"{what} row {int(np.flatnonzero(zero)[0])} has length 0, so its cosine similarity is undefined. Use metric='inner_product' or drop zero vectors.")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
