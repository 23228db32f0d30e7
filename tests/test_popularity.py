"""Tests of the MostPopular baseline on a hand-made dataset and against a sorting oracle."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recx.baselines import MostPopular
from recx.data.interactions import Interactions
from recx.recommender import top_k_from_scores


@pytest.fixture
def tiny() -> Interactions:
    """Five users and five items with known user counts.

    Item ids sort as "p" < "q" < "r" < "s" < "t", so their indices are 0 .. 4.
    Users per item: p 1, q 4, r 2, s 2, t 0 (t appears only in the metadata).
    Popularity order with ties by index: q (4), r (2), s (2), p (1), t (0).
    """
    frame = pd.DataFrame(
        {
            "user": ["ann", "ann", "bob", "bob", "cid", "cid", "dee", "dee", "eve"],
            "item": ["q", "r", "q", "s", "q", "r", "q", "s", "p"],
            # Weights must not matter: a heavy rating of "p" does not make it popular.
            "rating": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 50.0],
        }
    )
    metadata = pd.DataFrame({"title": ["P", "Q", "R", "S", "T"]}, index=["p", "q", "r", "s", "t"])
    return Interactions.from_dataframe(frame, user_col="user", item_col="item", weight_col="rating", item_metadata=metadata, include_metadata_items=True)


class TestKnownOrder:
    def test_counts_and_ranking(self, tiny: Interactions) -> None:
        """fit counts users per item and ranks by count, then index."""
        model = MostPopular().fit(tiny)
        assert model.item_counts is not None
        assert model.item_counts.tolist() == [1, 4, 2, 2, 0]
        assert model.ranking is not None
        assert model.ranking.tolist() == [1, 2, 3, 0, 4]

    def test_recommend_skips_seen_items(self, tiny: Interactions) -> None:
        """ann has seen q and r, so she gets s, p, t."""
        ids, scores = MostPopular().fit(tiny).recommend("ann", k=3)
        assert ids.tolist() == ["s", "p", "t"]
        assert scores.tolist() == [2.0, 1.0, 0.0]

    def test_recommend_tie_by_index(self, tiny: Interactions) -> None:
        """eve has seen only p; r and s tie at 2 and come in index order."""
        ids, _ = MostPopular().fit(tiny).recommend("eve", k=3)
        assert ids.tolist() == ["q", "r", "s"]

    def test_recommend_without_filtering(self, tiny: Interactions) -> None:
        """filter_seen=False returns the global ranking."""
        ids, _ = MostPopular().fit(tiny).recommend("ann", k=5, filter_seen=False)
        assert ids.tolist() == ["q", "r", "s", "p", "t"]

    def test_recommend_fewer_left_than_k(self, tiny: Interactions) -> None:
        """Asking for the whole catalogue returns only the unseen items."""
        ids, scores = MostPopular().fit(tiny).recommend("bob", k=5)
        assert ids.tolist() == ["r", "p", "t"]
        assert scores.shape == (3,)

    def test_padding_in_indices(self, tiny: Interactions) -> None:
        """recommend_indices pads with -1 and -inf when fewer than k items remain."""
        model = MostPopular().fit(tiny)
        users = tiny.users.to_index(["bob", "eve"])
        indices, scores = model.recommend_indices(users, 4, exclude=tiny.matrix[users])
        assert indices.tolist() == [[2, 0, 4, -1], [1, 2, 3, 4]]
        assert scores[0, 3] == -np.inf
        assert indices.dtype == np.int64
        assert scores.dtype == np.float32

    def test_score_users(self, tiny: Interactions) -> None:
        """score_users broadcasts the counts to every user as float32."""
        scores = MostPopular().fit(tiny).score_users(np.array([0, 3]))
        assert scores.dtype == np.float32
        assert scores.tolist() == [[1, 4, 2, 2, 0], [1, 4, 2, 2, 0]]


def test_matches_sorting_oracle() -> None:
    """On seeded random data, recommend_indices equals a full stable sort with exclusions masked."""
    rng = np.random.default_rng(17)
    matrix = sp.random(300, 80, density=0.15, format="csr", random_state=3)
    matrix.data[:] = 1.0
    train = Interactions.from_scipy(matrix)
    model = MostPopular().fit(train)
    counts = np.asarray((matrix != 0).sum(axis=0)).ravel()
    users = rng.choice(300, size=60, replace=False)
    for k in (1, 5, 30, 79, 80):
        indices, scores = model.recommend_indices(users, k, exclude=train.matrix[users])
        assert indices.shape == (60, k)
        for row, user in enumerate(users):
            seen = set(train.user_items(user).tolist())
            order = [item for item in np.lexsort((np.arange(80), -counts)) if item not in seen][:k]
            padded = order + [-1] * (k - len(order))
            assert indices[row].tolist() == padded
            assert scores[row, : len(order)].tolist() == counts[order].astype(np.float32).tolist()


def test_agrees_with_dense_scores_on_distinct_counts() -> None:
    """Without ties, the override equals ranking score_users with top_k_from_scores."""
    # Item i is used by i + 1 of the 12 users, so all counts differ.
    dense = np.zeros((12, 10), dtype=np.float32)
    for item in range(10):
        dense[: item + 1, item] = 1.0
    train = Interactions.from_scipy(sp.csr_matrix(dense))
    model = MostPopular().fit(train)
    users = np.arange(12)
    fast = model.recommend_indices(users, 4, exclude=train.matrix[users])
    slow = top_k_from_scores(model.score_users(users), 4, train.matrix[users])
    assert np.array_equal(fast[0], slow[0])
    assert np.array_equal(fast[1], slow[1])


class TestErrors:
    def test_not_fitted(self) -> None:
        with pytest.raises(RuntimeError, match=re.escape("MostPopular is not fitted: call fit(train) first.")):
            MostPopular().recommend_indices(np.array([0]), 3)

    def test_fit_wrong_type(self) -> None:
        with pytest.raises(TypeError, match=re.escape("train must be an Interactions, got csr_matrix.")):
            MostPopular().fit(sp.csr_matrix(np.eye(3)))  # type: ignore[arg-type]

    def test_user_out_of_range(self, tiny: Interactions) -> None:
        with pytest.raises(IndexError, match=re.escape("user indices [7] are out of range for 5 training users.")):
            MostPopular().fit(tiny).recommend_indices(np.array([0, 7]), 3)

    @pytest.mark.parametrize("k", [0, -1, 2.0])
    def test_invalid_k(self, tiny: Interactions, k: object) -> None:
        """k must be a positive integer, in recommend_indices and recommend alike."""
        message = f"k must be a positive integer no larger than the catalogue size (5 items), got {k!r}."
        model = MostPopular().fit(tiny)
        with pytest.raises(ValueError, match=re.escape(message)):
            model.recommend_indices(np.array([0]), k)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=re.escape(message)):
            model.recommend("ann", k=k)  # type: ignore[arg-type]

    def test_k_above_catalogue(self, tiny: Interactions) -> None:
        """k beyond the catalogue raises instead of being clipped."""
        message = "k=6 exceeds the catalogue size (5 items). Pass k <= 5; k=5 ranks every item."
        model = MostPopular().fit(tiny)
        with pytest.raises(ValueError, match=re.escape(message)):
            model.recommend_indices(np.array([0]), 6)
        with pytest.raises(ValueError, match=re.escape(message)):
            model.recommend("ann", k=6)

    def test_exclude_shape(self, tiny: Interactions) -> None:
        with pytest.raises(ValueError, match=re.escape("exclude has shape (2, 5), expected (1, 5): one row per user, one column per item.")):
            MostPopular().fit(tiny).recommend_indices(np.array([0]), 3, exclude=tiny.matrix[:2])

    def test_unknown_user_id(self, tiny: Interactions) -> None:
        with pytest.raises(KeyError, match="unknown user id"):
            MostPopular().fit(tiny).recommend("zed", k=3)
