"""Match the items of a source catalogue to those of a target catalogue.

Two catalogues rarely share ids: MovieLens 100K numbers its movies 1..1682,
ml-latest-small uses other numbers for the same films. Items are matched
either by id or by a key computed from each item, such as the normalised
title and year.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Built-in alignment keys by name.
ALIGN_KEYS: tuple[str, ...] = ("id", "title")

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_PARENTHESES = re.compile(r"\([^)]*\)")
_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<article>the|a|an|les|la|le|il|el|das|der|die)$")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def title_key(title: object) -> str:
    """Normalise a movie title to ``"words year"`` for matching across catalogues.

    Lower-cases, strips accents, moves a trailing article to the front
    ("Usual Suspects, The (1995)" becomes "the usual suspects 1995"), drops
    alternative titles in parentheses and punctuation. Returns "" for an
    empty or missing title.

    Examples
    --------
    >>> title_key("Usual Suspects, The (1995)")
    'the usual suspects 1995'
    >>> title_key("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)")
    'shanghai triad 1995'
    """
    if title is None or (isinstance(title, float) and np.isnan(title)):
        return ""
    text = unicodedata.normalize("NFKD", str(title)).encode("ascii", "ignore").decode("ascii").strip().lower()
    year = ""
    match = _YEAR.search(text)
    if match:
        year = match.group(1)
        text = text[: match.start()]
    text = _PARENTHESES.sub(" ", text).strip()
    article = _TRAILING_ARTICLE.match(text)
    if article:
        text = f"{article.group('article')} {article.group('rest')}"
    words = _NON_WORD.sub(" ", text).split()
    if not words:
        return ""
    return " ".join(words + ([year] if year else []))


@dataclass(frozen=True)
class Alignment:
    """Pairs of matched rows between a source and a target catalogue.

    Attributes
    ----------
    target_rows, source_rows : np.ndarray of shape (m,), int64
        ``target_rows[i]`` and ``source_rows[i]`` are the same item.
    n_target : int
        Size of the target catalogue.
    """

    target_rows: np.ndarray
    source_rows: np.ndarray
    n_target: int

    def __len__(self) -> int:
        return len(self.target_rows)

    @property
    def unmatched(self) -> np.ndarray:
        """Target rows without a source row, int64."""
        mask = np.ones(self.n_target, dtype=bool)
        mask[self.target_rows] = False
        return np.flatnonzero(mask)


def align(source_keys: Sequence[object], target_keys: Sequence[object]) -> Alignment:
    """Match target items to source items with equal, non-empty keys.

    When several source items share a key, the first one is used.
    """
    first: dict[object, int] = {}
    for row, key in enumerate(source_keys):
        if key != "" and key is not None and key not in first:
            first[key] = row
    pairs = [(row, first[key]) for row, key in enumerate(target_keys) if key in first and key != ""]
    target_rows = np.array([pair[0] for pair in pairs], dtype=np.int64)
    source_rows = np.array([pair[1] for pair in pairs], dtype=np.int64)
    return Alignment(target_rows, source_rows, len(target_keys))


def item_keys(ids: np.ndarray, titles: np.ndarray | None, key: str | Callable[[object, object], object], *, side: str) -> list[object]:
    """Compute the alignment key of each item of one catalogue.

    Parameters
    ----------
    ids : np.ndarray of shape (n,)
        External item ids.
    titles : np.ndarray of shape (n,) or None
        Item titles, needed by ``key="title"``.
    key : "id", "title" or callable
        A callable receives ``(item_id, title)`` and returns a hashable key;
        an empty string means "no key".
    side : str
        "source" or "target", used in error messages.
    """
    if key == "id":
        return [_plain(value) for value in ids.tolist()]
    if key == "title":
        if titles is None:
            raise ValueError(f"align='title' needs item titles, but the {side} catalogue has none. Use align='id' or pass a key function.")
        return [title_key(title) for title in titles.tolist()]
    if callable(key):
        titles_list = titles.tolist() if titles is not None else [None] * len(ids)
        return [key(item, title) for item, title in zip(ids.tolist(), titles_list, strict=True)]
    raise ValueError(f"invalid align {key!r}: expected one of {list(ALIGN_KEYS)} or a function of (item_id, title).")


def _plain(value: object) -> object:
    # Ids read from JSON may be int while the target's are numpy ints or str digits;
    # comparing their string forms matches 42, np.int64(42) and "42".
    return str(value)
