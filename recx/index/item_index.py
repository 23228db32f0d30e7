"""An item embedding index over FAISS that searches and returns external item ids."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from recx.data.idmap import IdMap
from recx.index.backends import SearchBackend
from recx.index.checks import check_embeddings, check_k, check_metric, check_queries, normalise
from recx.index.gpu import build_on_device, place_loaded
from recx.index.kinds import IndexSettings, SearchKnobs, default_knobs, resolve_knobs, resolve_settings
from recx.index.search import search_with_exclusion
from recx.index.storage import read_index_folder, write_index_folder

logger = logging.getLogger(__name__)

__all__ = ["ItemIndex"]


class ItemIndex:
    """Top-k search over item embeddings, exact or approximate, with results in external item ids.

    Item ``i`` of the index is row ``i`` of ``embeddings`` and has external id
    ``item_ids.to_id([i])``, so the index shares item indices with the
    :class:`~recx.data.Interactions` and models it was built from.

    Parameters
    ----------
    embeddings : np.ndarray of shape (n_items, d), float
        One vector per item, converted to float32. Must be finite.
    item_ids : IdMap or array-like of shape (n_items,)
        External id of each row.
    metric : {"inner_product", "cosine", "l2"}, default="inner_product"
        Similarity to maximise. With "cosine", item vectors are normalised to
        unit length when the index is built and queries when searched, so
        scores are cosine similarities in [-1, 1]. With "l2", the score is
        ``-|q - e|^2``, the negated squared Euclidean distance, so that
        higher is better for every metric.
    kind : {"flat", "hnsw", "ivf_flat", "ivf_pq", "factory", "auto"}, default="flat"
        Index structure. "flat" is exact; the others are approximate.
        "auto" picks "flat" below
        :data:`~recx.index.kinds.AUTO_EXACT_MAX_ITEMS` (100,000) items and
        "ivf_flat" with default parameters from there on.
    hnsw_m, ef_construction, ef_search : int, optional
        HNSW links per node (default 32), build beam width (default 128)
        and default search beam width (default 128). Kind "hnsw"; a factory
        string that builds HNSW accepts ``ef_search``.
    nlist, nprobe : int, optional
        IVF lists and default lists probed per query. Kinds "ivf_flat" and
        "ivf_pq"; a factory string that builds IVF accepts ``nprobe``. The
        default ``nlist`` is the power of two nearest ``4 * sqrt(n_items)``
        and the default ``nprobe`` is ``max(8, nlist // 32)``, at most nlist.
    pq_m, pq_bits : int, optional
        Kind "ivf_pq": PQ sub-quantizers (must divide d; default: the
        largest divisor of d up to d / 2) and bits per code (default 8).
    factory : str, optional
        Kind "factory": a ``faiss.index_factory`` description such as
        ``"OPQ16,IVF256,PQ16"`` or ``"HNSW32,Flat"``. ``IDMap`` is rejected.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where to build and search; see :func:`recx.index.gpu.choose_backend`.
        "auto" uses faiss-gpu when ``faiss.get_num_gpus()`` is above 0, else
        exact torch search on CUDA for kind "flat", else the CPU.

    Attributes
    ----------
    kind : str
        The built structure; never "auto".
    metric : str
    dimension : int
        Embedding size ``d``.
    item_ids : IdMap
    parameters : dict of str to int or str
        The resolved build and default search parameters of the kind.
    backend : str
        "faiss-cpu", "faiss-gpu" or "torch-cuda".

    Raises
    ------
    ValueError
        If the inputs are invalid, an option does not apply to the kind, or
        the catalogue is too small for the IVF lists or PQ codes asked for.
        IVF and PQ training needs at least 39 items per centroid, because
        FAISS k-means warns below that. An explicit ``nlist`` above
        ``n_items // 39``, or ``pq_bits`` with ``39 * 2**pq_bits > n_items``,
        therefore raises rather than training poor centroids. The default
        ``nlist`` is lowered to fit.

    Notes
    -----
    The index is not changed after construction. Per-call search widths
    (``nprobe``, ``ef_search``) travel in ``faiss.SearchParameters`` rather
    than being set on the shared index, so several threads may search one
    index at once, each with its own widths.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        item_ids: IdMap | Sequence[Any] | np.ndarray,
        metric: str = "inner_product",
        kind: str = "flat",
        *,
        hnsw_m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        pq_bits: int | None = None,
        factory: str | None = None,
        device: str = "auto",
    ) -> None:
        check_metric(metric)
        vectors = check_embeddings(embeddings)
        ids = item_ids if isinstance(item_ids, IdMap) else IdMap(item_ids, name="item")
        if len(ids) != len(vectors):
            raise ValueError(f"item_ids has {len(ids)} ids but embeddings has {len(vectors)} rows. Pass one id per embedding row, in row order.")
        options = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search, "nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "pq_bits": pq_bits, "factory": factory}
        settings = resolve_settings(kind, metric, len(vectors), vectors.shape[1], options)
        if metric == "cosine":
            vectors = normalise(vectors, what="item embedding")

        index, backend = build_on_device(settings, vectors, device)
        self._attach(index, ids, settings, backend)
        logger.debug("built %r", self)

    def _attach(self, index: faiss.Index, item_ids: IdMap, settings: IndexSettings, backend: SearchBackend) -> None:
        """Set the attributes shared by the constructor and :meth:`load`."""
        self._index = index
        self._settings = settings
        self._backend = backend
        self._default_knobs = default_knobs(settings, index)
        self.item_ids = item_ids
        self.metric = settings.metric
        self.kind = settings.kind
        self.dimension = int(index.d)

    # ------------------------------------------------------------- properties

    @property
    def is_exact(self) -> bool:
        """Whether search returns the true top k: True for kind "flat" only."""
        return self.kind == "flat"

    @property
    def n_items(self) -> int:
        """Number of indexed items."""
        return int(self._index.ntotal)

    @property
    def parameters(self) -> dict[str, Any]:
        """Build and default search parameters of the kind (empty for "flat")."""
        return self._settings.parameters()

    @property
    def backend(self) -> str:
        """Where searches run: "faiss-cpu", "faiss-gpu" or "torch-cuda"."""
        return self._backend.name

    @property
    def faiss_index(self) -> faiss.Index:
        """The CPU FAISS index; labels are item indices. Do not modify it: searches share it."""
        return self._index

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        details = "".join(f", {name}={value!r}" for name, value in self.parameters.items())
        return f"ItemIndex(kind={self.kind!r}, metric={self.metric!r}, n_items={self.n_items}, dimension={self.dimension}{details})"

    # ------------------------------------------------------------- search

    def search_indices(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.spmatrix | sp.sparray | None = None,
        *,
        metric: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` best items for each query, as item indices.

        Parameters
        ----------
        queries : np.ndarray of shape (m, d), float
            Query vectors (user embeddings), one per row. Must be finite.
        k : int
            Number of items per query, from 1 to ``n_items``.
        exclude : scipy.sparse matrix of shape (m, n_items) or None
            Stored entries of row ``u`` (explicit zeros included) are items
            query ``u`` must not return, for example ``train.matrix[users]``.
        metric : str or None
            The metric the queries were encoded for. None skips the check.
            A metric other than the index's raises, so a service can state
            what its encoder produces and fail early on a mismatched index.
        nprobe : int or None
            IVF lists to probe in this call (IVF kinds only); None uses the
            index default. The index itself is not changed.
        ef_search : int or None
            HNSW beam width for this call (HNSW kinds only); None uses the
            index default. FAISS widens the beam to at least ``k``.

        Returns
        -------
        indices : np.ndarray of shape (m, k), int64
            Item indices, best first. A row ends with -1 only when fewer
            than ``k`` items remain after exclusion.
        scores : np.ndarray of the same shape, float32
            Score of each item, higher is better; ``-inf`` where the index
            is -1. Approximate kinds with PQ return approximate scores.

        Raises
        ------
        ValueError
            If ``k`` is not in 1..n_items, the queries have the wrong
            dimension or contain NaN or infinity, ``metric`` differs from
            the index metric, or a width does not apply to the kind.

        Notes
        -----
        Every kind returns ``min(k, items left after exclusion)`` valid
        items per row; see :mod:`recx.index.search` for how approximate
        kinds over-fetch and widen to keep that promise. The exception is a
        factory structure whose search misses items and that cannot
        reconstruct its vectors: its rows may end with -1 early, with a
        logged warning. Approximate kinds do not promise the true top k.

        Items with equal scores are listed in ascending index order. When
        items tie at the ``k``-th score, which of them are returned is up
        to FAISS.
        """
        self._check_declared_metric(metric)
        vectors = check_queries(queries, self.dimension, self.metric)
        k = check_k(k, self.n_items)
        knobs = resolve_knobs(self._default_knobs, self._index, self.kind, nprobe, ef_search)
        blocked = None if exclude is None else self._check_exclude(exclude, len(vectors))
        if len(vectors) == 0:
            return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
        return search_with_exclusion(self._backend, self._index, vectors, k, blocked, knobs, self.metric)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.spmatrix | sp.sparray | Collection[Any] | Sequence[Collection[Any]] | None = None,
        *,
        metric: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """Find the ``k`` best items for one query or a batch, as external item ids.

        Parameters
        ----------
        queries : np.ndarray of shape (d,) or (m, d), float
            One query vector, or one per row.
        k : int
            Number of items per query, from 1 to ``n_items``.
        exclude : optional
            Items not to return. Either a scipy sparse matrix of item indices
            as in :meth:`search_indices` (one row per query), or external item
            ids: for a 1-D query one collection of ids, for a 2-D batch a
            sequence with one collection per query. Ids the index does not
            contain are ignored, since they can never be returned.
        metric, nprobe, ef_search
            As in :meth:`search_indices`.

        Returns
        -------
        ids : np.ndarray of shape (<= k,), or list of m such arrays
            External item ids, best first. For a 1-D query, one array; for a
            2-D batch, a list with one array per query. Each array contains
            ``min(k, items left after exclusion)`` ids, so lengths may differ.
        scores : np.ndarray of shape (<= k,), float32, or list of m such arrays
            Matching scores.
        """
        array = np.asarray(queries)
        if array.ndim not in (1, 2):
            raise ValueError(f"queries must have shape ({self.dimension},) or (m, {self.dimension}), got shape {array.shape}.")
        single = array.ndim == 1
        batch = array[None, :] if single else array
        n_queries = len(batch)
        blocked = exclude if exclude is None or sp.issparse(exclude) else self._exclude_from_ids(exclude, n_queries, single)
        indices, scores = self.search_indices(batch, k, blocked, metric=metric, nprobe=nprobe, ef_search=ef_search)

        valid = indices >= 0
        ids = [self.item_ids.to_id(row[keep]) for row, keep in zip(indices, valid)]
        kept_scores = [row[keep] for row, keep in zip(scores, valid)]
        if single:
            return ids[0], kept_scores[0]
        return ids, kept_scores

    # ------------------------------------------------------------- saving

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index into ``directory``, creating it if needed.

        Files: ``index.faiss`` (``faiss.write_index`` of the CPU index, also
        for indexes that search on a GPU), ``items.json`` (the id map) and
        ``index.json``, a manifest with the format version, kind, metric,
        parameters, dimension, number of items and the SHA-256 of
        ``index.faiss``. Each file is written to a temporary name and
        renamed, and the manifest comes last, so an interrupted save leaves
        a folder that :meth:`load` rejects rather than a silently mixed one.
        """
        folder = Path(directory)
        write_index_folder(folder, self._index, self.item_ids, self._settings)
        logger.info("saved %r to %s", self, folder)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto") -> ItemIndex:
        """Read an index written by :meth:`save`, verifying every file.

        Parameters
        ----------
        directory : path
        device : {"auto", "cpu", "cuda"}, default="auto"
            Where to search, as in the constructor.

        Raises
        ------
        FileNotFoundError
            If the folder or one of its files is missing.
        ValueError
            If the format version, kind or metric is unknown, the checksum of
            ``index.faiss`` does not match the manifest, or the files
            disagree on structure, dimension or number of items.
        """
        index, item_ids, settings = read_index_folder(directory)
        loaded = cls.__new__(cls)
        loaded._attach(index, item_ids, settings, place_loaded(index, settings, device))
        return loaded

    # ------------------------------------------------------------- argument checks

    def _check_declared_metric(self, metric: Any) -> None:
        if metric is None:
            return
        check_metric(metric)
        if metric != self.metric:
            raise ValueError(
                f"queries are declared for metric {metric!r}, but the index was built with metric {self.metric!r}. "
                f"Encode queries for {self.metric!r}, or build the index with metric={metric!r}."
            )

    def _check_exclude(self, exclude: Any, n_queries: int) -> sp.csr_matrix:
        if not sp.issparse(exclude):
            raise TypeError(f"exclude must be a scipy sparse matrix of shape ({n_queries}, {self.n_items}) or None, got {type(exclude).__name__}. For external ids use search().")
        if exclude.shape != (n_queries, self.n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected ({n_queries}, {self.n_items}): one row per query, one column per indexed item.")
        csr = sp.csr_matrix(exclude)
        # The exclusion counts per row must not count an item twice, and sum_duplicates works in place.
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        return csr

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
