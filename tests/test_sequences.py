"""Tests of the per-user sequence reader and the Amazon dataset names."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recx.data import leave_one_out, load_dataset, read_sequences


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


class TestReadSequences:
    def test_known_file(self, tmp_path):
        """Each line becomes one user's items, with positions as timestamps."""
        x = read_sequences(_write(tmp_path / "seq.txt", "1 10 20 30\n2 20 40\n\n3 50 10 20 40 30\n"))
        assert (x.n_users, x.n_items, x.nnz) == (3, 5, 10)
        assert x.users.ids.tolist() == [1, 2, 3]
        user = x.users.to_index([3])[0]
        items = x.items.to_id(x.user_items(user)).tolist()
        start = x.matrix.indptr[user]
        positions = dict(zip(items, x.timestamps[start : start + len(items)].tolist()))
        assert positions == {10: 1.0, 20: 2.0, 30: 4.0, 40: 3.0, 50: 0.0}
        assert np.all(x.matrix.data == 1.0)

    def test_leave_one_out_takes_last_items(self, tmp_path):
        """leave_one_out holds out each line's last item for test and the one before for validation."""
        x = read_sequences(_write(tmp_path / "seq.txt", "1 10 20 30\n2 30 40 10\n"))
        split = leave_one_out(x, validation=True)
        test = {int(user): item for user, item in zip(split.test.to_dataframe()["user_id"], split.test.to_dataframe()["item_id"])}
        validation = {int(user): item for user, item in zip(split.validation.to_dataframe()["user_id"], split.validation.to_dataframe()["item_id"])}
        assert test == {1: 30, 2: 10}
        assert validation == {1: 20, 2: 40}

    def test_repeated_item_keeps_last_position(self, tmp_path):
        """An item repeated within a line is stored once, at its last position."""
        x = read_sequences(_write(tmp_path / "seq.txt", "1 10 20 10\n"))
        assert x.nnz == 2
        assert dict(zip(x.items.to_id(x.user_items(0)).tolist(), x.timestamps.tolist())) == {10: 2.0, 20: 1.0}

    def test_missing_file(self, tmp_path):
        """A missing file raises naming the path."""
        with pytest.raises(FileNotFoundError, match=re.escape(f"sequence file not found: {tmp_path / 'absent.txt'}.")):
            read_sequences(tmp_path / "absent.txt")

    def test_folder_instead_of_file(self, tmp_path):
        """A folder raises, naming the file to pass instead."""
        with pytest.raises(FileNotFoundError, match=re.escape("It is a folder: pass the sequence file inside it, for example Beauty.txt.")):
            read_sequences(tmp_path)

    def test_non_integer_token(self, tmp_path):
        """A token that is not an integer raises naming the line."""
        path = _write(tmp_path / "seq.txt", "1 10 20\n2 x 30\n")
        with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: expected space-separated integer ids (user id, then items), got '2 x 30'.")):
            read_sequences(path)

    def test_user_without_items(self, tmp_path):
        """A line with only a user id raises."""
        path = _write(tmp_path / "seq.txt", "1 10\n7\n")
        with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: user 7 has no items.")):
            read_sequences(path)

    def test_repeated_user(self, tmp_path):
        """A user id on two lines raises."""
        path = _write(tmp_path / "seq.txt", "1 10\n1 20\n")
        with pytest.raises(ValueError, match=re.escape(f"{path} lists user ids [1] on more than one line.")):
            read_sequences(path)

    def test_blank_file(self, tmp_path):
        """A file of blank lines raises."""
        path = _write(tmp_path / "seq.txt", "\n\n")
        with pytest.raises(ValueError, match=re.escape(f"{path} contains no sequences: every line is blank. Check the path.")):
            read_sequences(path)


class TestAmazonDatasets:
    @pytest.mark.parametrize(("name", "file", "users", "items", "interactions"), [
        ("amazon-beauty", "Beauty.txt", 22_363, 12_101, 198_502),
        ("amazon-sports", "Sports_and_Outdoors.txt", 35_598, 18_357, 296_337),
    ])  # fmt: skip
    def test_published_counts(self, shared_data, name, file, users, items, interactions):
        """The S3-Rec files load with the user, item and interaction counts of the S3-Rec paper (Table 1)."""
        x = load_dataset(name, path=shared_data("s3rec-sequential") / file)
        assert (x.n_users, x.n_items, x.nnz) == (users, items, interactions)
        assert x.user_counts().min() == 5

    def test_leave_one_out_on_beauty(self, shared_data):
        """Leave-one-out on Beauty puts exactly one item per user in test and in validation."""
        x = load_dataset("amazon-beauty", path=shared_data("s3rec-sequential") / "Beauty.txt")
        split = leave_one_out(x, validation=True)
        assert np.all(split.test.user_counts() == 1)
        assert np.all(split.validation.user_counts() == 1)
        # The first line of the file is "1 1 2 3 4 5": item 5 is user 1's test item, item 4 its validation item.
        user = x.users.to_index([1])[0]
        assert x.items.to_id(split.test.user_items(user)).tolist() == [5]
        assert x.items.to_id(split.validation.user_items(user)).tolist() == [4]

    @pytest.mark.parametrize(("name", "mentions"), [("amazon-beauty", "Beauty.txt"), ("amazon-sports", "Sports_and_Outdoors.txt")])
    def test_path_required(self, name, mentions):
        """The Amazon names raise without a path, naming the file to pass."""
        with pytest.raises(ValueError, match=re.escape(f"dataset {name!r} needs a path: pass path= to the S3-Rec sequence file {mentions}")):
            load_dataset(name)
