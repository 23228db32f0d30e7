"""Named datasets: the embedded MovieLens copy, MovieLens folders and interaction files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recx.data.interactions import Interactions
from recx.data.movielens import load_movielens
from recx.data.readers import read_csv, read_parquet
from recx.data.sequences import read_sequences

# Dataset name to one-line description, for listing the names to users.
DATASETS: dict[str, str] = {
    "movielens-latest-small": "MovieLens latest-small (September 2018): 100,836 ratings by 610 users of 9,724 movies. Embedded in recx; path= loads another copy.",
    "movielens-100k": "MovieLens 100K: 100,000 ratings by 943 users of 1,682 movies. Needs path= to the folder with u.data and u.item.",
    "movielens": "Any MovieLens release (100K, 1M, latest, 20M, 25M), detected from the files in the folder given as path=.",
    "csv": "A CSV or TSV interaction log at path=; options go to recx.data.read_csv.",
    "parquet": "A Parquet interaction log at path=; options go to recx.data.read_parquet.",
    "amazon-beauty": "Amazon Beauty, 5-core, as preprocessed for S3-Rec (CIKM 2020): 198,502 interactions by 22,363 users of 12,101 items. Needs path= to Beauty.txt.",
    "amazon-sports": "Amazon Sports and Outdoors, 5-core, as preprocessed for S3-Rec (CIKM 2020): 296,337 interactions by 35,598 users of 18,357 items. Needs path= to Sports_and_Outdoors.txt.",
}

# Path of the embedded copy inside the package, relative to this file.
_EMBEDDED_FOLDER = Path(__file__).parent / "embedded" / "ml-latest-small"


def embedded_dataset_path() -> Path:
    """Return the folder of the MovieLens latest-small copy shipped with recx.

    Raises
    ------
    FileNotFoundError
        If the installed package lacks the embedded files.
    """
    if not (_EMBEDDED_FOLDER / "ratings.csv").is_file():
        raise FileNotFoundError(
            f"the embedded MovieLens copy is missing from {_EMBEDDED_FOLDER}, because this recx install lacks its package data. "
            f"Reinstall recx, or pass path= to an ml-latest-small folder."
        )
    return _EMBEDDED_FOLDER


def load_dataset(name: str = "movielens-latest-small", path: str | os.PathLike[str] | None = None, **options: Any) -> Interactions:
    """Load a dataset by name.

    Parameters
    ----------
    name : str, default="movielens-latest-small"
        One of the keys of :data:`DATASETS`.
    path : str, os.PathLike or None, default=None
        Folder or file to read. Only ``"movielens-latest-small"`` has a
        default, the embedded copy.
    **options
        Passed to the loader: :func:`~recx.data.load_movielens` for the
        MovieLens names (``min_rating``, ``binarize``, ``include_unrated``),
        :func:`~recx.data.read_csv` or :func:`~recx.data.read_parquet` for
        ``"csv"`` and ``"parquet"``, :func:`~recx.data.read_sequences` for
        the Amazon names.

    Returns
    -------
    Interactions

    Raises
    ------
    ValueError
        If ``name`` is unknown, or ``path`` is missing for a dataset that
        needs one.

    Examples
    --------
    >>> interactions = load_dataset()
    >>> interactions.n_users, interactions.n_items, interactions.nnz
    (610, 9724, 100836)
    """
    loaders: dict[str, Callable[..., Interactions]] = {
        "movielens-latest-small": _load_latest_small,
        "movielens-100k": _load_100k,
        "movielens": _load_any_movielens,
        "csv": _load_csv,
        "parquet": _load_parquet,
        "amazon-beauty": _load_amazon_beauty,
        "amazon-sports": _load_amazon_sports,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}: expected one of {list(DATASETS)}.")
    return loaders[name](path, **options)


def _require_path(name: str, path: str | os.PathLike[str] | None, target: str, example: str) -> Path:
    """Return ``path`` as a Path, raising with what it must point to if it is None."""
    if path is None:
        raise ValueError(f"dataset {name!r} needs a path: pass path= to {target}, for example load_dataset({name!r}, path={example!r}).")
    return Path(path)


def _load_latest_small(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    folder = embedded_dataset_path() if path is None else Path(path)
    return load_movielens(folder, layout="latest", **options)


def _load_100k(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    folder = _require_path("movielens-100k", path, "a folder with u.data and u.item (the unpacked ml-100k release)", "data/ml-100k")
    return load_movielens(folder, layout="100k", **options)


def _load_any_movielens(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    folder = _require_path("movielens", path, "an unpacked MovieLens release folder", "data/ml-1m")
    return load_movielens(folder, **options)


def _load_csv(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    return read_csv(_require_path("csv", path, "a CSV or TSV file", "interactions.csv"), **options)


def _load_parquet(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    return read_parquet(_require_path("parquet", path, "a Parquet file", "interactions.parquet"), **options)


def _load_amazon_beauty(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    file = _require_path("amazon-beauty", path, "the S3-Rec sequence file Beauty.txt", "data/s3rec/Beauty.txt")
    return read_sequences(file, **options)


def _load_amazon_sports(path: str | os.PathLike[str] | None, **options: Any) -> Interactions:
    file = _require_path("amazon-sports", path, "the S3-Rec sequence file Sports_and_Outdoors.txt", "data/s3rec/Sports_and_Outdoors.txt")
    return read_sequences(file, **options)
