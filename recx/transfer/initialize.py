"""Initialisers: give a freshly built two-tower model a pretrained starting point.

Three sources, which can be combined (text first, then the others):

- :class:`TextInit` embeds each item's text with a sentence encoder, feeds
  the vectors to the item tower as a dense input, and fills the item-indexed
  embedding tables with their principal components.
- :class:`RunInit` copies a recx model trained on another dataset: its MLPs
  and the rows of its item-indexed tables for items the two catalogues
  share, matched by id or by a key such as the normalised title and year.
- :class:`VectorInit` copies any table of item vectors (for example item
  factors of another model) into the item-indexed tables.

Item-indexed tables are ``item_id`` (item tower), ``user_history`` and
``user_recent`` (user tower): all three have one row per item, so a
pretrained item vector is a good start for each. Rows without a match are
filled from content when text vectors exist (a ridge regression from text
to the matched rows) and from the mean of the matched rows otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recx.data.interactions import Interactions
from recx.models.two_tower import TwoTowerModel
from recx.transfer.alignment import Alignment, align, item_keys
from recx.transfer.text import TextEncoder, encode_items
from recx.transfer.vectors import VECTOR_SUFFIXES, ItemVectors, load_vectors

logger = logging.getLogger(__name__)

#: Embedding tables with one row per item, in the user and the item tower.
ITEM_TABLES: tuple[str, ...] = ("item_id", "user_history", "user_recent")

#: Ridge penalty of the map from text vectors to table rows (on unit-norm text vectors).
RIDGE_PENALTY = 1.0


def embedding_tables(model: TwoTowerModel) -> dict[str, torch.nn.Parameter]:
    """Return every embedding table of both towers by table name, each of shape (rows, D)."""
    tables: dict[str, torch.nn.Parameter] = {}
    for tower in (model.user_tower, model.item_tower):
        for name, bag in tower.embeddings.embedding_bags.items():
            tables[name] = bag.weight
    return tables


def principal_components(vectors: np.ndarray, dim: int, row_norm: float) -> np.ndarray:
    """Project ``vectors`` (n, T) onto their top ``dim`` principal components.

    Returns (n, dim) float32 whose rows have root-mean-square norm
    ``row_norm``; when ``dim > T`` the extra columns are zero.
    """
    centered = vectors.astype(np.float64) - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    n_components = min(dim, components.shape[0])
    projected = np.zeros((len(vectors), dim))
    projected[:, :n_components] = centered @ components[:n_components].T
    rms = np.sqrt((projected**2).sum(axis=1).mean())
    return (projected * (row_norm / max(rms, 1e-12))).astype(np.float32)


def fill_unmatched(rows: np.ndarray, matched: np.ndarray, unmatched: np.ndarray, content: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Fill ``rows[unmatched]`` from the matched rows; return the rows and the method used.

    With ``content`` (n, T), a ridge regression from content to rows is fit
    on the matched items and applied to the others ("content"). Without it,
    the unmatched rows get the mean matched row ("mean").
    """
    if len(unmatched) == 0:
        return rows, "none"
    has_content = content is not None and np.abs(content[matched]).sum() > 0
    if has_content:
        assert content is not None
        x = content[matched].astype(np.float64)
        x_mean, y_mean = x.mean(axis=0), rows[matched].astype(np.float64).mean(axis=0)
        x_centered = x - x_mean
        gram = x_centered.T @ x_centered + RIDGE_PENALTY * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, x_centered.T @ (rows[matched] - y_mean))
        rows[unmatched] = ((content[unmatched] - x_mean) @ weights + y_mean).astype(np.float32)
        return rows, "content"
    rows[unmatched] = rows[matched].mean(axis=0)
    return rows, "mean"


@dataclass
class InitReport:
    """Record of an initialiser's changes: parameter groups written and items aligned."""

    source: str
    groups: list[str] = field(default_factory=list)
    aligned_items: int | None = None
    n_items: int | None = None
    filled_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return dict(vars(self))


class Initializer:
    """Base class: ``prepare`` may change the model shape, ``apply`` writes weights."""

    #: Order of application; text runs first so that later sources can fill unmatched rows from it.
    order = 1

    def prepare(self, train: Interactions) -> dict[str, Any]:
        """Return model settings this source needs (for example ``text_dim``)."""
        return {}

    def apply(self, model: TwoTowerModel, train: Interactions) -> InitReport:
        """Write pretrained values into ``model``; returns what changed."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Return a JSON-ready description, recorded with a trained model."""
        raise NotImplementedError


@dataclass
class TextInit(Initializer):
    """Initialise from a sentence encoder over item text.

    Parameters
    ----------
    encoder : str, os.PathLike, TextEncoder or None
        Folder of a sentence-transformers model; None uses the packaged
        all-MiniLM-L6-v2.
    columns : sequence of str, default=("title", "genres")
        Item metadata columns joined into each item's text.
    features : bool, default=True
        Feed the text vectors to the item tower as a dense input (so items
        without interactions are embedded from their text).
    tables : bool, default=True
        Fill the item-indexed tables with the text vectors' principal components.
    row_norm : float, default=0.5
        Root-mean-square norm of the rows written into the tables.
    id_dropout : float, default=0.0
        With ``features``: the probability that a training example reads its
        item without the id embedding, so that the item tower learns to
        embed items from text alone, as it must for cold items (see
        :class:`~recx.models.TwoTowerConfig`).
    content_weight : float, default=0.0
        With ``features``: weight of a second loss that scores every item
        from its text alone against the full embeddings of the others (see
        :class:`~recx.models.TwoTowerConfig`). Set it to 1 when items
        without interactions matter. On ml-100k it raised Recall@20 on
        cold items far above the content baseline but cost some NDCG on
        the other items with scarce data (see docs/transfer.md).
    """

    encoder: str | os.PathLike[str] | TextEncoder | None = None
    columns: Sequence[str] = ("title", "genres")
    features: bool = True
    tables: bool = True
    row_norm: float = 0.5
    id_dropout: float = 0.0
    content_weight: float = 0.0
    order = 0

    def __post_init__(self) -> None:
        if not (self.features or self.tables):
            raise ValueError("TextInit with features=False and tables=False does nothing: enable at least one.")
        if not self.row_norm > 0:
            raise ValueError(f"row_norm must be > 0, got {self.row_norm!r}.")
        self._vectors: np.ndarray | None = None

    def vectors(self, train: Interactions) -> np.ndarray:
        """Return the (n_items, T) float32 text vectors of ``train``'s catalogue."""
        if self._vectors is None or len(self._vectors) != train.n_items:
            self._vectors = encode_items(train, self.encoder, columns=self.columns)
        return self._vectors

    def prepare(self, train: Interactions) -> dict[str, Any]:
        if not self.features:
            return {}
        return {"text_dim": int(self.vectors(train).shape[1]), "id_dropout": self.id_dropout, "content_weight": self.content_weight}

    def apply(self, model: TwoTowerModel, train: Interactions) -> InitReport:
        vectors = self.vectors(train)
        report = InitReport(source="text", n_items=train.n_items)
        if self.features:
            model.item_tower.text_vectors.copy_(torch.from_numpy(vectors))
        if self.tables:
            projected = torch.from_numpy(principal_components(vectors, model.config.embedding_dim, self.row_norm))
            with torch.no_grad():
                for name, table in embedding_tables(model).items():
                    if name in ITEM_TABLES:
                        table.copy_(projected.to(table.device))
                        report.groups.append(name)
        logger.info("text initialisation: %d items embedded (%d dimensions); tables set: %s", len(vectors), vectors.shape[1], report.groups or "none")
        return report

    def describe(self) -> dict[str, Any]:
        encoder = self.encoder.path if isinstance(self.encoder, TextEncoder) else self.encoder
        return {"source": "text", "encoder": None if encoder is None else str(encoder), "columns": list(self.columns), "features": self.features, "tables": self.tables, "row_norm": self.row_norm, "id_dropout": self.id_dropout, "content_weight": self.content_weight}


def _content_of(model: TwoTowerModel) -> np.ndarray | None:
    """Return the model's text vectors when it has any (n_items, T), else None."""
    if model.config.text_dim and hasattr(model.item_tower, "text_vectors"):
        vectors = model.item_tower.text_vectors.detach().cpu().numpy()
        return vectors if np.abs(vectors).sum() > 0 else None
    return None


def _copy_item_rows(model: TwoTowerModel, source_rows: dict[str, np.ndarray], alignment: Alignment, report: InitReport) -> None:
    """Write aligned source rows into the target's item-indexed tables; fill the rest."""
    content = _content_of(model)
    with torch.no_grad():
        for name, table in embedding_tables(model).items():
            if name not in ITEM_TABLES or name not in source_rows:
                continue
            rows = table.detach().cpu().numpy().copy()
            rows[alignment.target_rows] = source_rows[name][alignment.source_rows]
            rows, report.filled_by = fill_unmatched(rows, alignment.target_rows, alignment.unmatched, content)
            table.copy_(torch.from_numpy(rows).to(table.device))
            report.groups.append(name)


def _check_alignment(alignment: Alignment, key: object, n_source: int, n_target: int) -> None:
    if len(alignment) == 0:
        raise ValueError(
            f"align={key!r} matched none of the {n_target} target items to the {n_source} source items. "
            f"Check that both catalogues identify items the same way, or pass a key function of (item_id, title)."
        )


@dataclass
class VectorInit(Initializer):
    """Initialise the item-indexed tables from a table of item vectors.

    Parameters
    ----------
    vectors : ItemVectors, str or os.PathLike
        The table, or an ``.npz`` / ``.safetensors`` file (see :func:`load_vectors`).
    align : "id" or callable, default="id"
        Match vector ids to the target's item ids by equal id, or by a
        function of ``(item_id, title)`` (title is None on the vector side).
    tables : sequence of str, default=ITEM_TABLES
        Which item-indexed tables to fill.
    """

    vectors: ItemVectors | str | os.PathLike[str]
    align: str | Callable[[object, object], object] = "id"
    tables: Sequence[str] = ITEM_TABLES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tables) - set(ITEM_TABLES))
        if unknown:
            raise ValueError(f"unknown tables {unknown}: vectors can fill {list(ITEM_TABLES)}.")

    def apply(self, model: TwoTowerModel, train: Interactions) -> InitReport:
        table = self.vectors if isinstance(self.vectors, ItemVectors) else load_vectors(self.vectors)
        dim = model.config.embedding_dim
        if table.dimension != dim:
            raise ValueError(f"the item vectors have {table.dimension} dimensions but the model's embedding tables have {dim}. Set embedding_dim={table.dimension}, or project the vectors first.")
        alignment = align(item_keys(table.ids, None, self.align, side="source"), item_keys(train.items.ids, train.item_titles(), self.align, side="target"))
        _check_alignment(alignment, self.align, len(table.ids), train.n_items)
        report = InitReport(source="vectors", aligned_items=len(alignment), n_items=train.n_items)
        _copy_item_rows(model, {name: table.vectors for name in self.tables}, alignment, report)
        logger.info("vector initialisation: %d of %d items aligned; unmatched rows from %s", len(alignment), train.n_items, report.filled_by)
        return report

    def describe(self) -> dict[str, Any]:
        return {"source": "vectors", "path": None if isinstance(self.vectors, ItemVectors) else str(self.vectors), "align": self.align if isinstance(self.align, str) else "function"}


@dataclass
class RunInit(Initializer):
    """Initialise from a recx two-tower model trained on another dataset.

    Parameters
    ----------
    path : str or os.PathLike
        A run folder written by ``recx train`` or a folder written by
        :meth:`~recx.training.TwoTowerRecommender.save` (both hold
        ``model/`` and ``history/``).
    align : "id", "title" or callable, default="title"
        How source items are matched to target items: equal ids, equal
        normalised title and year (:func:`~recx.transfer.title_key`), or a
        function of ``(item_id, title)``.
    copy_mlp : bool, default=True
        Also copy the towers' MLP layers (and the text projection) whose
        shapes match.
    """

    path: str | os.PathLike[str]
    align: str | Callable[[object, object], object] = "title"
    copy_mlp: bool = True

    def _load(self) -> tuple[TwoTowerModel, Interactions]:
        from recx.training.checkpoint import load_model

        folder = Path(self.path)
        if not folder.is_dir():
            raise FileNotFoundError(f"source run not found: {folder} is not a folder. Pass a folder written by `recx train` or TwoTowerRecommender.save.")
        missing = [name for name in ("model", "history") if not (folder / name).is_dir()]
        if missing:
            raise ValueError(f"{folder} is not a recx run: it lacks {missing}. Pass a folder written by `recx train` or TwoTowerRecommender.save.")
        return load_model(folder / "model"), Interactions.load(folder / "history")

    def apply(self, model: TwoTowerModel, train: Interactions) -> InitReport:
        source, source_history = self._load()
        config, source_config = model.config, source.config
        if source_config.embedding_dim != config.embedding_dim:
            raise ValueError(
                f"the source model's embedding tables have {source_config.embedding_dim} dimensions, the target's {config.embedding_dim}. "
                f"Set embedding_dim={source_config.embedding_dim} to initialise from {self.path}."
            )
        alignment = align(
            item_keys(source_history.items.ids, source_history.item_titles(), self.align, side="source"),
            item_keys(train.items.ids, train.item_titles(), self.align, side="target"),
        )
        _check_alignment(alignment, self.align, source_history.n_items, train.n_items)
        report = InitReport(source="run", aligned_items=len(alignment), n_items=train.n_items)

        source_tables = {name: table.detach().cpu().numpy() for name, table in embedding_tables(source).items()}
        _copy_item_rows(model, {name: rows for name, rows in source_tables.items() if name in ITEM_TABLES}, alignment, report)
        self._copy_genres(model, source, source_tables, report)
        if self.copy_mlp:
            self._copy_layers(model, source, report)
        logger.info(
            "initialised from %s: %d of %d target items aligned (align=%s), unmatched rows from %s; groups %s",
            self.path,
            len(alignment),
            train.n_items,
            self.align if isinstance(self.align, str) else "function",
            report.filled_by,
            report.groups,
        )
        return report

    @staticmethod
    def _copy_genres(model: TwoTowerModel, source: TwoTowerModel, source_tables: dict[str, np.ndarray], report: InitReport) -> None:
        tables = embedding_tables(model)
        if "item_genres" not in tables or "item_genres" not in source_tables:
            return
        genre_alignment = align([_genre_key(name) for name in source.config.genre_names], [_genre_key(name) for name in model.config.genre_names])
        if len(genre_alignment) == 0:
            logger.info("no genre names shared with the source model; the genre table keeps its initial values")
            return
        with torch.no_grad():
            rows = tables["item_genres"].detach().cpu().numpy().copy()
            rows[genre_alignment.target_rows] = source_tables["item_genres"][genre_alignment.source_rows]
            rows, _ = fill_unmatched(rows, genre_alignment.target_rows, genre_alignment.unmatched, None)
            tables["item_genres"].copy_(torch.from_numpy(rows))
        report.groups.append("item_genres")

    @staticmethod
    def _copy_layers(model: TwoTowerModel, source: TwoTowerModel, report: InitReport) -> None:
        target_state = model.state_dict()
        first_layers = {f"{tower}.mlp.0.weight": tower for tower in ("user_tower", "item_tower")}
        copied: dict[str, list[str]] = {}
        skipped: list[str] = []
        for name, tensor in source.state_dict().items():
            group = _layer_group(name)
            if group is None:
                continue
            if name in target_state and target_state[name].shape == tensor.shape:
                target_state[name].copy_(tensor)
                copied.setdefault(group, []).append(name)
            elif name in first_layers and name in target_state and target_state[name].shape[0] == tensor.shape[0]:
                # The towers read different inputs (for example text on one side only):
                # copy the weights of the inputs both read, and zero the others, so the
                # target starts out computing what the source computed.
                _copy_input_columns(target_state[name], tensor, getattr(model, first_layers[name]), getattr(source, first_layers[name]), model.config.embedding_dim)
                copied.setdefault(group, []).append(name)
            else:
                skipped.append(name)
        if skipped:
            logger.info("layers not copied because the shapes differ or the target lacks them: %s", skipped)
        report.groups.extend(group for group, names in copied.items() if names)

    def describe(self) -> dict[str, Any]:
        return {"source": "run", "path": str(self.path), "align": self.align if isinstance(self.align, str) else "function", "copy_mlp": self.copy_mlp}


def _input_slots(tower: torch.nn.Module) -> list[str]:
    """Name the ``embedding_dim``-wide input blocks of a tower's first MLP layer, in order."""
    slots = list(tower.feature_names)
    if getattr(tower, "text_projection", None) is not None:
        slots.append("item_text")
    return slots


def _copy_input_columns(target: torch.Tensor, source: torch.Tensor, target_tower: torch.nn.Module, source_tower: torch.nn.Module, width: int) -> None:
    """Copy the first-layer columns of inputs both towers read; zero the target's other columns."""
    source_slots = _input_slots(source_tower)
    target.zero_()
    for position, slot in enumerate(_input_slots(target_tower)):
        if slot in source_slots:
            origin = source_slots.index(slot)
            target[:, position * width : (position + 1) * width] = source[:, origin * width : (origin + 1) * width]


def _genre_key(name: str) -> str:
    # "Children's" (ml-100k) and "Children" (ml-latest) are the same genre.
    return "".join(character for character in name.lower().replace("'s", "") if character.isalnum())


def _layer_group(parameter: str) -> str | None:
    """Map a dense-layer parameter name to its group; None for tables and buffers."""
    if parameter.startswith("user_tower.mlp."):
        return "user_mlp"
    if parameter.startswith("item_tower.mlp."):
        return "item_mlp"
    if parameter.startswith("item_tower.text_projection."):
        return "item_text"
    return None


def resolve_source(source: str | os.PathLike[str] | Initializer, *, align: str | Callable[[object, object], object] | None = None) -> Initializer:
    """Turn ``"text"``, a run folder or a vector file into an :class:`Initializer`."""
    if isinstance(source, Initializer):
        return source
    text = str(source)
    if text == "text":
        return TextInit()
    path = Path(text)
    if path.is_dir():
        return RunInit(path, align=align or "title")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return VectorInit(path, align=align or "id")
    if not path.exists():
        raise FileNotFoundError(f"initialisation source not found: {text!r} is neither 'text', an existing run folder, nor a vector file ({', '.join(VECTOR_SUFFIXES)}).")
    raise ValueError(f"cannot initialise from {text!r}: expected 'text', a recx run folder, or a vector file ({', '.join(VECTOR_SUFFIXES)}).")
