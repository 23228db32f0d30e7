"""The serving bundle's layout, its manifest and the checks run before a bundle is used.

A bundle is one folder::

    BUNDLE/
      manifest.json         format version, model settings, ONNX signature, sha256 and size of every other file
      index/                the FAISS item index, as written by ItemIndex.save
      item_ids.json         item id map (IdMap JSON): position i is item index i
      user_ids.json         user id map of the users known at export time
      item_titles.json      title of each item index (only when the run had titles)
      item_embeddings.npy   (n_items, dimension) float32, the indexed item vectors
      user_embeddings.npy   (n_users, dimension) float32, each known user's query vector
      user_history.npz      CSR rows of each known user's items: indptr (n_users + 1,), indices (nnz,), int64
      user_tower.onnx       the user tower over padded item-index batches

This module imports neither torch nor TorchRec.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from recx.serving.errors import BundleError

#: Value of the manifest's "format" key, which marks a folder as a recx serving bundle.
BUNDLE_FORMAT = "recx-serving-bundle"

#: Version of the bundle layout; :func:`read_manifest` rejects any other.
BUNDLE_FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
INDEX_FOLDER = "index"
ITEM_IDS_FILE = "item_ids.json"
USER_IDS_FILE = "user_ids.json"
ITEM_TITLES_FILE = "item_titles.json"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
USER_EMBEDDINGS_FILE = "user_embeddings.npy"
USER_HISTORY_FILE = "user_history.npz"
USER_TOWER_FILE = "user_tower.onnx"

#: ONNX names of the user tower's inputs and output (see recx.serving.onnx_tower for their shapes).
HISTORY_INPUT = "history"
MASK_INPUT = "history_mask"
RECENT_INPUT = "recent"
RECENT_MASK_INPUT = "recent_mask"
USER_INPUT = "user_index"
EMBEDDING_OUTPUT = "user_embedding"

#: ONNX inputs of each user tower feature the bundle supports: the index
#: input and, for bags of items, the mask input (None for the one-id user
#: feature). Keys are the TorchRec feature names of recx.models.towers.
FEATURE_INPUTS: dict[str, tuple[str, str | None]] = {
    "user_id": (USER_INPUT, None),
    "user_history": (HISTORY_INPUT, MASK_INPUT),
    "user_recent": (RECENT_INPUT, RECENT_MASK_INPUT),
}

#: Largest allowed difference between the ONNX and the TorchRec user tower at
#: export, on unit-length embeddings. User embeddings have norm
#: 1 / temperature, so the absolute tolerance is this value divided by the
#: temperature. Differences measured on CPU are about 1e-7 (float32 sums in
#: another order).
ONNX_TOLERANCE = 1e-5

#: Largest number of known users whose ONNX and TorchRec embeddings are compared at export.
CHECK_USERS = 512

#: Files every bundle contains, besides the manifest and the index folder.
REQUIRED_FILES: tuple[str, ...] = (ITEM_IDS_FILE, USER_IDS_FILE, ITEM_EMBEDDINGS_FILE, USER_EMBEDDINGS_FILE, USER_HISTORY_FILE, USER_TOWER_FILE)

#: Files of the index folder that loading reads; each must be listed, so that each is checked.
INDEX_FILES: tuple[str, ...] = (f"{INDEX_FOLDER}/index.faiss", f"{INDEX_FOLDER}/index.json", f"{INDEX_FOLDER}/items.json")

#: Manifest keys that loading reads.
REQUIRED_KEYS: tuple[str, ...] = ("format", "format_version", "model", "metric", "dimension", "index_kind", "n_users", "n_items", "user_tower", "files")

# Bytes hashed at a time, so that large embedding files are not read into memory at once.
_HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Return ``{relative POSIX path: {"sha256", "size"}}`` for every file under ``folder`` except the manifest."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST_FILE:
            continue
        files[relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def is_bundle(folder: Path) -> bool:
    """Return whether ``folder`` contains a manifest whose "format" marks a recx serving bundle."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        payload = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(payload, dict) and payload.get("format") == BUNDLE_FORMAT


def resolve_bundle_path(folder: Path, relative: Any) -> Path:
    """Return the path of manifest entry ``relative`` inside ``folder``, rejecting any path that could leave it.

    Raises
    ------
    BundleError
        If ``relative`` is not a string, is absolute (POSIX or Windows form),
        contains a ``..`` component, or resolves (through links) outside ``folder``.
    """
    if not isinstance(relative, str) or not relative:
        raise BundleError(f"invalid file path {relative!r} in the manifest of bundle {folder}: expected a non-empty relative path. Export the bundle again.")
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or PureWindowsPath(relative).drive:
        raise BundleError(f"unsafe file path {relative!r} in the manifest of bundle {folder}: absolute paths are not allowed. Export the bundle again; do not load bundles from untrusted sources.")
    if ".." in PurePosixPath(relative).parts or ".." in PureWindowsPath(relative).parts:
        raise BundleError(f"unsafe file path {relative!r} in the manifest of bundle {folder}: '..' would leave the bundle folder. Export the bundle again; do not load bundles from untrusted sources.")
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"unsafe file path {relative!r} in the manifest of bundle {folder}: it resolves to {path.resolve()}, outside the bundle folder. Remove the link or export the bundle again.")
    return path


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a bundle's manifest and every file it lists, before any file is used.

    The checks run in this order. The folder and manifest exist. The manifest
    is a JSON object of a known format and version, with the required keys.
    Every listed path stays inside the folder, and the required files are
    listed. Every listed file exists, with the recorded size and SHA-256.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    FileNotFoundError
        If the folder, the manifest or a listed file is missing.
    BundleError
        For an unknown format or version, a missing key, an unsafe path, an
        unlisted required file, or a size or checksum mismatch.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"serving bundle not found: {root} is not a folder. Pass the --output folder of `recx export`.")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"bundle manifest not found: {manifest_path} does not exist. Pass the --output folder of `recx export`, or export the bundle again.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"bundle manifest {manifest_path} is not valid UTF-8 JSON ({error}). The file is truncated or was not written by recx; export the bundle again.") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a recx serving bundle manifest: expected \"format\": \"{BUNDLE_FORMAT}\". Pass the --output folder of `recx export`.")

    # Step 1: a layout this version can read, with every key it needs.
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"unsupported bundle format version {version!r} in {manifest_path}: this recx reads version {BUNDLE_FORMAT_VERSION}. "
            f"Export the bundle again with this recx, or load it with the recx version that wrote it ({manifest.get('recx_version', 'unknown')})."
        )
    missing_keys = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing_keys:
        raise BundleError(f"invalid bundle manifest {manifest_path}: missing keys {missing_keys}. Export the bundle again.")
    for key in ("model", "user_tower", "files"):
        if not isinstance(manifest[key], dict):
            raise BundleError(f"invalid bundle manifest {manifest_path}: \"{key}\" must be a JSON object, got {type(manifest[key]).__name__}. Export the bundle again.")
    for key in ("n_users", "n_items", "dimension"):
        if isinstance(manifest[key], bool) or not isinstance(manifest[key], int) or manifest[key] < 0:
            raise BundleError(f"invalid bundle manifest {manifest_path}: \"{key}\" must be a non-negative integer, got {manifest[key]!r}. Export the bundle again.")
    files = manifest["files"]
    # The ONNX file is named in two places, and only the "files" entry is checked below.
    if manifest["user_tower"].get("file") != USER_TOWER_FILE:
        raise BundleError(f"invalid bundle manifest {manifest_path}: user_tower.file is {manifest['user_tower'].get('file')!r}, expected {USER_TOWER_FILE!r}. Export the bundle again.")

    # Step 2: every path stays inside the bundle, checked for all entries before any file is opened.
    paths = {relative: resolve_bundle_path(root, relative) for relative in files}
    unlisted = [name for name in REQUIRED_FILES if name not in files]
    if manifest.get("has_titles") and ITEM_TITLES_FILE not in files:
        unlisted.append(ITEM_TITLES_FILE)
    # Every file the loader opens is listed, so none escapes the path and checksum checks below.
    unlisted += [name for name in INDEX_FILES if name not in files]
    if unlisted:
        raise BundleError(f"invalid bundle manifest {manifest_path}: required files {unlisted} are not listed. Export the bundle again.")

    # Step 3: each file exists and has the size and checksum recorded at export.
    for relative, path in paths.items():
        entry = files[relative]
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
            raise BundleError(f"invalid bundle manifest {manifest_path}: the entry of {relative!r} must have \"sha256\" (string) and \"size\" (integer). Export the bundle again.")
        if not path.is_file():
            raise FileNotFoundError(f"bundle file not found: {path} is listed in the manifest but does not exist. The bundle is incomplete; copy it again or export it again.")
        size = path.stat().st_size
        if size != entry["size"]:
            raise BundleError(f"size mismatch for {path}: the manifest expects {entry['size']} bytes, the file has {size}. The file is truncated or was changed after export; copy the bundle again or export it again.")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise BundleError(f"checksum mismatch for {path}: the manifest expects sha256 {entry['sha256']}, the file has {digest}. The file is corrupt or was changed after export; copy the bundle again or export it again.")
    return manifest
