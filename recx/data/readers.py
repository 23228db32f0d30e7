"""Read interaction logs from CSV, TSV and Parquet files into :class:`Interactions`.

Formats are chosen by file extension:

- ``.csv`` and ``.tsv``, optionally compressed as ``.gz``, ``.bz2``, ``.zip``,
  ``.xz`` or ``.zst`` (pandas decompresses them);
- ``.parquet`` and ``.pq``.

Other extensions, ``.txt`` and ``.dat`` included, are not guessed because
their separator varies from file to file: pass ``format="csv"`` with ``sep=``
to :func:`read_interactions`, or call :func:`read_csv` directly.

Id columns
----------
CSV files carry no types, so ids are read as text and converted by
``id_dtype``:

- ``"auto"`` (default): a column becomes int64 when every id is a plain
  integer literal (``"7"``, ``"-3"``; not ``"007"``, ``"+7"`` or ``"7.0"``).
  A column where no id is such a literal stays str, so ``"007"`` keeps its
  zeros. A column that mixes both kinds raises, because that usually means a
  stray row.
- ``"str"``: every id stays the text written in the file.
- ``"int"``: every id must parse as an integer (``"007"`` and ``"7.0"`` become 7).

Parquet columns are typed, so ``"auto"`` keeps the stored type there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as parquet

from recx.data.interactions import DuplicatePolicy, Interactions

logger = logging.getLogger(__name__)

IdDtype = Literal["auto", "int", "str"]
ID_DTYPES: tuple[str, ...] = ("auto", "int", "str")

FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet")
_FORMAT_BY_EXTENSION = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
# Suffixes that pandas.read_csv decompresses on its own (compression="infer").
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")

# Plain integer literals: an optional minus sign and digits without leading zeros.
_CANONICAL_INTEGER = r"-?(?:0|[1-9][0-9]*)"


def read_interactions(path: str | os.PathLike[str], format: str | None = None, **options: Any) -> Interactions:
    """Read an interaction log, choosing the reader by file extension or ``format``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv``, ``.tsv`` (optionally compressed) or ``.parquet`` file.
    format : {"csv", "tsv", "parquet"} or None, default=None
        Reader to use regardless of the extension. None chooses by extension.
        ``"tsv"`` is :func:`read_csv` with ``sep="\\t"`` unless ``sep`` is given.
    **options
        Passed to :func:`read_csv` or :func:`read_parquet`.

    Returns
    -------
    Interactions

    Raises
    ------
    ValueError
        If ``format`` is unknown, or None and the extension is not supported.
    """
    file = _check_file(path)
    if format is None:
        format = _format_from_extension(file)
    elif format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: expected one of {list(FORMATS)}.")
    if format == "parquet":
        return read_parquet(file, **options)
    if format == "tsv":
        options.setdefault("sep", "\t")
    return read_csv(file, **options)


def read_csv(
    path: str | os.PathLike[str],
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    id_dtype: IdDtype = "auto",
    min_weight: float | None = None,
    binarize: bool = False,
    duplicates: DuplicatePolicy = "sum",
    item_metadata: pd.DataFrame | None = None,
) -> Interactions:
    """Read a delimited text file with one interaction per row.

    Parameters
    ----------
    path : str or os.PathLike
        The file; ``.gz``, ``.bz2``, ``.zip``, ``.xz`` and ``.zst`` files are
        decompressed.
    user_col, item_col : str, default="user_id", "item_id"
        Columns of external user and item ids.
    weight_col : str or None, default=None
        Column of non-negative weights (ratings, counts). None gives every
        interaction weight 1.
    timestamp_col : str or None, default=None
        Column of event times: seconds since the epoch or dates.
    sep : str or None, default=None
        Field separator. None means ``"\\t"`` for ``.tsv`` files and ``","``
        otherwise.
    names : list of str or None, default=None
        Column names for a file without a header row. None reads the names
        from the first row.
    encoding : str, default="utf-8"
        Text encoding of the file, for example ``"latin-1"``.
    id_dtype : {"auto", "int", "str"}, default="auto"
        How id text becomes ids (see the module documentation).
    min_weight, binarize, duplicates, item_metadata
        As in :meth:`Interactions.from_dataframe`.

    Returns
    -------
    Interactions

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If ``path`` is missing or is a folder.
    ValueError
        If the file is empty, cannot be decoded with ``encoding``, lacks a
        requested column, has missing ids or mixes integer and text ids
        under ``id_dtype="auto"``.
    """
    file = _check_file(path)
    _check_id_dtype(id_dtype)
    if sep is None:
        sep = "\t" if _format_from_extension(file, strict=False) == "tsv" else ","
    columns = _requested_columns(user_col, item_col, weight_col, timestamp_col)
    header_options: dict[str, Any] = {"header": None, "names": names} if names is not None else {"header": 0}

    # Step 1: read the header alone, so a misnamed column is reported with the
    # names the file does have before the whole file is parsed.
    available = list(_parse_text(file, encoding, sep=sep, nrows=0, **header_options).columns)
    _check_columns(columns, available, file, header_is_data=names is None and _looks_like_data(available))

    # Step 2: read only the needed columns. Ids are read as text and converted
    # below, because pandas would turn "007" into 7. Only empty fields count as
    # missing, so an id spelled "NA" or "null" stays an id.
    needed_columns = list(columns.values())
    frame = _parse_text(
        file,
        encoding,
        sep=sep,
        usecols=needed_columns,
        dtype={user_col: str, item_col: str},
        keep_default_na=False,
        na_values={column: [""] for column in needed_columns},
        skipinitialspace=True,
        **header_options,
    )
    if len(frame) == 0:
        raise ValueError(f"no interactions: {file} has a header row but no data rows.")

    # Step 3: convert ids, then hand over to the shared builder.
    first_data_line = 1 if names is not None else 2
    for option in ("user_col", "item_col"):
        column = columns[option]
        frame[column] = _text_ids_to_array(frame[column], column=column, option=option, id_dtype=id_dtype, file=file, first_data_line=first_data_line)
    return _build(frame, columns, file, min_weight=min_weight, binarize=binarize, duplicates=duplicates, item_metadata=item_metadata)


def read_parquet(
    path: str | os.PathLike[str],
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    id_dtype: IdDtype = "auto",
    min_weight: float | None = None,
    binarize: bool = False,
    duplicates: DuplicatePolicy = "sum",
    item_metadata: pd.DataFrame | None = None,
) -> Interactions:
    """Read a Parquet file with one interaction per row.

    Parameters are those of :func:`read_csv` without the text options. With
    ``id_dtype="auto"`` id columns keep their stored type: integer columns
    give int ids and string columns give str ids, even when the strings
    look like numbers.

    Returns
    -------
    Interactions

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If ``path`` is missing or is a folder.
    ValueError
        If the file is not Parquet, has no rows or lacks a requested column.
    """
    file = _check_file(path)
    _check_id_dtype(id_dtype)
    columns = _requested_columns(user_col, item_col, weight_col, timestamp_col)
    try:
        available = list(parquet.read_schema(file).names)
    except (pyarrow.ArrowException, OSError) as error:
        raise ValueError(f"could not read {file} as Parquet ({error}). Check that it is a Parquet file, or read a text file with read_csv.") from error
    _check_columns(columns, available, file, header_is_data=False)

    frame = pd.read_parquet(file, columns=list(dict.fromkeys(columns.values())))
    if len(frame) == 0:
        raise ValueError(f"no interactions: {file} has 0 rows.")
    for option in ("user_col", "item_col"):
        column = columns[option]
        frame[column] = _typed_ids_to_array(frame[column], column=column, option=option, id_dtype=id_dtype, file=file)
    return _build(frame, columns, file, min_weight=min_weight, binarize=binarize, duplicates=duplicates, item_metadata=item_metadata)


# ------------------------------------------------------------------ helpers


def _format_from_extension(file: Path, *, strict: bool = True) -> str | None:
    """Return the format named by the file's extension, ignoring a compression suffix."""
    suffixes = [suffix.lower() for suffix in file.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in _COMPRESSION_SUFFIXES
    if compressed:
        suffixes = suffixes[:-1]
    extension = suffixes[-1] if suffixes else ""
    format = _FORMAT_BY_EXTENSION.get(extension)
    if format == "parquet" and compressed:
        # Parquet compresses its pages itself, and pyarrow cannot read a file wrapped in gzip.
        format = None
    if format is None and strict:
        extension_text = "".join(file.suffixes) or "(none)"
        raise ValueError(
            f"cannot choose a reader for {file}: extension {extension_text} is not supported. "
            f"Supported extensions are .csv and .tsv (optionally with {', '.join(_COMPRESSION_SUFFIXES)}), .parquet and .pq. "
            f"Pass format='csv' (with sep=',' or sep='\\t' as the file needs), format='tsv' or format='parquet' to choose a reader."
        )
    return format


def _check_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path, raising if it is missing or a folder."""
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(f"{file} is a folder, expected an interaction file. Pass the path of one file, or use load_movielens(path) for a MovieLens folder.")
    if not file.exists():
        where = "" if file.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise FileNotFoundError(f"interaction file not found: {file}{where}. Check the path.")
    return file


def _check_id_dtype(id_dtype: str) -> None:
    if id_dtype not in ID_DTYPES:
        raise ValueError(f"invalid id_dtype {id_dtype!r}: expected one of {list(ID_DTYPES)}.")


def _requested_columns(user_col: str, item_col: str, weight_col: str | None, timestamp_col: str | None) -> dict[str, str]:
    """Map each column option that is set to its column name."""
    options = {"user_col": user_col, "item_col": item_col, "weight_col": weight_col, "timestamp_col": timestamp_col}
    return {option: column for option, column in options.items() if column is not None}


def _looks_like_data(columns: list[Any]) -> bool:
    """Return whether every header name parses as a number, as when a file has no header row."""
    return bool(columns) and all(_is_number(str(column)) for column in columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_columns(columns: dict[str, str], available: list[Any], file: Path, *, header_is_data: bool) -> None:
    """Raise naming the first requested column that the file lacks and the columns it has."""
    for option, column in columns.items():
        if column in available:
            continue
        hint = f" Pass {option}=<name> to choose another column."
        if header_is_data:
            hint += " The first row looks like data: if the file has no header row, pass names=[...] with one name per column."
        raise ValueError(f"column {column!r} ({option}) not found in {file}. The file has columns {available}.{hint}")


def _parse_text(file: Path, encoding: str, **options: Any) -> pd.DataFrame:
    """Call pandas.read_csv, turning decoding and parsing failures into errors that name the file and the fix."""
    try:
        return pd.read_csv(file, encoding=encoding, **options)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"could not decode {file} as {encoding} ({error.reason}: byte 0x{error.object[error.start]:02x}). "
            f"Pass the file's encoding, for example encoding='latin-1'."
        ) from error
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"no interactions: {file} is empty. Check that the file was written completely.") from error
    except pd.errors.ParserError as error:
        raise ValueError(f"could not parse {file}: {error}. Check the separator (sep=) and quoting.") from error


def _text_ids_to_array(values: pd.Series, *, column: str, option: str, id_dtype: str, file: Path, first_data_line: int) -> np.ndarray:
    """Convert one column of id text to an int64 or object (str) array of shape (n_rows,) by ``id_dtype``."""
    missing = values.isna().to_numpy()
    if missing.any():
        line = int(np.flatnonzero(missing)[0]) + first_data_line
        raise ValueError(f"column {column!r} ({option}) in {file} has {int(missing.sum())} empty ids, first on line {line}. Fill or drop those rows.")
    if id_dtype == "str":
        return values.to_numpy(dtype=object)

    # Decide on the distinct ids only: a log repeats each id many times.
    codes, uniques = pd.factorize(values)
    texts = pd.Series(np.asarray(uniques, dtype=object), dtype=object)

    def line_of(unique_mask: np.ndarray) -> int:
        return int(np.flatnonzero(unique_mask[codes])[0]) + first_data_line

    if id_dtype == "int":
        numbers = pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64)
        invalid = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if invalid.any():
            example = texts[invalid].iloc[0]
            raise ValueError(
                f"column {column!r} ({option}) in {file} has ids that are not integers, for example {example!r} on line {line_of(invalid)}. "
                f"Pass id_dtype='str' to keep ids as text."
            )
        try:
            # int() on the text is exact for any length, but float64 would round ids past 2**53.
            integers = texts.astype(np.int64).to_numpy()
        except ValueError:
            # Literals such as "7.0" or "1e3", already checked to be integral above.
            integers = numbers.astype(np.int64)
        except OverflowError as error:
            raise ValueError(f"column {column!r} ({option}) in {file} has ids too large for int64. Pass id_dtype='str' to keep them as text.") from error
        return integers[codes]

    canonical = texts.str.fullmatch(_CANONICAL_INTEGER).to_numpy(dtype=bool)
    if not canonical.any():
        return values.to_numpy(dtype=object)
    if not canonical.all():
        raise ValueError(
            f"column {column!r} ({option}) in {file} mixes integer ids and other text, "
            f"for example {int(texts[canonical].iloc[0])} and {texts[~canonical].iloc[0]!r} on line {line_of(~canonical)}. "
            f"Pass id_dtype='str' to read every id as text, or id_dtype='int' if all ids are integers written in different ways (such as '007')."
        )
    try:
        integers = texts.astype(np.int64).to_numpy()
    except OverflowError:
        # Integer literals beyond int64 (long hashes, for example) stay text.
        return values.to_numpy(dtype=object)
    return integers[codes]


def _typed_ids_to_array(values: pd.Series, *, column: str, option: str, id_dtype: str, file: Path) -> np.ndarray:
    """Convert one typed id column (from Parquet) to an array of shape (n_rows,) by ``id_dtype``."""
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(f"column {column!r} ({option}) in {file} has {int(missing.sum())} missing ids, first at row {row}. Drop or fill those rows.")
    if id_dtype == "auto":
        return values.to_numpy()
    if id_dtype == "str":
        if pd.api.types.is_float_dtype(values) and np.all(values.to_numpy() == np.round(values.to_numpy())):
            # Integer ids stored as floats (as in a column that once had nulls) become
            # int first, so that 7.0 gives the id "7" and not "7.0".
            values = values.astype(np.int64)
        return values.astype(str).to_numpy(dtype=object)
    numbers = pd.to_numeric(values, errors="coerce")
    as_float = numbers.to_numpy(dtype=np.float64)
    invalid = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if invalid.any():
        row = int(np.flatnonzero(invalid)[0])
        raise ValueError(f"column {column!r} ({option}) in {file} has ids that are not integers, for example {values.iloc[row]!r} at row {row}. Pass id_dtype='auto' or 'str'.")
    return numbers.to_numpy(dtype=np.int64)


def _build(frame: pd.DataFrame, columns: dict[str, str], file: Path, **options: Any) -> Interactions:
    """Build interactions from a parsed frame, naming the file in any validation error."""
    logger.debug("read %d rows from %s", len(frame), file)
    try:
        return Interactions.from_dataframe(
            frame,
            user_col=columns["user_col"],
            item_col=columns["item_col"],
            weight_col=columns.get("weight_col"),
            timestamp_col=columns.get("timestamp_col"),
            **options,
        )
    except (ValueError, TypeError) as error:
        raise type(error)(f"{file}: {error}") from error
