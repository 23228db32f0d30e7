"""Tests of the split protocols, on MovieLens latest-small and on hand-built toy data."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from recx.data import Interactions, Split, leave_one_out, random_split, split_interactions, temporal_split, time_cut_split

# Every protocol with and without a validation part, as (protocol, parameters).
PROTOCOL_CASES = [
    ("temporal", {}),
    ("temporal", {"test_fraction": 0.25, "validation_fraction": 0.2}),
    ("leave-one-out", {}),
    ("leave-one-out", {"validation": True}),
    ("random", {"seed": 3}),
    ("random", {"validation_fraction": 0.1, "seed": 3}),
    ("time-cut", {}),
    ("time-cut", {"validation_fraction": 0.1}),
]


def _toy(rows: list[tuple[object, object, float]]) -> Interactions:
    """Build interactions from (user, item, timestamp) triples, each with weight 1."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "time"])
    return Interactions.from_dataframe(frame, timestamp_col="time")


def _parts(split: Split) -> list[Interactions]:
    return [part for part in (split.train, split.validation, split.test) if part is not None]


def _items_of(x: Interactions, user: object) -> list[object]:
    """Return the external item ids of one user, in item index order."""
    return x.items.to_id(x.user_items(int(x.users.to_index([user])[0]))).tolist()


def _max_per_user(x: Interactions) -> np.ndarray:
    """Return each user's latest timestamp, -inf for users without entries; shape (n_users,)."""
    result = np.full(x.n_users, -np.inf)
    rows = np.repeat(np.arange(x.n_users), x.user_counts())
    np.maximum.at(result, rows, x.timestamps)
    return result


def _min_per_user(x: Interactions) -> np.ndarray:
    """Return each user's earliest timestamp, +inf for users without entries; shape (n_users,)."""
    result = np.full(x.n_users, np.inf)
    rows = np.repeat(np.arange(x.n_users), x.user_counts())
    np.minimum.at(result, rows, x.timestamps)
    return result


@pytest.mark.parametrize(("protocol", "params"), PROTOCOL_CASES)
class TestEveryProtocolOnMovieLens:
    def test_parts_are_disjoint(self, movielens_small, protocol, params):
        """No (user, item) pair appears in two parts."""
        split = split_interactions(movielens_small, protocol, **params)
        parts = _parts(split)
        for i, first in enumerate(parts):
            for second in parts[i + 1 :]:
                assert first.matrix.multiply(second.matrix).nnz == 0

    def test_parts_add_up_to_input(self, movielens_small, protocol, params):
        """Train + validation + test equals the input, entry for entry and weight for weight."""
        split = split_interactions(movielens_small, protocol, **params)
        total = sum(part.matrix for part in _parts(split))
        assert (total != movielens_small.matrix).nnz == 0
        assert sum(part.nnz for part in _parts(split)) == movielens_small.nnz

    def test_timestamps_follow_entries(self, movielens_small, protocol, params):
        """Each entry keeps its own timestamp in whichever part it lands."""
        split = split_interactions(movielens_small, protocol, **params)
        combined = pd.concat([part.to_dataframe() for part in _parts(split)]).sort_values(["user_id", "item_id"], ignore_index=True)
        original = movielens_small.to_dataframe().sort_values(["user_id", "item_id"], ignore_index=True)
        pd.testing.assert_frame_equal(combined, original)

    def test_held_out_users_have_training_history(self, movielens_small, protocol, params):
        """Every user with test or validation interactions has training interactions."""
        split = split_interactions(movielens_small, protocol, **params)
        train_counts = split.train.user_counts()
        assert split.test.nnz > 0
        assert np.all(train_counts[split.test.user_counts() > 0] > 0)
        if split.validation is not None:
            assert split.validation.nnz > 0
            assert np.all(train_counts[split.validation.user_counts() > 0] > 0)

    def test_parts_share_maps_and_metadata(self, movielens_small, protocol, params):
        """Parts keep the input's shape, id maps and item metadata, and record the protocol."""
        split = split_interactions(movielens_small, protocol, **params)
        for part in _parts(split):
            assert part.matrix.shape == movielens_small.matrix.shape
            assert part.users is movielens_small.users
            assert part.items is movielens_small.items
            assert part.item_metadata is movielens_small.item_metadata
        assert split.protocol == protocol
        assert (split.validation is not None) == bool(params.get("validation") or params.get("validation_fraction"))


class TestTemporalSplit:
    def test_test_is_latest_per_user(self, movielens_small):
        """For every user, test times >= validation times >= train times."""
        split = temporal_split(movielens_small, test_fraction=0.2, validation_fraction=0.25)
        assert np.all(_min_per_user(split.test) >= _max_per_user(split.validation))
        assert np.all(_min_per_user(split.validation) >= _max_per_user(split.train))

    def test_per_user_counts_on_movielens(self, movielens_small):
        """Each user holds out floor(n * 0.2 + 0.5) interactions; every user has at least 20."""
        counts = movielens_small.user_counts()
        split = temporal_split(movielens_small, test_fraction=0.2)
        np.testing.assert_array_equal(split.test.user_counts(), np.floor(counts * 0.2 + 0.5).astype(np.int64))

    def test_ten_items_fraction_two_tenths(self):
        """A user with 10 items at shuffled times gives exactly the 2 latest to test."""
        times = [5, 1, 9, 3, 10, 2, 8, 4, 7, 6]
        x = _toy([("u", f"i{k}", t) for k, t in enumerate(times)])
        split = temporal_split(x, test_fraction=0.2)
        assert sorted(_items_of(split.test, "u")) == ["i2", "i4"]  # times 9 and 10
        assert split.train.nnz == 8
        assert split.test.timestamps.tolist() == [9.0, 10.0]

    @pytest.mark.parametrize(
        ("n", "fraction", "held"),
        [
            (10, 0.2, 2),  # exact
            (5, 0.3, 2),  # 1.5 rounds half up
            (4, 0.2, 1),  # 0.8 rounds to 1
            (2, 0.2, 1),  # 0.4 rounds to 0, raised to the minimum of 1
            (3, 0.9, 2),  # 2.7 rounds to 3, capped at n - 1 = 2
            (7, 0.5, 4),  # 3.5 rounds half up
        ],
    )
    def test_rounding_rule(self, n, fraction, held):
        """Held-out count is round half up, within [1, n - 1]."""
        x = _toy([("u", k, k) for k in range(n)] + [("other", 0, 0), ("other", 1, 1)])
        split = temporal_split(x, test_fraction=fraction)
        assert split.test.user_counts()[x.users.to_index(["u"])].tolist() == [held]

    def test_single_interaction_user_stays_in_train(self):
        """A user with one interaction is wholly in train."""
        x = _toy([("solo", "a", 1), ("u", "a", 1), ("u", "b", 2)])
        split = temporal_split(x)
        assert _items_of(split.train, "solo") == ["a"]
        assert _items_of(split.test, "solo") == []
        assert _items_of(split.test, "u") == ["b"]

    def test_ties_broken_by_item_index(self):
        """Interactions at the same time are ordered by item index, so the highest index is latest."""
        x = _toy([("u", item, 100) for item in ("c", "a", "d", "b")])
        split = temporal_split(x, test_fraction=0.5)
        assert _items_of(split.test, "u") == ["c", "d"]

    def test_validation_sits_between(self):
        """Validation takes the latest of the remaining training interactions."""
        x = _toy([("u", k, k) for k in range(10)])
        split = temporal_split(x, test_fraction=0.2, validation_fraction=0.25)
        assert _items_of(split.test, "u") == [8, 9]
        assert _items_of(split.validation, "u") == [6, 7]  # 8 left, 8 * 0.25 = 2
        assert _items_of(split.train, "u") == [0, 1, 2, 3, 4, 5]

    def test_test_part_independent_of_validation(self, movielens_small):
        """Adding a validation part leaves the test part unchanged."""
        without = temporal_split(movielens_small, test_fraction=0.2)
        with_validation = temporal_split(movielens_small, test_fraction=0.2, validation_fraction=0.3)
        assert (without.test.matrix != with_validation.test.matrix).nnz == 0

    def test_requires_timestamps(self):
        """Interactions without timestamps raise suggesting the random protocol."""
        x = Interactions.from_dataframe(pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2]}))
        expected = "the temporal split needs timestamps, but these interactions have none. Load them with timestamp_col=<column>, or use the 'random' protocol (random_split)"
        with pytest.raises(ValueError, match=re.escape(expected)):
            temporal_split(x)

    def test_nothing_to_hold_out(self):
        """When every user has a single interaction, the split raises."""
        x = _toy([("a", 1, 1), ("b", 2, 2)])
        with pytest.raises(ValueError, match=re.escape("the temporal split found no test interactions, because no user has 2 or more interactions (2 users, 2 interactions).")):
            temporal_split(x)

    def test_no_validation_possible(self):
        """When train keeps one interaction per user, a requested validation part raises."""
        x = _toy([("a", 1, 1), ("a", 2, 2)])
        with pytest.raises(ValueError, match=re.escape("the temporal split found no validation interactions")):
            temporal_split(x, validation_fraction=0.2)


class TestLeaveOneOut:
    def test_latest_item_per_user(self, movielens_small):
        """Each user gives exactly one test interaction, later than all their training ones."""
        split = leave_one_out(movielens_small, validation=True)
        assert np.all(split.test.user_counts() == 1)
        assert np.all(split.validation.user_counts() == 1)
        assert np.all(_min_per_user(split.test) >= _max_per_user(split.validation))
        assert np.all(_min_per_user(split.validation) >= _max_per_user(split.train))

    def test_small_users_with_validation(self):
        """With validation, 1 interaction stays in train, 2 give train + test, 3 give one to each part."""
        x = _toy([("one", "a", 1), ("two", "a", 1), ("two", "b", 2), ("three", "a", 1), ("three", "b", 2), ("three", "c", 3)])
        split = leave_one_out(x, validation=True)
        assert [_items_of(split.train, user) for user in ("one", "two", "three")] == [["a"], ["a"], ["a"]]
        assert [_items_of(split.test, user) for user in ("one", "two", "three")] == [[], ["b"], ["c"]]
        assert [_items_of(split.validation, user) for user in ("one", "two", "three")] == [[], [], ["b"]]
        assert split.params == {"validation": True}

    def test_requires_timestamps(self):
        """Interactions without timestamps raise naming the protocol."""
        x = Interactions.from_dataframe(pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2]}))
        with pytest.raises(ValueError, match=re.escape("the leave-one-out split needs timestamps")):
            leave_one_out(x)


class TestRandomSplit:
    def test_same_seed_same_split(self, movielens_small):
        """The same seed gives the same parts."""
        first = random_split(movielens_small, seed=7, validation_fraction=0.1)
        second = random_split(movielens_small, seed=7, validation_fraction=0.1)
        assert (first.test.matrix != second.test.matrix).nnz == 0
        assert (first.validation.matrix != second.validation.matrix).nnz == 0

    def test_other_seed_other_split(self, movielens_small):
        """Another seed draws other test interactions, in the same numbers per user."""
        first, second = random_split(movielens_small, seed=7), random_split(movielens_small, seed=8)
        assert (first.test.matrix != second.test.matrix).nnz > 0
        np.testing.assert_array_equal(first.test.user_counts(), second.test.user_counts())

    def test_counts_match_temporal(self, movielens_small):
        """Random and temporal splits hold out the same number per user."""
        np.testing.assert_array_equal(random_split(movielens_small).test.user_counts(), temporal_split(movielens_small).test.user_counts())

    def test_test_part_independent_of_validation(self, movielens_small):
        """The test draw does not change when a validation part is requested."""
        without = random_split(movielens_small, seed=1)
        with_validation = random_split(movielens_small, seed=1, validation_fraction=0.2)
        assert (without.test.matrix != with_validation.test.matrix).nnz == 0

    def test_not_the_latest(self, movielens_small):
        """A random test part differs from the temporal one."""
        assert (random_split(movielens_small).test.matrix != temporal_split(movielens_small).test.matrix).nnz > 0

    def test_works_without_timestamps(self):
        """Random splits need no timestamps, and parts then have none."""
        x = Interactions.from_dataframe(pd.DataFrame({"user_id": [1] * 10, "item_id": range(10)}))
        split = random_split(x, test_fraction=0.3)
        assert split.test.nnz == 3
        assert split.test.timestamps is None


class TestTimeCutSplit:
    # User "old" has history before the cut at 5; user "new" starts at the cut.
    ROWS = [("old", "a", 1), ("old", "b", 2), ("old", "c", 5), ("old", "d", 6), ("new", "a", 6), ("new", "e", 7), ("early", "b", 3)]

    def test_explicit_cut(self):
        """Interactions at or after the cut of users with history go to test; new users stay in train."""
        split = time_cut_split(_toy(self.ROWS), cut=5)
        assert _items_of(split.test, "old") == ["c", "d"]
        assert _items_of(split.train, "old") == ["a", "b"]
        assert _items_of(split.train, "new") == ["a", "e"]
        assert _items_of(split.train, "early") == ["b"]
        assert split.params["cut"] == 5.0
        assert split.params["n_dropped"] == 0

    def test_drop_new_users(self):
        """new_users='drop' removes users without history, so train ends before the cut."""
        split = time_cut_split(_toy(self.ROWS), cut=5, new_users="drop")
        assert _items_of(split.train, "new") == []
        assert split.train.timestamps.max() < 5
        assert split.params["n_dropped"] == 2
        assert split.train.nnz + split.test.nnz == 5

    def test_cut_as_date(self):
        """A date string is read as UTC and gives the same split as its seconds."""
        x = _toy([("u", "a", 1_500_000_000), ("u", "b", 1_600_000_000)])
        split = time_cut_split(x, cut="2019-01-01")
        assert split.params["cut"] == 1_546_300_800.0
        assert _items_of(split.test, "u") == ["b"]

    def test_quantile_cut_on_movielens(self, movielens_small):
        """Without cut, the cut is the 0.8 quantile; test is at or after it, history before it."""
        split = time_cut_split(movielens_small, test_fraction=0.2)
        cut = split.params["cut"]
        assert cut == np.quantile(movielens_small.timestamps, 0.8)
        assert split.test.timestamps.min() >= cut
        assert np.all(_min_per_user(split.train)[split.test.user_counts() > 0] < cut)

    def test_validation_cut_from_fraction(self, movielens_small):
        """The validation cut is a quantile of the pre-cut times; validation lies between the cuts."""
        split = time_cut_split(movielens_small, validation_fraction=0.1, new_users="drop")
        cut, validation_cut = split.params["cut"], split.params["validation_cut"]
        timestamps = movielens_small.timestamps
        assert validation_cut == np.quantile(timestamps[timestamps < cut], 0.9)
        assert split.validation.timestamps.min() >= validation_cut
        assert split.validation.timestamps.max() < cut
        assert split.train.timestamps.max() < validation_cut
        assert split.train.nnz + split.validation.nnz + split.test.nnz + split.params["n_dropped"] == movielens_small.nnz

    def test_explicit_validation_cut(self):
        """validation_cut places the second cut; only users with history before it get validation."""
        split = time_cut_split(_toy(self.ROWS), cut=6, validation_cut=3)
        assert _items_of(split.test, "old") == ["d"]
        assert _items_of(split.validation, "old") == ["c"]
        assert _items_of(split.train, "early") == ["b"]  # first interaction at the validation cut
        assert split.params["validation_cut"] == 3.0

    def test_validation_cut_after_cut(self):
        """A validation cut not earlier than the test cut raises."""
        with pytest.raises(ValueError, match=re.escape("validation_cut (6 s) must be earlier than cut (5 s).")):
            time_cut_split(_toy(self.ROWS), cut=5, validation_cut=6)

    def test_cut_outside_range(self):
        """A cut after every timestamp raises with the range of times."""
        with pytest.raises(ValueError, match=re.escape("cut=100 leaves no test interactions") + ".*" + re.escape("(timestamps range from 1 to 7 s)")):
            time_cut_split(_toy(self.ROWS), cut=100)

    @pytest.mark.parametrize("cut", ["not a date", float("nan")])
    def test_invalid_cut(self, cut):
        """A cut that is neither a time nor a number raises naming it."""
        with pytest.raises(ValueError, match=re.escape(f"invalid cut {cut!r}")):
            time_cut_split(_toy(self.ROWS), cut=cut)

    def test_invalid_new_users(self):
        """An unknown new_users policy lists the valid ones."""
        with pytest.raises(ValueError, match=re.escape("invalid new_users 'test': expected 'train'")):
            time_cut_split(_toy(self.ROWS), cut=5, new_users="test")


class TestSplitInteractions:
    def test_dispatches_by_name(self, movielens_small):
        """A protocol name gives the same split as calling its function, and underscores are accepted."""
        direct = random_split(movielens_small, test_fraction=0.1, seed=2)
        named = split_interactions(movielens_small, "random", test_fraction=0.1, seed=2)
        underscored = split_interactions(movielens_small, "leave_one_out")
        assert (direct.test.matrix != named.test.matrix).nnz == 0
        assert named.params == {"test_fraction": 0.1, "validation_fraction": 0.0, "seed": 2}
        assert underscored.protocol == "leave-one-out"

    def test_unknown_protocol(self, movielens_small):
        """An unknown name lists the valid protocols."""
        expected = "unknown split protocol 'kfold': expected one of ['temporal', 'leave-one-out', 'random', 'time-cut']."
        with pytest.raises(ValueError, match=re.escape(expected)):
            split_interactions(movielens_small, "kfold")

    def test_parameter_of_other_protocol(self, movielens_small):
        """A parameter that the protocol does not take raises listing the ones it does."""
        expected = "split protocol 'temporal' has no parameter 'seed'. Its parameters are ['test_fraction', 'validation_fraction']."
        with pytest.raises(TypeError, match=re.escape(expected)):
            split_interactions(movielens_small, "temporal", seed=1)

    @pytest.mark.parametrize("protocol", ["temporal", "random", "time-cut"])
    @pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, math.nan, True, "0.2"])
    def test_bad_test_fraction(self, movielens_small, protocol, fraction):
        """test_fraction outside (0, 1), or not a number, raises naming the value."""
        expected = f"test_fraction must be a number between 0 and 1 (exclusive), got {fraction!r}."
        with pytest.raises(ValueError, match=re.escape(expected)):
            split_interactions(movielens_small, protocol, test_fraction=fraction)

    @pytest.mark.parametrize("fraction", [1, -0.5, 2.0])
    def test_bad_validation_fraction(self, movielens_small, fraction):
        """validation_fraction may be 0 but not negative or 1 and above."""
        expected = f"validation_fraction must be a number between 0 (inclusive, 0 for none) and 1 (exclusive), got {fraction!r}."
        with pytest.raises(ValueError, match=re.escape(expected)):
            split_interactions(movielens_small, "temporal", validation_fraction=fraction)


class TestSplit:
    def test_rejects_parts_of_other_datasets(self):
        """Parts with different id maps cannot form a split."""
        first = _toy([("u", "a", 1), ("u", "b", 2)])
        second = _toy([("v", "a", 1), ("v", "b", 2)])
        with pytest.raises(ValueError, match=re.escape("split parts must share id maps and shape")):
            Split(first, second, protocol="custom")

    def test_rejects_overlapping_parts(self):
        """A pair present in train and test is rejected as a leak."""
        x = _toy([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])
        split = temporal_split(x, test_fraction=0.4)
        with pytest.raises(ValueError, match=re.escape("1 (user, item) pairs appear in both train and test. Each interaction must be in one part only.")):
            Split(x, split.test, protocol="custom")

    def test_overlap_with_validation(self):
        """A validation part that repeats test pairs is rejected."""
        x = _toy([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])
        split = leave_one_out(x)
        with pytest.raises(ValueError, match=re.escape("1 (user, item) pairs appear in both test and validation.")):
            Split(split.train, split.test, split.test, protocol="custom")
