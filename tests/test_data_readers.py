"""Tests of the file readers, the MovieLens loader and the dataset registry."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pandas as pd
import pytest

import recx.data
from recx.data import DATASETS, embedded_dataset_path, load_dataset, load_movielens, read_csv, read_interactions, read_parquet

LOG_CSV = "user_id,item_id,rating,time\n1,10,4,100\n1,20,5,200\n2,10,3,300\n"


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


class TestReadCsv:
    def test_weights_timestamps_and_ids(self, tmp_path):
        """A CSV log gives int ids, rating weights and timestamps aligned with entries."""
        x = read_csv(_write(tmp_path / "log.csv", LOG_CSV), weight_col="rating", timestamp_col="time")
        assert (x.n_users, x.n_items, x.nnz) == (2, 2, 3)
        assert x.users.kind == "int"
        assert x.items.ids.tolist() == [10, 20]
        frame = x.to_dataframe()
        assert frame.values.tolist() == [[1, 10, 4.0, 100.0], [1, 20, 5.0, 200.0], [2, 10, 3.0, 300.0]]

    def test_tsv_separator_from_extension(self, tmp_path):
        """A .tsv file is read with tab separators without passing sep."""
        x = read_csv(_write(tmp_path / "log.tsv", LOG_CSV.replace(",", "\t")), weight_col="rating")
        assert x.nnz == 3
        assert x.matrix.data.tolist() == [4.0, 5.0, 3.0]

    def test_gzip_csv(self, tmp_path):
        """A .csv.gz file is decompressed and read as CSV."""
        path = tmp_path / "log.csv.gz"
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(LOG_CSV)
        assert read_interactions(path).nnz == 3

    def test_leading_zero_ids_stay_text(self, tmp_path):
        """Ids written with leading zeros keep them, as str ids."""
        x = read_csv(_write(tmp_path / "log.csv", "user_id,item_id\nu1,007\nu1,010\n"))
        assert x.items.kind == "str"
        assert x.items.ids.tolist() == ["007", "010"]

    def test_id_dtype_int_parses_padded(self, tmp_path):
        """id_dtype='int' reads '007' and '7.0' as the integer 7."""
        x = read_csv(_write(tmp_path / "log.csv", "user_id,item_id\n1,007\n2,7.0\n3,8\n"), id_dtype="int")
        assert x.items.ids.tolist() == [7, 8]
        assert x.item_counts().tolist() == [2, 1]

    def test_id_dtype_str_keeps_digits_as_text(self, tmp_path):
        """id_dtype='str' keeps numeric-looking ids as strings."""
        x = read_csv(_write(tmp_path / "log.csv", LOG_CSV), id_dtype="str")
        assert x.users.ids.tolist() == ["1", "2"]

    def test_na_like_ids_are_ids(self, tmp_path):
        """Text such as 'NA' or 'null' in an id column is an id, not a missing value."""
        x = read_csv(_write(tmp_path / "log.csv", "user_id,item_id\nNA,null\nNA,x\n"))
        assert x.users.ids.tolist() == ["NA"]
        assert x.items.ids.tolist() == ["null", "x"]

    def test_mixed_ids_raise(self, tmp_path):
        """A column mixing integer and text ids raises with an example of each, the line and the fix."""
        path = _write(tmp_path / "log.csv", "user_id,item_id\n1,17\n1,abc\n")
        expected = f"column 'item_id' (item_col) in {path} mixes integer ids and other text, for example 17 and 'abc' on line 3. Pass id_dtype='str'"
        with pytest.raises(ValueError, match=re.escape(expected)):
            read_csv(path)
        assert read_csv(path, id_dtype="str").items.ids.tolist() == ["17", "abc"]

    def test_id_dtype_int_rejects_text(self, tmp_path):
        """id_dtype='int' raises on an id that is not an integer."""
        path = _write(tmp_path / "log.csv", "user_id,item_id\n1,17\n1,abc\n")
        with pytest.raises(ValueError, match=re.escape("has ids that are not integers, for example 'abc' on line 3.")):
            read_csv(path, id_dtype="int")

    def test_invalid_id_dtype(self, tmp_path):
        """An unknown id_dtype lists the valid ones."""
        with pytest.raises(ValueError, match=re.escape("invalid id_dtype 'float': expected one of ['auto', 'int', 'str'].")):
            read_csv(_write(tmp_path / "log.csv", LOG_CSV), id_dtype="float")

    def test_empty_id_names_line(self, tmp_path):
        """An empty id field raises naming the line in the file."""
        path = _write(tmp_path / "log.csv", "user_id,item_id\n1,2\n,3\n")
        with pytest.raises(ValueError, match=re.escape("column 'user_id' (user_col) in " + str(path) + " has 1 empty ids, first on line 3.")):
            read_csv(path)

    def test_headerless_file_with_names(self, tmp_path):
        """names= reads a file without a header row, like MovieLens u.data."""
        path = _write(tmp_path / "u.tsv", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
        x = read_csv(path, names=["user_id", "item_id", "rating", "time"], weight_col="rating", timestamp_col="time")
        assert x.users.ids.tolist() == [186, 196]
        assert x.timestamps.tolist() == [891717742.0, 881250949.0]

    def test_headerless_file_hint(self, tmp_path):
        """A missing header is suspected when every column name is a number."""
        path = _write(tmp_path / "u.tsv", "196\t242\t3\n")
        with pytest.raises(ValueError, match=re.escape("The first row looks like data: if the file has no header row, pass names=[...]")):
            read_csv(path)

    def test_missing_column_lists_columns(self, tmp_path):
        """A misnamed column raises listing the file's columns and the option to change."""
        path = _write(tmp_path / "log.csv", LOG_CSV)
        expected = f"column 'timestamp' (timestamp_col) not found in {path}. The file has columns ['user_id', 'item_id', 'rating', 'time']. Pass timestamp_col=<name>"
        with pytest.raises(ValueError, match=re.escape(expected)):
            read_csv(path, timestamp_col="timestamp")

    def test_non_utf8_file(self, tmp_path):
        """A latin-1 file raises naming the encoding option, and reads with it."""
        path = _write(tmp_path / "log.csv", "user_id,item_id\n1,Misérables\n", encoding="latin-1")
        with pytest.raises(ValueError, match=re.escape(f"could not decode {path} as utf-8") + ".*" + re.escape("Pass the file's encoding, for example encoding='latin-1'.")):
            read_csv(path)
        assert read_csv(path, encoding="latin-1").items.ids.tolist() == ["Misérables"]

    def test_empty_file(self, tmp_path):
        """A zero-byte file raises saying it is empty."""
        path = _write(tmp_path / "log.csv", "")
        with pytest.raises(ValueError, match=re.escape(f"no interactions: {path} is empty.")):
            read_csv(path)

    def test_header_only_file(self, tmp_path):
        """A file with a header and no rows raises."""
        path = _write(tmp_path / "log.csv", "user_id,item_id\n")
        with pytest.raises(ValueError, match=re.escape(f"no interactions: {path} has a header row but no data rows.")):
            read_csv(path)

    def test_missing_file(self, tmp_path):
        """A missing file raises FileNotFoundError with the path."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"interaction file not found: {tmp_path / 'nope.csv'}. Check the path.")):
            read_csv(tmp_path / "nope.csv")

    def test_folder_instead_of_file(self, tmp_path):
        """A folder raises and points MovieLens folders to load_movielens."""
        with pytest.raises(IsADirectoryError, match=re.escape(f"{tmp_path} is a folder, expected an interaction file.")):
            read_csv(tmp_path)

    def test_builder_errors_name_file(self, tmp_path):
        """Validation errors from the builder are prefixed with the file path."""
        path = _write(tmp_path / "log.csv", "user_id,item_id,rating\n1,2,-1\n")
        with pytest.raises(ValueError, match=re.escape(f"{path}: weight column 'rating' has 1 negative values")):
            read_csv(path, weight_col="rating")

    def test_duplicates_and_binarize_pass_through(self, tmp_path):
        """Reader options reach the builder: min_weight, binarize and duplicates."""
        path = _write(tmp_path / "log.csv", "user_id,item_id,rating\n1,2,5\n1,2,4\n1,3,1\n")
        x = read_csv(path, weight_col="rating", min_weight=2, binarize=True)
        assert x.nnz == 1
        assert x.matrix.data.tolist() == [2.0]  # two kept events for (1, 2), each 1 after binarize, summed
        with pytest.raises(ValueError, match="duplicate"):
            read_csv(path, duplicates="error")


class TestReadParquet:
    def test_typed_ids_kept(self, tmp_path):
        """Parquet int and string id columns keep their types, even digit strings."""
        frame = pd.DataFrame({"user_id": np.array([1, 2], dtype=np.int64), "item_id": ["007", "8"], "time": pd.to_datetime(["2020-01-01", "2020-01-02"])})
        frame.to_parquet(tmp_path / "log.parquet")
        x = read_parquet(tmp_path / "log.parquet", timestamp_col="time")
        assert x.users.kind == "int"
        assert x.items.ids.tolist() == ["007", "8"]
        assert x.timestamps.tolist() == [1577836800.0, 1577923200.0]

    def test_id_dtype_conversions(self, tmp_path):
        """id_dtype='str' turns ints (also ints stored as floats) into text; 'int' parses digit strings."""
        frame = pd.DataFrame({"user_id": np.array([1.0, 2.0]), "item_id": ["3", "4"]})
        frame.to_parquet(tmp_path / "log.parquet")
        assert read_parquet(tmp_path / "log.parquet", id_dtype="str").users.ids.tolist() == ["1", "2"]
        assert read_parquet(tmp_path / "log.parquet", id_dtype="int").items.ids.tolist() == [3, 4]

    def test_missing_column(self, tmp_path):
        """A misnamed column raises listing the file's columns."""
        pd.DataFrame({"user": [1], "item_id": [2]}).to_parquet(tmp_path / "log.parquet")
        with pytest.raises(ValueError, match=re.escape("column 'user_id' (user_col) not found in " + str(tmp_path / "log.parquet") + ". The file has columns ['user', 'item_id']")):
            read_parquet(tmp_path / "log.parquet")

    def test_not_parquet(self, tmp_path):
        """A text file given to the Parquet reader raises naming the file."""
        path = _write(tmp_path / "log.parquet", LOG_CSV)
        with pytest.raises(ValueError, match=re.escape(f"could not read {path} as Parquet")):
            read_parquet(path)

    def test_zero_rows(self, tmp_path):
        """A Parquet file without rows raises."""
        pd.DataFrame({"user_id": np.array([], dtype=np.int64), "item_id": np.array([], dtype=np.int64)}).to_parquet(tmp_path / "log.parquet")
        with pytest.raises(ValueError, match=re.escape("has 0 rows")):
            read_parquet(tmp_path / "log.parquet")


class TestReadInteractions:
    def test_picks_reader_by_extension(self, tmp_path):
        """.csv, .tsv and .parquet files are each read by the right reader."""
        _write(tmp_path / "log.csv", LOG_CSV)
        _write(tmp_path / "log.tsv", LOG_CSV.replace(",", "\t"))
        pd.read_csv(tmp_path / "log.csv").to_parquet(tmp_path / "log.parquet")
        for name in ("log.csv", "log.tsv", "log.parquet"):
            x = read_interactions(tmp_path / name, weight_col="rating", timestamp_col="time")
            assert x.matrix.data.tolist() == [4.0, 5.0, 3.0], name

    def test_unknown_extension(self, tmp_path):
        """A .txt file raises listing the supported extensions and the format= override."""
        path = _write(tmp_path / "log.txt", LOG_CSV)
        with pytest.raises(ValueError, match=re.escape(f"cannot choose a reader for {path}: extension .txt is not supported.") + ".*" + re.escape("Pass format='csv'")):
            read_interactions(path)

    def test_format_override(self, tmp_path):
        """format='csv' reads a file whose extension is not supported, and 'tsv' sets a tab separator."""
        assert read_interactions(_write(tmp_path / "log.txt", LOG_CSV), format="csv").nnz == 3
        assert read_interactions(_write(tmp_path / "log.dat", LOG_CSV.replace(",", "\t")), format="tsv").nnz == 3

    def test_unknown_format(self, tmp_path):
        """An unknown format name lists the valid ones."""
        with pytest.raises(ValueError, match=re.escape("unknown format 'xlsx': expected one of ['csv', 'tsv', 'parquet'].")):
            read_interactions(_write(tmp_path / "log.csv", LOG_CSV), format="xlsx")

    def test_missing_file(self, tmp_path):
        """A missing file is reported as missing, not as an unknown format."""
        with pytest.raises(FileNotFoundError, match="interaction file not found"):
            read_interactions(tmp_path / "nope.txt")


@pytest.fixture(scope="module")
def ml100k(shared_data):
    """MovieLens 100K from the shared data folder, loaded once per module."""
    return load_movielens(shared_data("ml-100k"))


@pytest.fixture(scope="module")
def shared_copy(shared_data):
    """MovieLens latest-small from the shared data folder, loaded once per module."""
    return load_movielens(shared_data("ml-latest-small"))


class TestMovieLens100k:
    def test_counts(self, ml100k):
        """100,000 ratings by 943 users of 1,682 items, as the release states."""
        assert (ml100k.nnz, ml100k.n_users, ml100k.n_items) == (100_000, 943, 1_682)
        assert sorted(np.unique(ml100k.matrix.data).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]

    def test_known_rating_and_time(self, ml100k):
        """The first line of u.data (196, 242, 3, 881250949) is an entry with its weight and time."""
        frame = ml100k.to_dataframe()
        row = frame[(frame["user_id"] == 196) & (frame["item_id"] == 242)]
        assert row[["weight", "timestamp"]].values.tolist() == [[3.0, 881250949.0]]

    def test_toy_story_metadata(self, ml100k):
        """Movie 1 has its title, genres from the flag columns and year."""
        metadata = ml100k.item_metadata.loc[1]
        assert metadata["title"] == "Toy Story (1995)"
        assert metadata["genres"] == ["Animation", "Children's", "Comedy"]
        assert metadata["year"] == 1995

    def test_latin1_title(self, ml100k):
        """Latin-1 bytes in u.item decode to the right characters."""
        assert ml100k.item_metadata.loc[543, "title"] == "Misérables, Les (1995)"

    def test_unknown_genre_is_empty(self, ml100k):
        """Movie 267 (title 'unknown', only the 'unknown' genre flag) has no genres and no year."""
        metadata = ml100k.item_metadata.loc[267]
        assert metadata["genres"] == []
        assert pd.isna(metadata["year"])

    def test_registry_name(self, shared_data):
        """load_dataset('movielens-100k', path=...) loads the same counts."""
        x = load_dataset("movielens-100k", path=shared_data("ml-100k"), min_rating=4)
        assert x.matrix.data.min() >= 4.0
        assert x.nnz < 100_000

    def test_wrong_layout(self, shared_data):
        """Asking for the 100K layout in another release folder names the missing files."""
        folder = shared_data("ml-latest-small")
        with pytest.raises(FileNotFoundError, match=re.escape(f"{folder} is not a MovieLens 100K folder: u.data and u.item not found.")):
            load_dataset("movielens-100k", path=folder)


class TestMovieLensLatestSmall:
    def test_counts(self, shared_copy):
        """100,836 ratings by 610 users of 9,724 rated movies."""
        assert (shared_copy.nnz, shared_copy.n_users, shared_copy.n_items) == (100_836, 610, 9_724)
        assert shared_copy.matrix.data.min() == 0.5

    def test_toy_story_metadata(self, shared_copy):
        """Movie 1 has its title, pipe-separated genres and year."""
        metadata = shared_copy.item_metadata.loc[1]
        assert metadata["title"] == "Toy Story (1995)"
        assert metadata["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
        assert metadata["year"] == 1995

    def test_titles_without_plain_year(self, shared_copy):
        """A year range gives its first year, and a title without a year gives NA."""
        titles = shared_copy.item_metadata
        assert titles.loc[titles["title"] == "Death Note: Desu nôto (2006–2007)", "year"].tolist() == [2006]
        assert pd.isna(titles.loc[titles["title"] == "Babylon 5", "year"]).all()

    def test_no_genres_listed(self, shared_copy):
        """'(no genres listed)' (movie 114335) becomes an empty list."""
        assert shared_copy.item_metadata.loc[114335, "genres"] == []

    def test_include_unrated(self, shared_data, shared_copy):
        """include_unrated adds the 18 unrated movies (such as 1076) as empty columns."""
        x = load_movielens(shared_data("ml-latest-small"), include_unrated=True)
        assert x.n_items == 9_742
        assert x.nnz == 100_836
        assert x.item_counts()[x.items.to_index([1076])].tolist() == [0]
        assert x.item_metadata.loc[1076, "genres"] == ["Drama", "Horror", "Thriller"]
        assert 1076 not in shared_copy.items

    def test_embedded_equals_shared(self, shared_copy, movielens_small):
        """The embedded copy contains the same interactions as the shared one."""
        assert (movielens_small.n_users, movielens_small.n_items, movielens_small.nnz) == (610, 9_724, 100_836)
        assert movielens_small.users == shared_copy.users
        assert movielens_small.items == shared_copy.items
        assert (movielens_small.matrix != shared_copy.matrix).nnz == 0
        np.testing.assert_array_equal(movielens_small.timestamps, shared_copy.timestamps)


class TestMovieLens1m:
    @pytest.fixture
    def folder(self, tmp_path):
        """A two-movie folder in the 1M layout: '::'-separated, latin-1, titles with ':'."""
        (tmp_path / "ratings.dat").write_bytes(b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
        (tmp_path / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Star Wars: Épisode I (1999)::Action|Sci-Fi\n".encode("latin-1"))
        return tmp_path

    def test_reads_layout(self, folder):
        """Ratings, times and metadata of the 1M layout are read."""
        x = load_movielens(folder)
        assert (x.n_users, x.n_items, x.nnz) == (2, 2, 3)
        assert x.items.ids.tolist() == [661, 1193]
        assert x.item_metadata.loc[661].tolist() == ["Star Wars: Épisode I (1999)", ["Action", "Sci-Fi"], 1999]
        frame = x.to_dataframe()
        assert frame.loc[(frame["user_id"] == 1) & (frame["item_id"] == 661), "timestamp"].tolist() == [978302109.0]

    def test_binarize_and_min_rating(self, folder):
        """min_rating and binarize are applied to the ratings."""
        x = load_movielens(folder, min_rating=4, binarize=True)
        assert x.nnz == 2
        assert x.matrix.data.tolist() == [1.0, 1.0]


class TestMovieLensErrors:
    def test_folder_without_layout(self, tmp_path):
        """A folder without known files raises listing what was looked for and what is there."""
        (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
        expected = (
            f"no MovieLens layout found in {tmp_path}: expected u.data and u.item (MovieLens 100K); ratings.csv and movies.csv (MovieLens latest, 20M or 25M); "
            f"ratings.dat and movies.dat (MovieLens 1M). The folder contains ['notes.txt']."
        )
        with pytest.raises(FileNotFoundError, match=re.escape(expected)):
            load_movielens(tmp_path)

    def test_missing_folder(self, tmp_path):
        """A missing folder raises naming it."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"MovieLens folder not found: {tmp_path / 'ml'}.")):
            load_movielens(tmp_path / "ml")

    def test_file_instead_of_folder(self, tmp_path):
        """A file path raises and names its folder."""
        path = _write(tmp_path / "ratings.csv", LOG_CSV)
        with pytest.raises(NotADirectoryError, match=re.escape(f"but load_movielens expects the folder that contains it ({tmp_path})")):
            load_movielens(path)

    def test_unknown_layout(self, tmp_path):
        """An unknown layout name lists the valid ones."""
        with pytest.raises(ValueError, match=re.escape("unknown MovieLens layout '10m': expected one of ['100k', 'latest', '1m']")):
            load_movielens(tmp_path, layout="10m")

    def test_ratings_csv_with_other_header(self, tmp_path):
        """A ratings.csv without MovieLens columns raises listing the header."""
        _write(tmp_path / "ratings.csv", LOG_CSV)
        _write(tmp_path / "movies.csv", "movieId,title,genres\n10,A (2000),Drama\n")
        with pytest.raises(ValueError, match=re.escape("lacks the MovieLens columns ['userId', 'movieId', 'timestamp']")):
            load_movielens(tmp_path)


class TestDatasets:
    def test_default_is_embedded_copy(self, movielens_small):
        """load_dataset() loads the embedded latest-small copy with metadata and timestamps."""
        assert embedded_dataset_path().name == "ml-latest-small"
        assert (embedded_dataset_path() / "README.txt").is_file()
        assert movielens_small.timestamps is not None
        assert movielens_small.item_metadata.loc[1, "title"] == "Toy Story (1995)"

    def test_descriptions_cover_names(self):
        """Every registered name has a one-line description."""
        assert list(DATASETS) == ["movielens-latest-small", "movielens-100k", "movielens", "csv", "parquet", "amazon-beauty", "amazon-sports"]
        assert all(text and "\n" not in text for text in DATASETS.values())

    def test_unknown_name(self):
        """An unknown dataset name lists the known ones."""
        expected = "unknown dataset 'ml-1m': expected one of ['movielens-latest-small', 'movielens-100k', 'movielens', 'csv', 'parquet', 'amazon-beauty', 'amazon-sports']."
        with pytest.raises(ValueError, match=re.escape(expected)):
            load_dataset("ml-1m")

    @pytest.mark.parametrize(("name", "mentions"), [("movielens-100k", "u.data and u.item"), ("movielens", "MovieLens release folder"), ("csv", "CSV"), ("parquet", "Parquet")])
    def test_path_required(self, name, mentions):
        """Names without a default path raise explaining what path= must point to."""
        with pytest.raises(ValueError, match=re.escape(f"dataset {name!r} needs a path: pass path= to") + ".*" + re.escape(mentions)):
            load_dataset(name)

    def test_csv_options_pass_through(self, tmp_path):
        """load_dataset('csv', ...) forwards reader options."""
        x = load_dataset("csv", path=_write(tmp_path / "log.csv", LOG_CSV), weight_col="rating", timestamp_col="time")
        assert x.matrix.data.tolist() == [4.0, 5.0, 3.0]

    def test_any_movielens(self, shared_data):
        """load_dataset('movielens', path=...) detects the 100K layout."""
        assert load_dataset("movielens", path=shared_data("ml-100k")).nnz == 100_000


def test_public_api():
    """recx.data exports the documented names."""
    expected = {
        "IdMap", "Interactions", "Split", "load_dataset", "load_movielens", "read_csv", "read_parquet", "read_interactions",
        "split_interactions", "temporal_split", "leave_one_out", "random_split", "time_cut_split", "DATASETS", "embedded_dataset_path",
        "read_sequences", "sample_per_user", "drop_items", "keep_items",
    }  # fmt: skip
    assert set(recx.data.__all__) == expected
    assert all(hasattr(recx.data, name) for name in expected)
