"""Index kinds: their parameters, the choice of ``kind="auto"`` and the FAISS structures they build.

A kind names a FAISS structure plus the parameters that shape it (search-time
parameters in brackets):

- ``flat``: ``IndexFlatIP`` or ``IndexFlatL2``, exact search, no parameters.
- ``hnsw``: ``IndexHNSWFlat``; ``hnsw_m``, ``ef_construction`` (``ef_search``).
- ``ivf_flat``: ``IndexIVFFlat``; ``nlist`` (``nprobe``).
- ``ivf_pq``: ``IndexIVFPQ``; ``nlist``, ``pq_m``, ``pq_bits`` (``nprobe``).
- ``factory``: ``faiss.index_factory(d, factory, metric)``; ``factory``
  (``nprobe`` when the string builds an IVF index, ``ef_search`` for HNSW).

Row ``i`` of the embeddings is FAISS label ``i`` in every kind, so no
``IndexIDMap`` is needed: :class:`~recx.data.IdMap` turns labels into
external ids, and a factory string that contains ``IDMap`` is rejected.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from recx.index.checks import check_metric

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_EXACT_MAX_ITEMS",
    "INDEX_KINDS",
    "KIND_OPTIONS",
    "MIN_POINTS_PER_CENTROID",
    "IndexSettings",
    "SearchKnobs",
    "build_faiss_index",
    "default_nlist",
    "default_nprobe",
    "resolve_settings",
]

#: Kinds an index can have; ``kind="auto"`` resolves to one of them when the index is built.
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf_flat", "ivf_pq", "factory")

#: Keyword options each kind accepts; any other option is rejected rather than ignored.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
    "ivf_flat": ("nlist", "nprobe"),
    "ivf_pq": ("nlist", "nprobe", "pq_m", "pq_bits"),
    "factory": ("factory", "nprobe", "ef_search"),
    "auto": (),
}

#: Catalogue size from which ``kind="auto"`` builds ``ivf_flat`` instead of exact
#: search. Below it an exact scan needs no training and is fast enough to serve:
#: FAISS ``IndexFlatIP`` searches 100k items of dimension 64 at several thousand
#: queries per second on two CPU cores (see docs/index.md).
AUTO_EXACT_MAX_ITEMS = 100_000

#: FAISS k-means warns when it gets fewer training points than this per centroid,
#: because the centroids are then poorly estimated.
MIN_POINTS_PER_CENTROID = 39

# Defaults of the HNSW graph: 32 links per node, a build beam of 128 (FAISS's
# default of 40 builds a poorer graph) and a search beam of 128. In
# benchmarks/index.py efSearch=128 stays below recall@100 0.95 from 100k items
# on (see docs/index.md), so large catalogues need a wider beam per search.
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 128
DEFAULT_EF_SEARCH = 128

# One PQ code per 2 dimensions at 8 bits is 1 byte per 2 float32 values, 8x smaller than flat.
DEFAULT_PQ_BITS = 8

_FAISS_METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass(frozen=True)
class IndexSettings:
    """The resolved kind, metric and parameters of an index.

    Attributes
    ----------
    kind : str
        One of :data:`INDEX_KINDS` ("auto" is resolved before this exists).
    metric : str
        One of ``"inner_product"``, ``"cosine"``, ``"l2"``.
    hnsw_m, ef_construction, ef_search : int or None
        HNSW links per node, build-time and default search-time beam width.
    nlist, nprobe : int or None
        IVF number of lists and default number of lists probed per query.
    pq_m, pq_bits : int or None
        Number of PQ sub-quantizers and bits per sub-quantizer code.
    factory : str or None
        The ``faiss.index_factory`` description for kind "factory".
    """

    kind: str
    metric: str
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    pq_bits: int | None = None
    factory: str | None = None

    def parameters(self) -> dict[str, Any]:
        """Return the parameters that are set, for the manifest and ``repr``."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name not in ("kind", "metric") and getattr(self, field.name) is not None}


@dataclass(frozen=True)
class SearchKnobs:
    """Search-time widths of one call: IVF lists probed and HNSW beam width (None where not applicable)."""

    nprobe: int | None = None
    ef_search: int | None = None


def faiss_metric(metric: str) -> int:
    """Return the FAISS metric constant for a recx metric name."""
    return _FAISS_METRICS[metric]


def default_nlist(n_items: int) -> int:
    """Return the default number of IVF lists for ``n_items`` vectors.

    The power of two nearest to ``4 * sqrt(n_items)`` (the usual FAISS rule
    of thumb, which balances the cost of scanning centroids against the
    cost of scanning lists), lowered until every centroid gets at least
    :data:`MIN_POINTS_PER_CENTROID` training points.
    """
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_items)))
    while nlist > 1 and nlist * MIN_POINTS_PER_CENTROID > n_items:
        nlist //= 2
    return max(1, nlist)


def default_nprobe(nlist: int) -> int:
    """Return the default number of lists probed: 1/32 of the lists, at least 8 (or all lists if fewer)."""
    return min(nlist, max(8, nlist // 32))


def resolve_settings(kind: str, metric: str, n_items: int, dimension: int, options: dict[str, Any]) -> IndexSettings:
    """Check ``kind`` and its options against the catalogue and fill in the defaults.

    Parameters
    ----------
    kind : str
        One of :data:`INDEX_KINDS` or ``"auto"``.
    metric : str
    n_items, dimension : int
        Size of the catalogue the index will hold.
    options : dict of str to int or str or None
        Keyword options given by the caller; None means "use the default".

    Raises
    ------
    ValueError
        If the kind or metric is unknown, an option does not apply to the
        kind, a value is out of range, or the catalogue is too small to
        train the requested IVF lists or PQ codes.
    """
    check_metric(metric)
    if kind not in (*INDEX_KINDS, "auto"):
        raise ValueError(f"unknown index kind {kind!r}: expected one of {[*INDEX_KINDS, 'auto']}. For a FAISS index_factory string pass kind='factory', factory={kind!r}.")
    explicit = {name: value for name, value in options.items() if value is not None}
    foreign = sorted(set(explicit) - set(KIND_OPTIONS[kind]))
    if foreign:
        allowed = list(KIND_OPTIONS[kind]) or "no options"
        hint = " kind='auto' chooses every parameter itself; pass an explicit kind to set them." if kind == "auto" else ""
        raise ValueError(f"options {foreign} do not apply to kind {kind!r}, which accepts {allowed}.{hint}")
    for name, value in explicit.items():
        if name != "factory" and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")

    if kind == "auto":
        kind = "flat" if n_items < AUTO_EXACT_MAX_ITEMS else "ivf_flat"
        logger.info("kind='auto' chose %r for %d items (exact below %d items)", kind, n_items, AUTO_EXACT_MAX_ITEMS)
    explicit = {name: value if name == "factory" else int(value) for name, value in explicit.items()}

    if kind == "flat":
        return IndexSettings(kind, metric)
    if kind == "hnsw":
        return IndexSettings(
            kind,
            metric,
            hnsw_m=explicit.get("hnsw_m", DEFAULT_HNSW_M),
            ef_construction=explicit.get("ef_construction", DEFAULT_EF_CONSTRUCTION),
            ef_search=explicit.get("ef_search", DEFAULT_EF_SEARCH),
        )
    if kind in ("ivf_flat", "ivf_pq"):
        nlist = explicit.get("nlist", default_nlist(n_items))
        check_enough_for_lists(nlist, n_items)
        nprobe = explicit.get("nprobe", default_nprobe(nlist))
        if nprobe > nlist:
            raise ValueError(f"nprobe={nprobe} exceeds nlist={nlist}: an IVF index cannot probe more lists than it has. Pass nprobe <= {nlist}.")
        if kind == "ivf_flat":
            return IndexSettings(kind, metric, nlist=nlist, nprobe=nprobe)
        pq_m = explicit.get("pq_m", _default_pq_m(dimension))
        if dimension % pq_m:
            raise ValueError(f"pq_m={pq_m} does not divide the dimension {dimension}: each PQ sub-quantizer encodes dimension / pq_m components. Pass a divisor of {dimension}.")
        pq_bits = explicit.get("pq_bits", DEFAULT_PQ_BITS)
        _check_enough_for_codes(pq_bits, n_items)
        return IndexSettings(kind, metric, nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits)

    # kind == "factory"
    description = explicit.get("factory")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"kind='factory' needs factory=<faiss.index_factory string>, for example factory='OPQ16,IVF256,PQ16', got {description!r}.")
    if "IDMap" in description:
        raise ValueError(f"factory string {description!r} contains an IDMap, but ItemIndex maps FAISS labels to item ids itself. Remove the 'IDMap' component.")
    return IndexSettings(kind, metric, nprobe=explicit.get("nprobe"), ef_search=explicit.get("ef_search"), factory=description)


def check_enough_for_lists(nlist: int, n_items: int) -> None:
    """Raise unless ``n_items`` training points give every IVF list :data:`MIN_POINTS_PER_CENTROID` points."""
    if n_items < MIN_POINTS_PER_CENTROID:
        raise ValueError(f"IVF training needs at least {MIN_POINTS_PER_CENTROID} items (k-means points per list), got {n_items}. Use kind='flat' or 'hnsw'.")
    if nlist * MIN_POINTS_PER_CENTROID > n_items:
        largest = n_items // MIN_POINTS_PER_CENTROID
        raise ValueError(
            f"nlist={nlist} is too many IVF lists for {n_items} items: k-means needs at least {MIN_POINTS_PER_CENTROID} items per list "
            f"({nlist * MIN_POINTS_PER_CENTROID} items). Pass nlist <= {largest}, leave nlist unset for the default, or use kind='flat' or 'hnsw'."
        )


def _check_enough_for_codes(pq_bits: int, n_items: int) -> None:
    """Raise unless ``n_items`` points can train ``2**pq_bits`` centroids per PQ sub-quantizer."""
    needed = MIN_POINTS_PER_CENTROID * 2**pq_bits
    if needed > n_items:
        largest = int(math.floor(math.log2(max(1, n_items // MIN_POINTS_PER_CENTROID))))
        fix = f"Pass pq_bits <= {largest}, or use" if largest >= 1 else "Use"
        raise ValueError(
            f"pq_bits={pq_bits} trains {2**pq_bits} centroids per PQ sub-quantizer and needs at least {needed} items "
            f"({MIN_POINTS_PER_CENTROID} per centroid), got {n_items}. {fix} kind='ivf_flat', 'hnsw' or 'flat'."
        )


def _default_pq_m(dimension: int) -> int:
    """Return the largest divisor of ``dimension`` that is at most ``dimension // 2`` (2 components per code), or 1."""
    for pq_m in range(max(1, dimension // 2), 0, -1):
        if dimension % pq_m == 0:
            return pq_m
    return 1


# ----------------------------------------------------------------- building


def create_faiss_index(settings: IndexSettings, dimension: int) -> faiss.Index:
    """Create the empty, untrained FAISS index that ``settings`` describes."""
    metric = faiss_metric(settings.metric)
    if settings.kind == "flat":
        return faiss.IndexFlatIP(dimension) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dimension)
    if settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, metric)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
        return index
    if settings.kind in ("ivf_flat", "ivf_pq"):
        quantizer = faiss.IndexFlatIP(dimension) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dimension)
        if settings.kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dimension, settings.nlist, metric)
        else:
            index = faiss.IndexIVFPQ(quantizer, dimension, settings.nlist, settings.pq_m, settings.pq_bits, metric)
        index.nprobe = settings.nprobe
        return index
    assert settings.factory is not None
    try:
        return faiss.index_factory(dimension, settings.factory, metric)
    except RuntimeError as error:
        raise ValueError(f"faiss.index_factory rejected {settings.factory!r} for dimension {dimension}: {_first_line(error)}") from error


def build_faiss_index(settings: IndexSettings, vectors: np.ndarray, *, trainer: Any = None) -> faiss.Index:
    """Build the CPU FAISS index of ``settings`` over ``vectors``: create, train if needed, add.

    Parameters
    ----------
    settings : IndexSettings
    vectors : np.ndarray of shape (n_items, d), float32, C-contiguous
        Row ``i`` gets FAISS label ``i``.
    trainer : callable or None
        ``trainer(index, vectors)`` trains and fills ``index`` and returns
        the filled CPU index, for example on a GPU; None does both on the CPU.
    """
    index = create_faiss_index(settings, vectors.shape[1])
    inner = _unwrap(index)
    if settings.kind == "factory":
        if isinstance(inner, faiss.IndexIVF):
            check_enough_for_lists(int(inner.nlist), len(vectors))
        _check_factory_knobs(settings, inner)
    if trainer is not None:
        return trainer(index, vectors)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def _check_factory_knobs(settings: IndexSettings, inner: faiss.Index) -> None:
    if settings.nprobe is not None and not isinstance(inner, faiss.IndexIVF):
        raise ValueError(f"nprobe applies to IVF indexes, but factory string {settings.factory!r} builds a {type(inner).__name__}. Remove nprobe.")
    if settings.ef_search is not None and not isinstance(inner, faiss.IndexHNSW):
        raise ValueError(f"ef_search applies to HNSW indexes, but factory string {settings.factory!r} builds a {type(inner).__name__}. Remove ef_search.")
    if isinstance(inner, faiss.IndexIVF) and settings.nprobe is not None and settings.nprobe > inner.nlist:
        raise ValueError(f"nprobe={settings.nprobe} exceeds the {inner.nlist} lists of factory string {settings.factory!r}. Pass nprobe <= {inner.nlist}.")


def _unwrap(index: faiss.Index) -> faiss.Index:
    """Return the index inside an ``IndexPreTransform`` (OPQ, PCA, ...), downcast to its class."""
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


# ----------------------------------------------------------------- search knobs


def searchable_structure(index: faiss.Index) -> tuple[faiss.Index, bool]:
    """Return the index that takes IVF or HNSW parameters, and whether it sits inside an ``IndexPreTransform``."""
    inner = _unwrap(index)
    return inner, inner is not index


def default_knobs(settings: IndexSettings, index: faiss.Index) -> SearchKnobs:
    """Return the search widths used when a call passes none."""
    inner, _ = searchable_structure(index)
    nprobe = settings.nprobe
    ef_search = settings.ef_search
    if isinstance(inner, faiss.IndexIVF) and nprobe is None:
        nprobe = int(inner.nprobe)
    if isinstance(inner, faiss.IndexHNSW) and ef_search is None:
        ef_search = int(inner.hnsw.efSearch)
    return SearchKnobs(nprobe=nprobe if isinstance(inner, faiss.IndexIVF) else None, ef_search=ef_search if isinstance(inner, faiss.IndexHNSW) else None)


def resolve_knobs(defaults: SearchKnobs, index: faiss.Index, kind: str, nprobe: Any, ef_search: Any) -> SearchKnobs:
    """Combine per-call ``nprobe`` and ``ef_search`` with the index defaults, checking that they apply."""
    inner, _ = searchable_structure(index)
    if nprobe is not None:
        if defaults.nprobe is None:
            raise ValueError(f"nprobe applies to IVF indexes (kinds 'ivf_flat', 'ivf_pq' or an IVF factory string), not to this {kind!r} index. Remove nprobe.")
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or not 1 <= nprobe <= inner.nlist:
            raise ValueError(f"nprobe must be an integer from 1 to nlist={inner.nlist}, got {nprobe!r}.")
    if ef_search is not None:
        if defaults.ef_search is None:
            raise ValueError(f"ef_search applies to HNSW indexes (kind 'hnsw' or an HNSW factory string), not to this {kind!r} index. Remove ef_search.")
        if isinstance(ef_search, bool) or not isinstance(ef_search, (int, np.integer)) or ef_search < 1:
            raise ValueError(f"ef_search must be a positive integer, got {ef_search!r}.")
    return SearchKnobs(
        nprobe=defaults.nprobe if nprobe is None else int(nprobe),
        ef_search=defaults.ef_search if ef_search is None else int(ef_search),
    )


def faiss_search_parameters(index: faiss.Index, knobs: SearchKnobs) -> tuple[faiss.SearchParameters | None, list[Any]]:
    """Build the per-call FAISS parameters for ``knobs``.

    Passing widths per call, instead of setting ``index.nprobe`` or
    ``index.hnsw.efSearch``, leaves the shared index unchanged, so
    concurrent searches with different widths do not interfere.

    Returns
    -------
    parameters : faiss.SearchParameters or None
    keep_alive : list
        Python objects the parameters point to; SWIG does not keep nested
        parameter objects alive, so the caller keeps this list until the
        search returns.
    """
    inner, wrapped = searchable_structure(index)
    if knobs.nprobe is not None and isinstance(inner, faiss.IndexIVF):
        parameters: faiss.SearchParameters = faiss.SearchParametersIVF(nprobe=knobs.nprobe)
    elif knobs.ef_search is not None and isinstance(inner, faiss.IndexHNSW):
        parameters = faiss.SearchParametersHNSW(efSearch=knobs.ef_search)
    else:
        return None, []
    if not wrapped:
        return parameters, [parameters]
    outer = faiss.SearchParametersPreTransform()
    outer.index_params = parameters
    return outer, [outer, parameters]


def widen_knobs(knobs: SearchKnobs, index: faiss.Index, n_items: int) -> SearchKnobs:
    """Return ``knobs`` with each width doubled, up to exhaustive search (all lists, or a beam of ``n_items``)."""
    inner, _ = searchable_structure(index)
    nprobe = None if knobs.nprobe is None else min(int(inner.nlist), 2 * knobs.nprobe)
    ef_search = None if knobs.ef_search is None else min(n_items, 2 * knobs.ef_search)
    return SearchKnobs(nprobe=nprobe, ef_search=ef_search)


def knobs_exhaustive(knobs: SearchKnobs, index: faiss.Index, n_fetch: int) -> bool:
    """Return True when a search of ``n_fetch`` candidates with ``knobs`` is as wide as ``index`` allows.

    FAISS HNSW searches with a beam of ``max(efSearch, k)``, so asking for
    every item already gives the widest beam.
    """
    inner, _ = searchable_structure(index)
    if knobs.nprobe is not None and knobs.nprobe < inner.nlist:
        return False
    return knobs.ef_search is None or max(knobs.ef_search, n_fetch) >= int(index.ntotal)
