"""Map external user and item ids to contiguous indices and back."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recx._io import read_json, write_json_atomic

IdKind = Literal["int", "str"]


def _infer_kind(ids: np.ndarray, *, name: str) -> IdKind:
    """Return ``"int"`` or ``"str"`` for an array of ids, or raise on a mixture."""
    if ids.dtype.kind in "iu":
        return "int"
    if ids.dtype.kind == "b":
        raise TypeError(f"{name} ids are booleans. Pass integer or string ids.")
    if ids.dtype.kind == "f":
        if not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)):
            bad = ids[~np.isfinite(ids) | (ids != np.round(ids))][:3].tolist()
            raise TypeError(f"{name} ids contain non-integer floats such as {bad}. Ids must be integers or strings; drop missing ids first.")
        return "int"
    if ids.dtype.kind in "US":
        return "str"

    # Object arrays (as pandas gives for CSV columns that mix types) must hold one kind only.
    is_int = np.fromiter((isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ids), bool, len(ids))
    is_str = np.fromiter((isinstance(v, str) for v in ids), bool, len(ids))
    if is_int.all():
        return "int"
    if is_str.all():
        return "str"
    if (is_int | is_str).all():
        example_int = ids[is_int][0]
        example_str = ids[is_str][0]
        raise TypeError(
            f"{name} ids mix integers and strings (for example {example_int!r} and {example_str!r}). "
            f"Convert the column to one type, for example with df[column].astype(str)."
        )
    other = ids[~(is_int | is_str)][0]
    raise TypeError(f"{name} ids must be integers or strings, found {type(other).__name__} value {other!r}. Drop missing ids or convert the column first.")


def _as_id_array(values: Iterable[Any] | np.ndarray) -> np.ndarray:
    """Convert ids to a 1-D array without letting numpy turn a mixture of ints and strings into strings."""
    if isinstance(values, (np.ndarray, pd.Index, pd.Series)):
        return np.asarray(values)
    listed = list(values)
    array = np.asarray(listed)
    # np.asarray([1, "a"]) gives the strings ["1", "a"], so keep the original
    # values in an object array, where _infer_kind can reject the mixture.
    if array.dtype.kind in "US":
        array = np.asarray(listed, dtype=object)
    return array


class IdMap:
    """Bijection between external ids and contiguous indices ``0 .. n - 1``.

    Every model, index and output in recx carries the id maps it was built
    with, so results come back as the caller's own ids. Ids are either all
    integers (stored as int64) or all strings; a mixture is rejected.

    Parameters
    ----------
    ids : array-like of shape (n,)
        Unique external ids. Position ``i`` is the id of index ``i``.
    name : str, default="item"
        What the ids identify ("user", "item"), used in error messages.

    Examples
    --------
    >>> items = IdMap(["b", "a", "c"])
    >>> items.to_index(["c", "b"]).tolist()
    [2, 0]
    >>> items.to_id([1]).tolist()
    ['a']
    """

    def __init__(self, ids: Iterable[Any] | np.ndarray, *, name: str = "item") -> None:
        array = _as_id_array(ids)
        if array.ndim != 1:
            raise ValueError(f"{name} ids must be one-dimensional, got shape {array.shape}.")
        self.name = name
        self.kind: IdKind = _infer_kind(array, name=name) if len(array) else "int"
        if self.kind == "int":
            self.ids = array.astype(np.int64)
        else:
            self.ids = array.astype(object)
        self._index = pd.Index(self.ids)
        if not self._index.is_unique:
            duplicated = self._index[self._index.duplicated()][:3].tolist()
            raise ValueError(f"{name} ids must be unique, but {duplicated} appear more than once.")

    @classmethod
    def from_values(cls, values: Iterable[Any] | np.ndarray, *, name: str = "item") -> tuple[IdMap, np.ndarray]:
        """Build a map from ids that may repeat, sorted, and return it with the indices of ``values``.

        Returns
        -------
        id_map : IdMap
            The distinct ids in sorted order.
        indices : np.ndarray of shape (len(values),), int64
            ``id_map.to_index(values)``.
        """
        array = _as_id_array(values)
        kind = _infer_kind(array, name=name) if len(array) else "int"
        array = array.astype(np.int64) if kind == "int" else array.astype(object)
        codes, uniques = pd.factorize(array, sort=True)
        return cls(np.asarray(uniques), name=name), codes.astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return self.kind == other.kind and len(self) == len(other) and bool(np.all(self.ids == other.ids))

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self.ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap(name={self.name!r}, kind={self.kind!r}, n={len(self)}, ids=[{head}{more}])"

    def _coerce(self, external_ids: np.ndarray) -> np.ndarray:
        """Cast query ids to this map's kind, so that "7" finds int id 7 only when the map holds strings."""
        if self.kind == "int" and external_ids.dtype.kind in "US":
            # Ids typed on a command line arrive as strings.
            try:
                return external_ids.astype(np.int64)
            except ValueError:
                return external_ids.astype(object)
        return external_ids

    def to_index(self, external_ids: Iterable[Any] | np.ndarray, *, missing: Literal["raise", "drop", "mask"] = "raise") -> np.ndarray:
        """Translate external ids to indices.

        Parameters
        ----------
        external_ids : array-like of shape (m,)
            Ids to look up.
        missing : {"raise", "drop", "mask"}, default="raise"
            What to do with ids this map does not contain: raise ``KeyError``,
            drop them from the output, or return -1 in their place.

        Returns
        -------
        np.ndarray of shape (m,) or fewer with ``missing="drop"``, int64
        """
        listed = external_ids if isinstance(external_ids, np.ndarray) else list(external_ids)
        query = np.atleast_1d(np.asarray(listed))
        if query.dtype.kind == "U" and self.kind == "str" and not isinstance(listed, np.ndarray):
            # Fixed-width numpy strings drop trailing NUL characters, so "a\x00" would be looked up as "a".
            query = np.asarray(listed, dtype=object)
        if len(query) == 0:
            return np.empty(0, dtype=np.int64)
        query = self._coerce(query)
        indices = self._index.get_indexer(query).astype(np.int64)
        unknown = indices < 0
        if unknown.any():
            if missing == "raise":
                examples = query[unknown][:5].tolist()
                raise KeyError(
                    f"unknown {self.name} id(s) {examples} ({int(unknown.sum())} of {len(query)} not found). "
                    f"Known {self.name} ids are like {self.ids[:3].tolist()}; check the id and its type ({self.kind})."
                )
            if missing == "drop":
                indices = indices[~unknown]
        return indices

    def to_id(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Translate indices ``0 .. n - 1`` back to external ids.

        Raises
        ------
        IndexError
            If an index is negative or not below ``len(self)``.
        """
        positions = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices), dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            bad = positions[(positions < 0) | (positions >= len(self))][:3].tolist()
            raise IndexError(f"{self.name} indices {bad} are out of range for a map of {len(self)} ids.")
        return self.ids[positions]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description: ``{"name", "kind", "ids"}``."""
        return {"name": self.name, "kind": self.kind, "ids": self.ids.tolist()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IdMap:
        """Rebuild a map written by :meth:`to_dict`."""
        try:
            kind, ids, name = payload["kind"], payload["ids"], payload.get("name", "item")
        except (KeyError, TypeError) as error:
            raise ValueError(f"invalid id map: expected an object with 'kind' and 'ids', got keys {list(payload) if isinstance(payload, dict) else type(payload).__name__}.") from error
        if kind not in ("int", "str"):
            raise ValueError(f"invalid id map kind {kind!r}: expected 'int' or 'str'.")
        array = np.asarray(ids, dtype=np.int64 if kind == "int" else object)
        if kind == "str" and not all(isinstance(v, str) for v in array):
            raise ValueError("invalid id map: kind is 'str' but some ids are not strings.")
        return cls(array, name=name)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the map as JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IdMap:
        """Read a map written by :meth:`save`."""
        return cls.from_dict(read_json(Path(path), what="id map"))
