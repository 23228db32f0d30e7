"""Load MovieLens releases from their original folders.

Three file layouts of the GroupLens releases are recognised:

- ``100k``: ``u.data`` (tab-separated ratings) and ``u.item`` (``|``-separated
  movies with 19 genre flags), latin-1, no header rows.
- ``latest`` (also 20M and 25M): ``ratings.csv`` and ``movies.csv``, UTF-8,
  with header rows.
- ``1m``: ``ratings.dat`` and ``movies.dat``, ``::``-separated, latin-1, no
  header rows.

Ratings become interaction weights and timestamps are seconds since the
epoch. Item metadata is indexed by movie id with ``title`` (str),
``genres`` (list of str) and ``year`` (nullable Int64, from the title).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recx.data.interactions import Interactions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Layout:
    """File names and description of one MovieLens release format."""

    name: str
    ratings_file: str
    movies_file: str
    description: str


_LAYOUTS: tuple[_Layout, ...] = (
    _Layout("100k", "u.data", "u.item", "MovieLens 100K"),
    _Layout("latest", "ratings.csv", "movies.csv", "MovieLens latest, 20M or 25M"),
    _Layout("1m", "ratings.dat", "movies.dat", "MovieLens 1M"),
)
LAYOUTS: tuple[str, ...] = tuple(layout.name for layout in _LAYOUTS)

# Genre columns of u.item in file order, as listed in u.genre of the 100K
# release. They are used when u.genre is absent.
GENRES_100K: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Genre labels that mean "no genre". 100K flags "unknown", and later releases write "(no genres listed)".
_NO_GENRE_LABELS = frozenset({"unknown", "(no genres listed)"})

# The release year is the last "(YYYY)" in a title, as in "Toy Story (1995)".
# A range "(2006–2007)" gives 2006, and "... (1995) (V)" gives 1995.
_YEAR_PATTERN = r".*\((\d{4})(?:[-–]\d{4})?\)"


def load_movielens(
    path: str | os.PathLike[str],
    *,
    layout: str | None = None,
    min_rating: float | None = None,
    binarize: bool = False,
    include_unrated: bool = False,
) -> Interactions:
    """Load a MovieLens folder as interactions with ratings, timestamps and movie metadata.

    Parameters
    ----------
    path : str or os.PathLike
        The release folder, for example ``ml-100k`` or ``ml-latest-small``.
    layout : {"100k", "latest", "1m"} or None, default=None
        Expected layout. None detects it from the file names in the folder.
    min_rating : float or None, default=None
        Drop ratings below this value, for example 4.0 to keep only positive
        feedback.
    binarize : bool, default=False
        Give every kept rating weight 1.
    include_unrated : bool, default=False
        Add movies that appear in the movies file but were never rated to the
        catalogue, as items without interactions. By default the catalogue is
        the set of rated movies.

    Returns
    -------
    Interactions
        Weights are the ratings (float32), ``timestamps`` are seconds since
        the epoch, and ``item_metadata`` has ``title``, ``genres`` and
        ``year`` columns. If a (user, movie) pair is rated twice, the later
        rating is kept.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or contains none of the known layouts.
    ValueError
        If ``layout`` is unknown or a file does not parse.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"MovieLens folder not found: {folder}. Pass the folder of an unpacked MovieLens release, such as ml-100k.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, but load_movielens expects the folder that contains it ({folder.parent}).")
    chosen = _detect_layout(folder) if layout is None else _check_layout(folder, layout)

    ratings_file, movies_file = folder / chosen.ratings_file, folder / chosen.movies_file
    if chosen.name == "100k":
        ratings, movies = _read_ratings_100k(ratings_file), _read_movies_100k(movies_file, folder / "u.genre")
    elif chosen.name == "latest":
        ratings, movies = _read_ratings_latest(ratings_file), _read_movies_latest(movies_file)
    else:
        ratings, movies = _read_ratings_1m(ratings_file), _read_movies_1m(movies_file)
    logger.info("read %s from %s: %d ratings, %d movies", chosen.description, folder, len(ratings), len(movies))

    return Interactions.from_dataframe(
        ratings,
        user_col="user_id",
        item_col="item_id",
        weight_col="rating",
        timestamp_col="timestamp",
        min_weight=min_rating,
        binarize=binarize,
        duplicates="last",
        item_metadata=movies,
        include_metadata_items=include_unrated,
    )


def _detect_layout(folder: Path) -> _Layout:
    """Return the first layout whose two files exist in ``folder``, or raise listing what was looked for."""
    for layout in _LAYOUTS:
        if (folder / layout.ratings_file).is_file() and (folder / layout.movies_file).is_file():
            return layout
    expected = "; ".join(f"{layout.ratings_file} and {layout.movies_file} ({layout.description})" for layout in _LAYOUTS)
    contents = sorted(entry.name for entry in folder.iterdir())
    listed = contents[:10] + (["..."] if len(contents) > 10 else [])
    raise FileNotFoundError(f"no MovieLens layout found in {folder}: expected {expected}. The folder contains {listed}.")


def _check_layout(folder: Path, name: str) -> _Layout:
    """Return the layout called ``name``, raising if it is unknown or its files are missing."""
    layouts = {layout.name: layout for layout in _LAYOUTS}
    if name not in layouts:
        raise ValueError(f"unknown MovieLens layout {name!r}: expected one of {list(layouts)}, or None to detect it.")
    layout = layouts[name]
    missing = [file for file in (layout.ratings_file, layout.movies_file) if not (folder / file).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a {layout.description} folder: {' and '.join(missing)} not found. Pass the folder that contains {layout.ratings_file} and {layout.movies_file}.")
    return layout


def _read_table(file: Path, **options: object) -> pd.DataFrame:
    """Call pandas.read_csv, naming the file when parsing fails."""
    try:
        return pd.read_csv(file, **options)  # type: ignore[call-overload]
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"could not parse {file} as a MovieLens file: {error}") from error


_RATING_DTYPES = {"user_id": np.int64, "item_id": np.int64, "rating": np.float64, "timestamp": np.int64}


def _read_ratings_100k(file: Path) -> pd.DataFrame:
    return _read_table(file, sep="\t", header=None, names=list(_RATING_DTYPES), dtype=_RATING_DTYPES)


def _read_ratings_latest(file: Path) -> pd.DataFrame:
    columns = {"userId": "user_id", "movieId": "item_id", "rating": "rating", "timestamp": "timestamp"}
    header = list(_read_table(file, nrows=0).columns)
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(f"{file} lacks the MovieLens columns {missing}. Its header is {header}, expected userId,movieId,rating,timestamp.")
    frame = _read_table(file, usecols=list(columns), dtype={name: _RATING_DTYPES[short] for name, short in columns.items()})
    return frame.rename(columns=columns)


def _read_ratings_1m(file: Path) -> pd.DataFrame:
    # NOTE: the 1M reader is tested on a hand-written sample in the 1M format,
    # not on the release files.
    # The separator is "::". pandas accepts multi-character separators only in
    # its slow Python engine, so split on ":" and keep every other field.
    frame = _read_table(file, sep=":", header=None, usecols=[0, 2, 4, 6], encoding="latin-1")
    frame.columns = list(_RATING_DTYPES)
    return frame.astype(_RATING_DTYPES)


def _read_movies_100k(file: Path, genre_file: Path) -> pd.DataFrame:
    genre_names = _read_genre_names_100k(genre_file) if genre_file.is_file() else list(GENRES_100K)
    # QUOTE_NONE because titles may contain a literal '"' that is not CSV quoting.
    frame = _read_table(file, sep="|", header=None, encoding="latin-1", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    n_fields = 5 + len(genre_names)
    if frame.shape[1] != n_fields:
        raise ValueError(f"{file} has {frame.shape[1]} fields per row, expected {n_fields}: id, title, release date, video release date, IMDb URL and {len(genre_names)} genre flags.")
    flags = frame.iloc[:, 5:].to_numpy(dtype=np.int64).astype(bool)
    genres = [[genre_names[j] for j in np.flatnonzero(row)] for row in flags]
    return _movies_frame(frame[0].astype(np.int64), frame[1], genres)


def _read_genre_names_100k(file: Path) -> list[str]:
    """Return the genre names of u.genre ("name|column" lines) in column order."""
    pairs = []
    for line in file.read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, column = line.rpartition("|")
            pairs.append((int(column), name))
    return [name for _, name in sorted(pairs)]


def _read_movies_latest(file: Path) -> pd.DataFrame:
    frame = _read_table(file, dtype={"movieId": np.int64, "title": str, "genres": str}, keep_default_na=False)
    genres = [label.split("|") for label in frame["genres"]]
    return _movies_frame(frame["movieId"], frame["title"], genres)


def _read_movies_1m(file: Path) -> pd.DataFrame:
    # Titles contain ":" (as in "Star Wars: Episode IV"), so splitting on ":"
    # as for ratings.dat would break them. The file is small, so split each line on "::".
    ids, titles, genres = [], [], []
    for number, line in enumerate(file.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3:
            raise ValueError(f"could not parse {file} line {number}: expected 'MovieID::Title::Genres', got {line!r}.")
        ids.append(int(fields[0]))
        titles.append(fields[1])
        genres.append(fields[2].split("|"))
    return _movies_frame(pd.Series(ids, dtype=np.int64), pd.Series(titles, dtype=object), genres)


def _movies_frame(movie_ids: pd.Series, titles: pd.Series, genres: list[list[str]]) -> pd.DataFrame:
    """Assemble the metadata frame: index movie id, columns title, genres and year."""
    titles = titles.astype(str).str.strip()
    years = titles.str.extract(_YEAR_PATTERN, expand=False).astype("Int64")
    cleaned = [[genre for genre in labels if genre and genre not in _NO_GENRE_LABELS] for labels in genres]
    index = pd.Index(movie_ids.to_numpy(dtype=np.int64), name="item_id")
    return pd.DataFrame({"title": titles.to_numpy(dtype=object), "genres": cleaned, "year": years.to_numpy()}, index=index).astype({"year": "Int64"})
