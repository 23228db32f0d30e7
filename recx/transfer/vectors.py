"""Tables of pretrained item vectors with their ids, read from .npz or .safetensors files."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VECTOR_SUFFIXES: tuple[str, ...] = (".npz", ".safetensors")


@dataclass(frozen=True)
class ItemVectors:
    """One pretrained vector per item id.

    Attributes
    ----------
    ids : np.ndarray of shape (n,)
        External item ids (int64 or str), unique.
    vectors : np.ndarray of shape (n, d), float32
    """

    ids: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors)
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise ValueError(f"item vectors must be a non-empty 2-D array (n_items, dim), got shape {vectors.shape}.")
        if len(self.ids) != vectors.shape[0]:
            raise ValueError(f"got {len(self.ids)} ids for {vectors.shape[0]} vectors; pass one id per row.")
        if len(set(np.asarray(self.ids).tolist())) != len(self.ids):
            raise ValueError("item vector ids must be unique; the table repeats some ids.")
        if not np.isfinite(vectors).all():
            raise ValueError("item vectors contain NaN or infinite values; clean the table before using it.")
        object.__setattr__(self, "vectors", vectors.astype(np.float32, copy=False))
        object.__setattr__(self, "ids", np.asarray(self.ids))

    @property
    def dimension(self) -> int:
        """Width of the vectors."""
        return int(self.vectors.shape[1])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` file with arrays ``ids`` and ``vectors`` (no pickled objects)."""
        from recx._io import atomic_path

        file = Path(path)
        ids = self.ids.astype(np.int64) if np.issubdtype(self.ids.dtype, np.integer) else self.ids.astype(str)
        with atomic_path(file) as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, ids=ids, vectors=self.vectors)
        return file


def load_vectors(path: str | os.PathLike[str]) -> ItemVectors:
    """Read item vectors from a file.

    Formats
    -------
    ``.npz``
        Arrays ``ids`` (integers or strings) and ``vectors`` (n, d).
    ``.safetensors``
        Tensor ``vectors`` (n, d) and either an int64 tensor ``ids`` or a
        JSON list under the metadata key ``ids``.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing file, another suffix, or missing or malformed arrays.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"vector file not found: {file}. Pass an .npz or .safetensors file of item ids and vectors, or a recx run folder.")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(file):
            raise ValueError(f"{file} is not a readable .npz file: it is not a zip archive. Save it with np.savez(path, ids=..., vectors=...).")
        try:
            with np.load(file, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files if name in ("ids", "vectors")}
                names = list(archive.files)
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            # numpy raises ValueError for an array of pickled objects, which recx never loads.
            raise ValueError(f"{file} is not a readable .npz file ({error}).") from error
        missing = [name for name in ("ids", "vectors") if name not in arrays]
        if missing:
            raise ValueError(f"{file} lacks the arrays {missing}; it has {names}. Save it with np.savez(path, ids=..., vectors=...).")
        return ItemVectors(arrays["ids"], arrays["vectors"])
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="numpy") as archive:
                names = set(archive.keys())
                if "vectors" not in names:
                    raise ValueError(f"{file} has no tensor named 'vectors'; it has {sorted(names)}.")
                vectors = archive.get_tensor("vectors")
                if "ids" in names:
                    ids = archive.get_tensor("ids")
                else:
                    metadata = archive.metadata() or {}
                    if "ids" not in metadata:
                        raise ValueError(f"{file} has no item ids: add an int64 tensor 'ids' or a JSON list under the metadata key 'ids'.")
                    ids = np.asarray(json.loads(metadata["ids"]))
        except SafetensorError as error:
            raise ValueError(f"{file} is not a readable safetensors file ({error}).") from error
        return ItemVectors(ids, vectors)
    raise ValueError(f"unsupported vector file {file}: expected one of {list(VECTOR_SUFFIXES)}.")
