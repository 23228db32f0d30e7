"""Tests of IdMap and the Interactions container."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recx.data import IdMap, Interactions


class TestIdMap:
    def test_int_round_trip(self):
        """Int ids map to their positions and back, as int64."""
        ids = IdMap([30, 10, 20])
        assert ids.kind == "int"
        assert ids.to_index([20, 30]).tolist() == [2, 0]
        assert ids.to_id([0, 1, 2]).tolist() == [30, 10, 20]
        assert ids.ids.dtype == np.int64

    def test_str_round_trip(self):
        """String ids map to their positions and back unchanged."""
        ids = IdMap(["b", "a", "007"])
        assert ids.kind == "str"
        assert ids.to_index(["007", "b"]).tolist() == [2, 0]
        assert ids.to_id([1, 2]).tolist() == ["a", "007"]

    def test_from_values_sorts_and_indexes(self):
        """from_values keeps distinct ids in sorted order and returns the index of every value."""
        ids, indices = IdMap.from_values([5, 3, 5, 9], name="user")
        assert ids.ids.tolist() == [3, 5, 9]
        assert indices.tolist() == [1, 0, 1, 2]

    def test_unknown_id_message(self):
        """An unknown id raises KeyError naming the id, the count and the map's kind."""
        ids = IdMap([1, 2, 3], name="user")
        with pytest.raises(KeyError, match=re.escape("unknown user id(s) [7] (1 of 2 not found)")):
            ids.to_index([1, 7])
        with pytest.raises(KeyError, match=re.escape("check the id and its type (int)")):
            ids.to_index([7])

    def test_missing_drop_and_mask(self):
        """missing='drop' removes unknown ids and missing='mask' returns -1 for them."""
        ids = IdMap(["a", "b"])
        assert ids.to_index(["b", "z"], missing="drop").tolist() == [1]
        assert ids.to_index(["b", "z"], missing="mask").tolist() == [1, -1]

    def test_string_query_on_int_map(self):
        """Ids typed as strings (as on a command line) find int ids."""
        assert IdMap([7, 8]).to_index(["8"]).tolist() == [1]

    def test_mixed_int_str_list_raises(self):
        """A plain list that mixes ints and strings raises instead of turning the ints into strings."""
        with pytest.raises(TypeError, match=re.escape("item ids mix integers and strings (for example 1 and 'a')")):
            IdMap([1, "a"])
        with pytest.raises(TypeError, match="mix integers and strings"):
            IdMap.from_values([3, "b", 3], name="item")

    def test_mixed_object_column_raises(self):
        """An object column that mixes ints and strings raises and names the fix."""
        column = pd.Series([1, "x"], dtype=object)
        with pytest.raises(TypeError, match=re.escape("df[column].astype(str)")):
            IdMap(column.to_numpy(), name="user")

    def test_duplicate_ids_raise(self):
        """Repeated ids raise naming the repeated value."""
        with pytest.raises(ValueError, match=re.escape("item ids must be unique, but [2] appear more than once.")):
            IdMap([1, 2, 2])

    def test_non_integer_floats_raise(self):
        """Floats with a fraction are not valid ids."""
        with pytest.raises(TypeError, match=re.escape("non-integer floats such as [1.5]")):
            IdMap(np.array([1.0, 1.5]))

    def test_index_out_of_range(self):
        """to_id rejects indices outside 0 .. n - 1."""
        with pytest.raises(IndexError, match=re.escape("item indices [2] are out of range for a map of 2 ids.")):
            IdMap([1, 2]).to_id([2])

    @pytest.mark.parametrize("ids", [[3, 1, 2], ["x", "é", "007"]])
    def test_save_load_round_trip(self, tmp_path, ids):
        """A saved map loads back equal, with the same kind, as readable JSON."""
        original = IdMap(ids, name="user")
        original.save(tmp_path / "users.json")
        loaded = IdMap.load(tmp_path / "users.json")
        assert loaded == original
        assert loaded.kind == original.kind
        assert loaded.name == "user"
        assert json.loads((tmp_path / "users.json").read_text(encoding="utf-8"))["ids"] == ids

    def test_load_missing_file(self, tmp_path):
        """Loading a missing file names the path."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"id map not found: {tmp_path / 'nope.json'}")):
            IdMap.load(tmp_path / "nope.json")


def _duplicate_log(with_times: bool = True) -> pd.DataFrame:
    """Five events, three of them for the pair (u1, a) with weights 1, 5, 2 at times 30, 10, 20."""
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2"],
            "item_id": ["a", "a", "a", "b", "a"],
            "weight": [1.0, 5.0, 2.0, 3.0, 4.0],
            "time": [30, 10, 20, 5, 7],
        }
    )
    return frame if with_times else frame.drop(columns="time")


def _entry(x: Interactions, user: str, item: str) -> tuple[float, float | None]:
    """Return (weight, timestamp) of one (user, item) entry."""
    frame = x.to_dataframe()
    row = frame[(frame["user_id"] == user) & (frame["item_id"] == item)]
    assert len(row) == 1
    timestamp = float(row["timestamp"].iloc[0]) if "timestamp" in frame else None
    return float(row["weight"].iloc[0]), timestamp


class TestDuplicates:
    # Expected (weight, timestamp) of the merged (u1, a) entry, by hand.
    # "sum" gives 1 + 5 + 2 = 8 and "max" gives 5, both at the latest time 30.
    # "first" keeps the earliest event (weight 5 at time 10), and "last" the latest (weight 1 at time 30).
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [("sum", (8.0, 30.0)), ("max", (5.0, 30.0)), ("first", (5.0, 10.0)), ("last", (1.0, 30.0))],
    )
    def test_policy_with_timestamps(self, policy, expected):
        """Each policy merges (u1, a) into the hand-computed weight and timestamp."""
        x = Interactions.from_dataframe(_duplicate_log(), weight_col="weight", timestamp_col="time", duplicates=policy)
        assert x.nnz == 3
        assert _entry(x, "u1", "a") == expected
        assert _entry(x, "u1", "b") == (3.0, 5.0)
        assert _entry(x, "u2", "a") == (4.0, 7.0)

    @pytest.mark.parametrize(("policy", "expected"), [("first", 1.0), ("last", 2.0), ("sum", 8.0), ("max", 5.0)])
    def test_policy_without_timestamps(self, policy, expected):
        """Without timestamps, first and last follow row order (weights 1, 5, 2 in that order)."""
        x = Interactions.from_dataframe(_duplicate_log(with_times=False), weight_col="weight", duplicates=policy)
        assert _entry(x, "u1", "a")[0] == expected

    def test_error_policy_raises(self):
        """duplicates='error' raises with the count and the other policies."""
        with pytest.raises(ValueError, match=re.escape("2 duplicate (user, item) events")):
            Interactions.from_dataframe(_duplicate_log(), weight_col="weight", duplicates="error")

    def test_unknown_policy(self):
        """An unknown policy name lists the valid ones."""
        with pytest.raises(ValueError, match=re.escape("invalid duplicates policy 'mean': expected one of ['sum', 'max', 'first', 'last', 'error'].")):
            Interactions.from_dataframe(_duplicate_log(), duplicates="mean")


class TestFromDataframe:
    def test_min_weight_then_binarize(self):
        """min_weight drops events before merging, and binarize sets the kept weights to 1."""
        x = Interactions.from_dataframe(_duplicate_log(), weight_col="weight", timestamp_col="time", min_weight=3.0, binarize=True)
        # Kept events: (u1, a) weight 5 at time 10, (u1, b) weight 3, (u2, a) weight 4.
        assert x.nnz == 3
        assert x.matrix.data.tolist() == [1.0, 1.0, 1.0]
        assert _entry(x, "u1", "a") == (1.0, 10.0)

    def test_min_weight_removing_everything(self):
        """A threshold above every weight raises naming the largest weight."""
        with pytest.raises(ValueError, match=re.escape("every weight is below min_weight=9 (largest weight 5)")):
            Interactions.from_dataframe(_duplicate_log(), weight_col="weight", min_weight=9)

    def test_nan_weight(self):
        """A NaN weight raises with its position."""
        frame = _duplicate_log()
        frame.loc[2, "weight"] = np.nan
        with pytest.raises(ValueError, match=re.escape("weight column 'weight' has 1 NaN or infinite values, first at position 2.")):
            Interactions.from_dataframe(frame, weight_col="weight")

    def test_negative_weight(self):
        """A negative weight raises with its value and position."""
        frame = _duplicate_log()
        frame.loc[3, "weight"] = -1.0
        with pytest.raises(ValueError, match=re.escape("has 1 negative values, first -1 at position 3.")):
            Interactions.from_dataframe(frame, weight_col="weight")

    def test_missing_column_lists_available(self):
        """A misnamed column raises listing the columns the frame has."""
        expected = "column 'rating' (weight_col) not found; the input has columns ['user_id', 'item_id', 'weight', 'time']. Pass weight_col=<name>"
        with pytest.raises(ValueError, match=re.escape(expected)):
            Interactions.from_dataframe(_duplicate_log(), weight_col="rating")

    def test_empty_input(self):
        """A frame without rows raises."""
        with pytest.raises(ValueError, match=re.escape("no interactions: the input has 0 rows.")):
            Interactions.from_dataframe(_duplicate_log().iloc[:0])

    def test_missing_ids(self):
        """A missing id raises with its row."""
        frame = _duplicate_log()
        frame.loc[1, "user_id"] = None
        with pytest.raises(ValueError, match=re.escape("column 'user_id' (user_col) has 1 missing ids, first at row 1.")):
            Interactions.from_dataframe(frame)

    def test_timezone_aware_datetimes(self):
        """Time-zone-aware datetimes become seconds since the epoch in UTC."""
        frame = pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "time": pd.to_datetime(["1970-01-01T01:00:10+01:00", "1970-01-01T01:01:00+01:00"])})
        x = Interactions.from_dataframe(frame, timestamp_col="time")
        assert x.timestamps.tolist() == [10.0, 60.0]

    def test_metadata_only_items(self):
        """include_metadata_items adds unrated items as empty columns, with their metadata."""
        metadata = pd.DataFrame({"title": ["A", "B", "C"], "genres": [["x"], [], ["y", "z"]]}, index=pd.Index(["a", "b", "c"]))
        x = Interactions.from_dataframe(_duplicate_log(), item_metadata=metadata, include_metadata_items=True)
        assert x.items.ids.tolist() == ["a", "b", "c"]
        assert x.item_counts().tolist() == [2, 1, 0]
        assert x.item_titles().tolist() == ["A", "B", "C"]
        assert x.item_genres() == [["x"], [], ["y", "z"]]


class TestFromScipy:
    def test_transposed_matrix_message(self):
        """An items x users matrix with matching maps is reported as transposed."""
        users, items = IdMap([1, 2], name="user"), IdMap([1, 2, 3], name="item")
        matrix = sp.csr_matrix(np.ones((3, 2), dtype=np.float32))
        with pytest.raises(ValueError, match=re.escape("matrix shape (3, 2) does not match 2 users x 3 items. It looks transposed")):
            Interactions.from_scipy(matrix, users=users, items=items)

    def test_default_ids_and_merged_duplicates(self):
        """Without maps, ids are 0 .. n - 1, and duplicate coordinates are summed."""
        coo = sp.coo_matrix((np.array([1.0, 2.0, 3.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
        x = Interactions.from_scipy(coo)
        assert x.users.ids.tolist() == [0, 1]
        assert x.matrix.toarray().tolist() == [[0.0, 3.0], [3.0, 0.0]]

    def test_empty_matrix(self):
        """A matrix without non-zero entries raises."""
        with pytest.raises(ValueError, match=re.escape("no interactions: the 2 x 3 matrix has no non-zero entries.")):
            Interactions.from_scipy(sp.csr_matrix((2, 3)))

    def test_negative_values(self):
        """Negative matrix values raise."""
        with pytest.raises(ValueError, match="matrix values has 1 negative values"):
            Interactions.from_scipy(sp.csr_matrix(np.array([[1.0, -2.0]])))


class TestSaveLoad:
    def test_round_trip_with_metadata(self, tmp_path):
        """Matrix, timestamps, id maps and metadata (title, genres, nullable year) survive save and load."""
        metadata = pd.DataFrame(
            {"title": ["Alpha (1999)", "Beta"], "genres": [["Drama", "War"], []], "year": pd.array([1999, None], dtype="Int64")},
            index=pd.Index(["a", "b"]),
        )
        original = Interactions.from_dataframe(_duplicate_log(), weight_col="weight", timestamp_col="time", item_metadata=metadata)
        original.save(tmp_path / "x")
        loaded = Interactions.load(tmp_path / "x")

        assert (loaded.matrix != original.matrix).nnz == 0
        assert loaded.matrix.dtype == np.float32
        np.testing.assert_array_equal(loaded.timestamps, original.timestamps)
        assert loaded.users == original.users
        assert loaded.items == original.items
        pd.testing.assert_frame_equal(loaded.item_metadata, original.item_metadata)
        assert loaded.item_genres() == [["Drama", "War"], []]

    def test_round_trip_without_extras(self, tmp_path):
        """Interactions without timestamps or metadata load back without them."""
        original = Interactions.from_dataframe(_duplicate_log(with_times=False))
        original.save(tmp_path)
        loaded = Interactions.load(tmp_path)
        assert loaded.timestamps is None
        assert loaded.item_metadata is None
        assert (loaded.matrix != original.matrix).nnz == 0

    def test_no_pickle_in_archive(self, tmp_path):
        """The array archive loads with allow_pickle=False."""
        Interactions.from_dataframe(_duplicate_log(), timestamp_col="time").save(tmp_path)
        with np.load(tmp_path / "interactions.npz", allow_pickle=False) as arrays:
            assert set(arrays.files) == {"indptr", "indices", "data", "shape", "timestamps"}

    def test_load_missing_folder(self, tmp_path):
        """Loading a folder without interactions.npz names the path."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"interactions not found: {tmp_path / 'interactions.npz'} does not exist.")):
            Interactions.load(tmp_path)
