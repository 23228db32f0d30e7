"""Top-k retrieval from a serving bundle, with numpy, scipy, pandas, FAISS and onnxruntime but no torch.

:class:`Retriever` loads a folder written by :func:`recx.serving.export_bundle`
and runs three queries: a known user's top items, the top items for a
history of item ids (through the ONNX user tower), and the items most
similar to an item. Neither torch nor TorchRec is imported.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recx._io import read_json
from recx.data.idmap import IdMap
from recx.index import ItemIndex
from recx.serving.bundle import (
    EMBEDDING_OUTPUT,
    HISTORY_INPUT,
    INDEX_FOLDER,
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    MASK_INPUT,
    RECENT_INPUT,
    RECENT_MASK_INPUT,
    USER_EMBEDDINGS_FILE,
    USER_HISTORY_FILE,
    USER_IDS_FILE,
    USER_INPUT,
    USER_TOWER_FILE,
    read_manifest,
)
from recx.serving.errors import BundleError, UnknownIdError

logger = logging.getLogger(__name__)

__all__ = ["Retriever"]

# An id typed as text (a query string, a command line) that spells an integer.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


class Retriever:
    """Recommend from a serving bundle without the training stack.

    Build one with :meth:`load`. Results are ``(ids, scores)``: two 1-D
    arrays of the same length, best first. Ids are the external ids of the
    training data (int64 for integer ids, object arrays of str otherwise) and
    scores are float32 inner products ``user . item`` (the model's logit
    ``cos / temperature`` for users, the cosine similarity for
    :meth:`similar_items`).

    Ids may be given as int or str. For a bundle with integer ids, a string
    that spells an integer (``"42"``) is read as that integer, so ids typed on
    a command line or in a query string work.

    Attributes
    ----------
    path : Path
        The bundle folder.
    manifest : dict
        The checked manifest (see :mod:`recx.serving.bundle`).
    user_ids, item_ids : IdMap
        Known users and the catalogue; position ``i`` is index ``i``.
    n_users, n_items, dimension : int
    metric : str
        Similarity of the item index, "inner_product" for two-tower models.
    recent_items : int
        Size of the user tower's bag of latest items; 0 when the model has none.

    Notes
    -----
    Nothing is modified after :meth:`load`, and onnxruntime sessions and
    FAISS flat searches may run from several threads at once, so one
    Retriever can serve concurrent queries.
    """

    def __init__(self) -> None:
        raise TypeError("create a Retriever with Retriever.load(bundle_folder).")

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Retriever:
        """Load and check a bundle written by :func:`recx.serving.export_bundle`.

        The manifest and every file it lists are checked (format version,
        paths inside the folder, sizes and SHA-256 checksums) before any file
        is read, then the files are checked against each other.

        Raises
        ------
        FileNotFoundError
            If the folder, the manifest or a listed file is missing.
        BundleError
            If the bundle is of an unknown version, lists unsafe paths, has
            files that do not match the manifest, or has inconsistent files.
        """
        import onnxruntime

        folder = Path(path)
        manifest = read_manifest(folder)
        retriever = cls.__new__(cls)
        retriever.path = folder
        retriever.manifest = manifest
        retriever.n_users = int(manifest["n_users"])
        retriever.n_items = int(manifest["n_items"])
        retriever.dimension = int(manifest["dimension"])
        retriever.metric = str(manifest["metric"])
        retriever.recent_items = int(manifest["model"].get("recent_items", 0))

        # Step 1: ids, titles and the item index.
        retriever.item_ids = IdMap.load(folder / ITEM_IDS_FILE)
        retriever.user_ids = IdMap.load(folder / USER_IDS_FILE)
        retriever._item_positions = _position_table(retriever.item_ids)
        retriever._user_positions = _position_table(retriever.user_ids)
        retriever._titles = None
        if manifest.get("has_titles"):
            retriever._titles = read_json(folder / ITEM_TITLES_FILE, what="item titles")
        # device="auto" would ask torch about CUDA, importing torch into the serving process.
        retriever._index = ItemIndex.load(folder / INDEX_FOLDER, device="cpu")

        # Step 2: numeric arrays, never unpickled.
        try:
            retriever._item_embeddings = np.load(folder / ITEM_EMBEDDINGS_FILE, allow_pickle=False)
            retriever._user_embeddings = np.load(folder / USER_EMBEDDINGS_FILE, allow_pickle=False)
            with np.load(folder / USER_HISTORY_FILE, allow_pickle=False) as history:
                retriever._history_indptr = history["indptr"]
                retriever._history_indices = history["indices"]
        except (ValueError, KeyError, OSError) as error:
            raise BundleError(
                f"invalid bundle {folder}: its arrays could not be read as plain numeric .npy/.npz data ({error}). "
                f"recx never unpickles bundle files; export the bundle again."
            ) from error

        # Step 3: the ONNX user tower, on the CPU.
        tower = manifest["user_tower"]
        try:
            retriever._session = onnxruntime.InferenceSession(str(folder / USER_TOWER_FILE), providers=["CPUExecutionProvider"])
        except Exception as error:
            # onnxruntime raises its own exception classes (InvalidProtobuf, Fail, ...), which share no base class but Exception.
            raise BundleError(f"invalid bundle {folder}: onnxruntime cannot load {USER_TOWER_FILE} ({error}). Export the bundle again.") from error
        retriever._input_names = [spec["name"] for spec in tower["inputs"]]

        retriever._check_consistency()
        logger.info("loaded serving bundle %s: %d users, %d items, dimension %d", folder, retriever.n_users, retriever.n_items, retriever.dimension)
        return retriever

    def _check_consistency(self) -> None:
        """Check that the bundle's files agree with the manifest and with each other."""
        where = f"bundle {self.path}"
        expected = {
            "item ids": (len(self.item_ids), self.n_items),
            "user ids": (len(self.user_ids), self.n_users),
            "item index": (len(self._index), self.n_items),
            "item embedding rows": (self._item_embeddings.shape[0], self.n_items),
            "user embedding rows": (self._user_embeddings.shape[0], self.n_users),
            "history rows": (len(self._history_indptr) - 1, self.n_users),
        }
        if self._titles is not None:
            expected["item titles"] = (len(self._titles), self.n_items)
        for what, (found, wanted) in expected.items():
            if found != wanted:
                raise BundleError(f"invalid {where}: it contains {found} {what}, but the manifest lists {wanted}. Export the bundle again.")

        for name, array in (("item", self._item_embeddings), ("user", self._user_embeddings)):
            if array.ndim != 2 or array.shape[1] != self.dimension or array.dtype != np.float32:
                raise BundleError(f"invalid {where}: {name} embeddings have shape {array.shape} and dtype {array.dtype}, expected (n, {self.dimension}) float32. Export the bundle again.")

        indptr, indices = self._history_indptr, self._history_indices
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu" or indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
            raise BundleError(f"invalid {where}: {USER_HISTORY_FILE} does not contain valid CSR arrays. Export the bundle again.")
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_items):
            raise BundleError(f"invalid {where}: {USER_HISTORY_FILE} refers to item indices outside 0 .. {self.n_items - 1}. Export the bundle again.")

        if (RECENT_INPUT in self._input_names) != (self.recent_items > 0):
            raise BundleError(f"invalid {where}: the model settings say recent_items={self.recent_items}, but the ONNX inputs are {self._input_names}. Export the bundle again.")

        session_inputs = [node.name for node in self._session.get_inputs()]
        session_outputs = [node.name for node in self._session.get_outputs()]
        if session_inputs != self._input_names or EMBEDDING_OUTPUT not in session_outputs:
            raise BundleError(
                f"invalid {where}: the ONNX user tower takes {session_inputs} and returns {session_outputs}, "
                f"the manifest lists inputs {self._input_names} and output {EMBEDDING_OUTPUT!r}. Export the bundle again."
            )

    def __repr__(self) -> str:
        return f"Retriever(path={str(self.path)!r}, n_users={self.n_users}, n_items={self.n_items}, dimension={self.dimension})"

    @property
    def uses_history(self) -> bool:
        """Whether the user tower reads the user's items (and so :meth:`recommend_from_history` works)."""
        return HISTORY_INPUT in self._input_names or RECENT_INPUT in self._input_names

    @property
    def uses_user_id(self) -> bool:
        """Whether the user tower also reads a user id, so that :meth:`recommend_from_history` needs ``user_id``."""
        return USER_INPUT in self._input_names

    @property
    def has_titles(self) -> bool:
        """Whether the bundle contains item titles."""
        return self._titles is not None

    # ---------------------------------------------------------------- queries

    def recommend(self, user_id: Any, k: int = 10, *, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Recommend ``k`` items to a user known at export time.

        Uses the user's embedding computed by the TorchRec tower at export,
        so the result equals ``TwoTowerRecommender.recommend`` on the
        exported model, up to the order of items with equal scores.

        Parameters
        ----------
        user_id : int or str
            External user id.
        k : int, default=10
            Number of items, 1 .. ``n_items``.
        exclude_seen : bool, default=True
            Leave out the items in the user's history.

        Returns
        -------
        item_ids : np.ndarray of shape (<= k,)
            Best first; shorter than ``k`` only when fewer items remain after exclusion.
        scores : np.ndarray of shape (<= k,), float32

        Raises
        ------
        UnknownIdError
            If the bundle has no such user. Use :meth:`recommend_from_history`
            for users who were not in the training data.
        ValueError
            If ``k`` is not in 1 .. ``n_items``.
        """
        k = self._check_k(k)
        user = self._user_position(user_id)
        exclude = None
        if exclude_seen:
            start, stop = self._history_indptr[user], self._history_indptr[user + 1]
            exclude = self._exclusion_row(self._history_indices[start:stop])
        return self._search(self._user_embeddings[user : user + 1], k, exclude)

    def recommend_from_history(
        self,
        item_ids: Iterable[Any],
        k: int = 10,
        *,
        exclude_history: bool = True,
        ignore_unknown: bool = False,
        user_id: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Recommend ``k`` items to a user described by the items they interacted with.

        The ONNX user tower embeds the history, so this serves users who were
        not in the training data. The history bag is the set of the items,
        as in training. When the model also has a bag of the latest items
        (``recent_items > 0``), that bag contains the last ``recent_items`` distinct
        ids of ``item_ids``, so only there does the order matter. A repeated
        id counts once, at its last position.

        Parameters
        ----------
        item_ids : sequence of int or str
            External ids of the user's items, oldest first; at least one known item.
        k : int, default=10
            Number of items, 1 .. ``n_items``.
        exclude_history : bool, default=True
            Leave out the items of ``item_ids``.
        ignore_unknown : bool, default=False
            Drop ids the catalogue does not contain instead of raising.
        user_id : int or str, optional
            Known user id, required (and only accepted) when the model reads
            user ids (``uses_user_id``).

        Returns
        -------
        item_ids : np.ndarray of shape (<= k,)
        scores : np.ndarray of shape (<= k,), float32

        Raises
        ------
        UnknownIdError
            If an item id is unknown (and ``ignore_unknown`` is false), or ``user_id`` is unknown.
        ValueError
            If the history is empty, ``k`` is not in 1 .. ``n_items``, or
            ``user_id`` is missing or not accepted.
        """
        k = self._check_k(k)
        positions = self._history_positions(item_ids, ignore_unknown=ignore_unknown)
        query = self._embed_positions(positions, user_id)
        exclude = self._exclusion_row(positions) if exclude_history else None
        return self._search(query, k, exclude)

    def similar_items(self, item_id: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` items whose embeddings are closest to an item's, the item itself left out.

        Item embeddings have unit length, so scores are cosine similarities
        in [-1, 1]. At most ``n_items - 1`` items come back.

        Raises
        ------
        UnknownIdError
            If the catalogue has no such item.
        ValueError
            If ``k`` is not in 1 .. ``n_items``.
        """
        k = self._check_k(k)
        item = self._item_position(item_id)
        return self._search(self._item_embeddings[item : item + 1], k, self._exclusion_row(np.array([item])))

    def embed_history(self, item_ids: Iterable[Any], *, ignore_unknown: bool = False, user_id: Any = None) -> np.ndarray:
        """Run the ONNX user tower on a history; returns shape (dimension,), float32, norm ``1 / temperature``.

        Arguments and errors are those of :meth:`recommend_from_history`.
        """
        positions = self._history_positions(item_ids, ignore_unknown=ignore_unknown)
        return self._embed_positions(positions, user_id)[0]

    def titles(self, item_ids: Iterable[Any]) -> list[str] | None:
        """Return the titles of ``item_ids``, or None when the bundle has no titles."""
        if self._titles is None:
            return None
        return [self._titles[self._item_position(item_id)] for item_id in item_ids]

    # ---------------------------------------------------------------- helpers

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"k must be a positive integer, got {k!r} ({type(k).__name__}). Pass for example k=10.")
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}. Pass for example k=10.")
        if k > self.n_items:
            raise ValueError(f"k={k} is larger than the catalogue of {self.n_items} items. Pass k <= {self.n_items}.")
        return int(k)

    def _user_position(self, user_id: Any) -> int:
        key = _lookup_key(user_id, self.user_ids.kind, "user")
        position = self._user_positions.get(key)
        if position is None:
            raise UnknownIdError(
                f"unknown user id {key!r}: the bundle has no embedding for it ({self.n_users} known users with {self.user_ids.kind} ids, "
                f"such as {self.user_ids.ids[:3].tolist()}). For a user who was not in the training data, call recommend_from_history with their item ids."
            )
        return position

    def _item_position(self, item_id: Any) -> int:
        key = _lookup_key(item_id, self.item_ids.kind, "item")
        position = self._item_positions.get(key)
        if position is None:
            raise UnknownIdError(
                f"unknown item id {key!r}: the catalogue of {self.n_items} items has no such id ({self.item_ids.kind} ids, "
                f"such as {self.item_ids.ids[:3].tolist()}). Check the id and its type."
            )
        return position

    def _history_positions(self, item_ids: Iterable[Any], *, ignore_unknown: bool) -> np.ndarray:
        """Return the distinct item indices of a history of external ids, each at its last position, oldest first."""
        if isinstance(item_ids, (str, bytes)) or not isinstance(item_ids, Iterable):
            raise TypeError(f"item_ids must be a list of item ids, got {type(item_ids).__name__} {item_ids!r}. Wrap a single id in a list: [{item_ids!r}].")
        listed = list(np.asarray(item_ids).tolist() if isinstance(item_ids, np.ndarray) else item_ids)
        if not listed:
            raise ValueError("the history is empty: item_ids contains no item ids. Pass at least one item the user interacted with.")
        positions: list[int] = []
        unknown: list[Any] = []
        for item_id in listed:
            key = _lookup_key(item_id, self.item_ids.kind, "item")
            position = self._item_positions.get(key)
            if position is None:
                unknown.append(key)
            else:
                positions.append(position)
        if unknown and not ignore_unknown:
            raise UnknownIdError(
                f"unknown item id(s) {unknown[:5]} in the history ({len(unknown)} of {len(listed)} not in the catalogue of {self.n_items} items, "
                f"which has {self.item_ids.kind} ids such as {self.item_ids.ids[:3].tolist()}). Remove them, or pass ignore_unknown=True to drop them."
            )
        if not positions:
            raise ValueError(f"the history is empty after dropping unknown ids: none of the {len(listed)} item ids, such as {unknown[:3]}, is in the catalogue. Pass at least one known item id.")
        if unknown:
            logger.debug("dropped %d unknown item ids from a history, such as %s", len(unknown), unknown[:3])
        # Training data contains one entry per (user, item) at its latest time, so a repeat counts at its last position.
        latest_first = list(dict.fromkeys(reversed(positions)))
        return np.asarray(latest_first[::-1], dtype=np.int64)

    def _embed_positions(self, positions: np.ndarray, user_id: Any) -> np.ndarray:
        """Run the ONNX tower on one history of item indices (oldest first); returns shape (1, dimension), float32."""
        if not self.uses_history:
            raise ValueError("this bundle's user tower reads no items of the user (the model was trained with use_history=False and no recent items), so it cannot embed a history. Call recommend(user_id) instead.")
        feeds: dict[str, np.ndarray] = {}
        if HISTORY_INPUT in self._input_names:
            # Sorted, so that the pooled sum does not depend on the order of item_ids.
            history = np.sort(positions)
            feeds[HISTORY_INPUT] = history.reshape(1, -1)
            feeds[MASK_INPUT] = np.ones((1, len(history)), dtype=np.float32)
        if RECENT_INPUT in self._input_names:
            recent = positions[-self.recent_items :]
            feeds[RECENT_INPUT] = recent.reshape(1, -1)
            feeds[RECENT_MASK_INPUT] = np.ones((1, len(recent)), dtype=np.float32)
        if self.uses_user_id:
            if user_id is None:
                raise ValueError("this bundle's user tower also reads a user id (the model was trained with use_user_id=True). Pass user_id= of a known user, or call recommend(user_id).")
            feeds[USER_INPUT] = np.array([self._user_position(user_id)], dtype=np.int64)
        elif user_id is not None:
            raise ValueError(f"user_id={user_id!r} was given, but this bundle's user tower reads no user id: the history alone describes the user. Leave user_id out.")
        return self._session.run([EMBEDDING_OUTPUT], feeds)[0]

    def _exclusion_row(self, positions: np.ndarray) -> sp.csr_matrix:
        """Build the (1, n_items) exclusion matrix of item indices ``positions``."""
        values = np.ones(len(positions), dtype=np.int8)
        return sp.csr_matrix((values, np.sort(np.asarray(positions, dtype=np.int64)), np.array([0, len(positions)])), shape=(1, self.n_items))

    def _search(self, query: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
        indices, scores = self._index.search_indices(query, k, exclude=exclude)
        found = indices[0] >= 0
        return self.item_ids.to_id(indices[0][found]), scores[0][found]


def _position_table(ids: IdMap) -> dict[Any, int]:
    """Map each external id to its index; a plain dict, which is safe to read from many threads."""
    return {external_id: position for position, external_id in enumerate(ids.ids.tolist())}


def _lookup_key(value: Any, kind: str, name: str) -> Any:
    """Return ``value`` as a key of a position table of ``kind`` ids, or raise TypeError for a value that cannot be an id."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} ids are integers or strings, got the boolean {value!r}.")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.str_):
        value = str(value)
    if isinstance(value, str):
        if kind == "int" and _INTEGER_TEXT.fullmatch(value.strip()):
            return int(value)
        return value
    if isinstance(value, int):
        return value
    raise TypeError(f"{name} ids are integers or strings, got {type(value).__name__} {value!r}. Pass the id as it appears in the training data.")

