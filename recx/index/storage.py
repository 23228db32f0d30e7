"""The on-disk layout of an item index: ``index.faiss``, ``items.json`` and the ``index.json`` manifest.

Format version 1 is unchanged since exact-only indexes: version-1 folders
written before the index kinds existed have no ``parameters`` key and load
as kind "flat". A recx that predates a kind or metric rejects a folder that
uses it through its check of ``kind`` and ``metric``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import faiss

import recx
from recx._io import atomic_path, read_json, write_json_atomic
from recx.data.idmap import IdMap
from recx.index.checks import check_metric
from recx.index.kinds import INDEX_KINDS, IndexSettings, faiss_metric

__all__ = ["FAISS_FILE", "INDEX_FORMAT_VERSION", "ITEM_IDS_FILE", "MANIFEST_FILE", "read_index_folder", "write_index_folder"]

#: Version of the on-disk layout written by :meth:`ItemIndex.save`; load rejects any other.
INDEX_FORMAT_VERSION = 1

MANIFEST_FILE = "index.json"
FAISS_FILE = "index.faiss"
ITEM_IDS_FILE = "items.json"

# Bytes read at a time when hashing, so large indexes are not read into memory at once.
_HASH_CHUNK_BYTES = 1 << 20

# The FAISS class each kind must load as; "factory" accepts any structure.
_EXPECTED_CLASSES: dict[str, tuple[type, ...]] = {
    "hnsw": (faiss.IndexHNSWFlat,),
    "ivf_flat": (faiss.IndexIVFFlat,),
    "ivf_pq": (faiss.IndexIVFPQ,),
    "factory": (faiss.Index,),
}


def write_index_folder(folder: Path, index: faiss.Index, item_ids: IdMap, settings: IndexSettings) -> None:
    """Write ``index`` (a CPU FAISS index), its id map and the manifest into ``folder``.

    Each file is written to a temporary name and renamed, and the manifest
    comes last, so an interrupted save leaves a folder that
    :func:`read_index_folder` rejects rather than a silently mixed one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / FAISS_FILE) as temporary:
        faiss.write_index(index, str(temporary))
        digest = _sha256(temporary)
    item_ids.save(folder / ITEM_IDS_FILE)
    manifest = {
        "format_version": INDEX_FORMAT_VERSION,
        "kind": settings.kind,
        "metric": settings.metric,
        "parameters": settings.parameters(),
        "dimension": int(index.d),
        "n_items": int(index.ntotal),
        "index_file": FAISS_FILE,
        "index_sha256": digest,
        "recx_version": recx.__version__,
        "faiss_version": faiss.__version__,
    }
    write_json_atomic(folder / MANIFEST_FILE, manifest)


def read_index_folder(directory: str | os.PathLike[str]) -> tuple[faiss.Index, IdMap, IndexSettings]:
    """Read and verify a folder written by :func:`write_index_folder`.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing.
    ValueError
        If the format version, kind, metric or parameters are unknown, the
        checksum of ``index.faiss`` does not match the manifest, or the
        files disagree on structure, dimension or number of items.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"item index not found: {folder} is not a folder. Pass a folder written by ItemIndex.save.")
    manifest_path = folder / MANIFEST_FILE
    manifest = read_json(manifest_path, what="item index manifest")
    if not isinstance(manifest, dict):
        raise ValueError(f"invalid item index manifest {manifest_path}: expected a JSON object, got {type(manifest).__name__}.")

    # Step 1: the manifest must describe a layout this version can read.
    settings = _settings_from_manifest(manifest, manifest_path)

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
    _check_structure(index, settings, index_path)
    if index.d != manifest["dimension"] or index.ntotal != manifest["n_items"]:
        raise ValueError(
            f"item index file {index_path} contains {index.ntotal} vectors of dimension {index.d}, "
            f"but the manifest says {manifest['n_items']} of dimension {manifest['dimension']}. Save the index again."
        )

    # Step 3: one external id per indexed vector.
    item_ids = IdMap.load(folder / ITEM_IDS_FILE)
    if len(item_ids) != index.ntotal:
        raise ValueError(f"{folder / ITEM_IDS_FILE} contains {len(item_ids)} item ids but the index contains {index.ntotal} items. Save the index again.")
    return index, item_ids, settings


def _settings_from_manifest(manifest: dict[str, Any], manifest_path: Path) -> IndexSettings:
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise ValueError(f"unsupported item index format version {version!r} in {manifest_path}: this recx reads version {INDEX_FORMAT_VERSION}. Build the index again and save it with this recx.")
    missing = [key for key in ("kind", "metric", "dimension", "n_items", "index_sha256") if key not in manifest]
    if missing:
        raise ValueError(f"invalid item index manifest {manifest_path}: missing keys {missing}. Save the index again.")
    kind, metric = manifest["kind"], manifest["metric"]
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown item index kind {kind!r} in {manifest_path}: expected one of {list(INDEX_KINDS)}. It may come from a newer recx.")
    check_metric(metric)
    parameters = manifest.get("parameters", {})
    known = {field.name for field in dataclasses.fields(IndexSettings)} - {"kind", "metric"}
    if not isinstance(parameters, dict) or set(parameters) - known:
        raise ValueError(f"invalid item index manifest {manifest_path}: parameters {parameters!r} are not valid for kind {kind!r}. Save the index again.")
    return IndexSettings(kind=kind, metric=metric, **parameters)


def _check_structure(index: faiss.Index, settings: IndexSettings, index_path: Path) -> None:
    """Raise unless the loaded FAISS object is the structure and metric the manifest names."""
    if settings.kind == "flat":
        expected: tuple[type, ...] = (faiss.IndexFlatL2,) if settings.metric == "l2" else (faiss.IndexFlatIP,)
    else:
        expected = _EXPECTED_CLASSES[settings.kind]
    if not isinstance(index, expected):
        names = " or ".join(cls.__name__ for cls in expected)
        raise ValueError(f"item index file {index_path} contains a {type(index).__name__}, expected {names} for kind {settings.kind!r}.")
    if index.metric_type != faiss_metric(settings.metric):
        raise ValueError(f"item index file {index_path} uses FAISS metric type {index.metric_type}, which does not match metric {settings.metric!r} in the manifest. Save the index again.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
