"""Tests of the evaluation protocol on MovieLens, against independent numpy computations."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recx.baselines import MostPopular
from recx.data.idmap import IdMap
from recx.data.interactions import Interactions
from recx.evaluation import evaluate, format_metrics_table
from recx.evaluation.evaluate import SCORE_BUDGET_BYTES, default_batch_size
from recx.recommender import Recommender, top_k_from_scores

RATINGS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-latest-small" / "ratings.csv"


@pytest.fixture(scope="module")
def movielens() -> Interactions:
    if not RATINGS.is_file():
        pytest.skip(f"MovieLens ratings not found at {RATINGS.resolve()}; these tests need the shared data folder next to the repository.")
    frame = pd.read_csv(RATINGS)
    return Interactions.from_dataframe(frame, user_col="userId", item_col="movieId", timestamp_col="timestamp")


@pytest.fixture(scope="module")
def split(movielens: Interactions) -> tuple[Interactions, Interactions]:
    """Hold out a seeded random 20% of each user's items, at least one for users with two or more."""
    rng = np.random.default_rng(42)
    matrix = movielens.matrix
    in_test = np.zeros(matrix.nnz, dtype=bool)
    for user in range(movielens.n_users):
        start, end = matrix.indptr[user], matrix.indptr[user + 1]
        count = end - start
        if count < 2:
            continue
        n_test = max(1, int(round(0.2 * count)))
        in_test[start + rng.choice(count, size=n_test, replace=False)] = True
    rows = np.repeat(np.arange(movielens.n_users), np.diff(matrix.indptr))
    train_matrix = sp.csr_matrix((matrix.data[~in_test], (rows[~in_test], matrix.indices[~in_test])), shape=matrix.shape)
    test_matrix = sp.csr_matrix((matrix.data[in_test], (rows[in_test], matrix.indices[in_test])), shape=matrix.shape)
    return movielens.with_entries(train_matrix, None), movielens.with_entries(test_matrix, None)


def reference_metrics(rankings: dict[int, np.ndarray], test: Interactions, cutoffs: tuple[int, ...]) -> dict[str, float]:
    """Average the metrics of per-user rankings with plain numpy, one user at a time."""
    sums: dict[str, float] = {}
    covered = {cutoff: set() for cutoff in cutoffs}
    for user, ranking in rankings.items():
        relevant = set(test.user_items(user).tolist())
        for cutoff in cutoffs:
            top = ranking[:cutoff]
            hits = np.isin(top, list(relevant))
            positions = np.flatnonzero(hits) + 1
            ideal = np.sum(1 / np.log2(np.arange(2, min(cutoff, len(relevant)) + 2)))
            values = {
                "recall": hits.sum() / len(relevant),
                "precision": hits.sum() / cutoff,
                "ndcg": np.sum(1 / np.log2(positions + 1)) / ideal,
                "map": np.sum(np.arange(1, len(positions) + 1) / positions) / min(cutoff, len(relevant)),
                "mrr": 1 / positions[0] if len(positions) else 0.0,
                "hit_rate": float(hits.any()),
            }
            for name, value in values.items():
                key = f"{name}@{cutoff}"
                sums[key] = sums.get(key, 0.0) + float(value)
            covered[cutoff].update(top.tolist())
    results = {key: value / len(rankings) for key, value in sums.items()}
    for cutoff in cutoffs:
        results[f"coverage@{cutoff}"] = len(covered[cutoff]) / test.n_items
    return results


class ScoreTable(Recommender):
    """A recommender with a fixed user x item score table, ranked by the base class."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def fit(self, train: Interactions) -> ScoreTable:
        self.train = train
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return self.scores[user_indices].copy()


class Recording(Recommender):
    """Wrap a recommender and keep every ranked batch it returns."""

    def __init__(self, inner: Recommender) -> None:
        self.inner = inner
        self.train = inner.train
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(self, train: Interactions) -> Recording:
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return self.inner.score_users(user_indices)

    def recommend_indices(self, user_indices: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        indices, scores = self.inner.recommend_indices(user_indices, k, exclude=exclude)
        self.batches.append((np.asarray(user_indices).copy(), indices.copy()))
        return indices, scores


class IgnoresExclusion(ScoreTable):
    """A faulty recommender that ranks training items too."""

    def recommend_indices(self, user_indices: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        return super().recommend_indices(user_indices, k, exclude=None)


def test_most_popular_matches_reference(split: tuple[Interactions, Interactions]) -> None:
    """MostPopular's metrics equal a per-user numpy computation of the same protocol."""
    train, test = split
    results = evaluate(MostPopular().fit(train), train, test, k=(10, 20))

    counts = np.diff(train.matrix.tocsc().indptr)
    order = np.lexsort((np.arange(train.n_items), -counts))
    test_users = [user for user in range(test.n_users) if len(test.user_items(user))]
    rankings = {}
    for user in test_users:
        seen = set(train.user_items(user).tolist())
        rankings[user] = np.array([item for item in order[:200] if item not in seen][:20])
    expected = reference_metrics(rankings, test, (10, 20))

    assert results["users"] == len(test_users)
    assert set(results) == set(expected) | {"users"}
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_score_table_matches_reference(split: tuple[Interactions, Interactions]) -> None:
    """A dense-scoring recommender, ranked by the base class, matches argsort per user."""
    train, test = split
    scores = np.random.default_rng(3).random((train.n_users, train.n_items), dtype=np.float32)
    results = evaluate(ScoreTable(scores).fit(train), train, test, k=(5, 20), batch_size=100)

    rankings = {}
    for user in range(test.n_users):
        if len(test.user_items(user)):
            row = scores[user].copy()
            row[train.user_items(user)] = -np.inf
            rankings[user] = np.argsort(-row, kind="stable")[:20]
    expected = reference_metrics(rankings, test, (5, 20))
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_tied_scores_match_stable_sort(split: tuple[Interactions, Interactions]) -> None:
    """With scores drawn from five values, rankings break ties by lower item index, as a stable argsort does."""
    train, test = split
    scores = np.random.default_rng(5).integers(0, 5, size=(train.n_users, train.n_items)).astype(np.float32)
    results = evaluate(ScoreTable(scores).fit(train), train, test, k=(10, 20))

    rankings = {}
    for user in range(test.n_users):
        if len(test.user_items(user)):
            row = scores[user].copy()
            row[train.user_items(user)] = -np.inf
            rankings[user] = np.argsort(-row, kind="stable")[:20]
    expected = reference_metrics(rankings, test, (10, 20))
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_default_batch_size_gives_same_results(split: tuple[Interactions, Interactions]) -> None:
    """The memory-sized default batch and batches of 7 users give the same numbers, up to summation order."""
    train, test = split
    scores = np.random.default_rng(8).random((train.n_users, train.n_items), dtype=np.float32)
    model = ScoreTable(scores).fit(train)
    default = evaluate(model, train, test, k=(10, 20))
    small = evaluate(model, train, test, k=(10, 20), batch_size=7)
    assert default.keys() == small.keys()
    for key in default:
        assert default[key] == pytest.approx(small[key], rel=1e-12), key


def test_training_items_never_ranked(split: tuple[Interactions, Interactions]) -> None:
    """No ranked list handed to the metrics contains one of the user's training items."""
    train, test = split
    recording = Recording(MostPopular().fit(train))
    evaluate(recording, train, test, k=20, batch_size=128)
    assert len(recording.batches) == math.ceil(len(np.flatnonzero(test.user_counts())) / 128)
    for users, ranked in recording.batches:
        for user, row in zip(users, ranked):
            assert not set(row.tolist()) & set(train.user_items(user).tolist())
            assert np.all(row >= 0)


def test_only_test_users_are_scored(split: tuple[Interactions, Interactions]) -> None:
    """Users without test items never reach the recommender."""
    train, test = split
    recording = Recording(MostPopular().fit(train))
    results = evaluate(recording, train, test, k=10)
    scored = np.concatenate([users for users, _ in recording.batches])
    assert scored.tolist() == np.flatnonzero(test.user_counts()).tolist()
    assert results["users"] == len(scored)


def test_batch_size_does_not_change_results(split: tuple[Interactions, Interactions]) -> None:
    """Batches of 7 and of 1024 users give the same averages."""
    train, test = split
    model = MostPopular().fit(train)
    small = evaluate(model, train, test, k=(10, 20), batch_size=7)
    large = evaluate(model, train, test, k=(10, 20), batch_size=1024)
    assert small.keys() == large.keys()
    for key in small:
        assert small[key] == pytest.approx(large[key], rel=1e-12), key


def test_users_argument_restricts_evaluation(split: tuple[Interactions, Interactions]) -> None:
    """users selects a subset; repeats count once and users without test items are skipped."""
    train, test = split
    model = MostPopular().fit(train)
    chosen = np.array([5, 3, 3, 100, 250])
    results = evaluate(model, train, test, k=10, users=chosen)

    recording = Recording(model)
    evaluate(recording, train, test, k=10, users=chosen)
    scored = np.concatenate([users for users, _ in recording.batches])
    expected_users = [user for user in (3, 5, 100, 250) if test.user_counts()[user] > 0]
    assert scored.tolist() == expected_users
    assert results["users"] == len(expected_users)


def test_metric_selection_and_key_order(split: tuple[Interactions, Interactions]) -> None:
    """Keys follow the requested metrics, then ascending k, then "users"."""
    train, test = split
    results = evaluate(MostPopular().fit(train), train, test, k=[20, 10, 20], metrics=["ndcg", "coverage"])
    assert list(results) == ["ndcg@10", "ndcg@20", "coverage@10", "coverage@20", "users"]


def test_coverage_of_most_popular(split: tuple[Interactions, Interactions]) -> None:
    """MostPopular covers only a sliver of the catalogue: more than k items, far fewer than all."""
    train, test = split
    results = evaluate(MostPopular().fit(train), train, test, k=10, metrics=["coverage"])
    assert 10 / train.n_items <= results["coverage@10"] < 0.05


def test_progress_bar_runs(split: tuple[Interactions, Interactions]) -> None:
    """show_progress=True gives the same numbers."""
    train, test = split
    model = MostPopular().fit(train)
    quiet = evaluate(model, train, test, k=10, metrics=["recall"])
    shown = evaluate(model, train, test, k=10, metrics=["recall"], show_progress=True)
    assert quiet == shown


class TestErrors:
    def test_mismatched_shapes(self, split: tuple[Interactions, Interactions]) -> None:
        """A test split over another catalogue is rejected with both shapes."""
        train, test = split
        other = Interactions.from_scipy(test.matrix[:, :100], users=test.users, items=IdMap(test.items.ids[:100]))
        message = f"train and test have different shapes: {train.n_users} x {train.n_items} and {train.n_users} x 100 (users x items)."
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate(MostPopular().fit(train), train, other)

    def test_different_item_ids(self, split: tuple[Interactions, Interactions]) -> None:
        """Same shape but other item ids is rejected."""
        train, test = split
        other = Interactions.from_scipy(test.matrix, users=test.users, items=IdMap(test.items.ids + 1_000_000))
        with pytest.raises(ValueError, match=re.escape("train and test have different item id maps.")):
            evaluate(MostPopular().fit(train), train, other)

    def test_different_user_ids(self, split: tuple[Interactions, Interactions]) -> None:
        """Same shape but other user ids is rejected."""
        train, test = split
        other = Interactions.from_scipy(test.matrix, users=IdMap(test.users.ids + 1_000_000, name="user"), items=test.items)
        with pytest.raises(ValueError, match=re.escape("train and test have different user id maps.")):
            evaluate(MostPopular().fit(train), train, other)

    def test_unfitted_recommender(self, split: tuple[Interactions, Interactions]) -> None:
        """An unfitted recommender is reported before any ranking."""
        train, test = split
        with pytest.raises(RuntimeError, match=re.escape("MostPopular is not fitted: call fit(train) first.")):
            evaluate(MostPopular(), train, test)

    def test_recommender_fitted_on_other_catalogue(self, split: tuple[Interactions, Interactions]) -> None:
        """Item indices of another catalogue would be meaningless."""
        train, test = split
        small = Interactions.from_scipy(train.matrix[:, :50])
        with pytest.raises(ValueError, match=re.escape(f"MostPopular was fitted on a catalogue of 50 items that differs from train's {train.n_items} items.")):
            evaluate(MostPopular().fit(small), train, test)

    def test_leaking_recommender(self, split: tuple[Interactions, Interactions]) -> None:
        """A recommender that returns training items stops the evaluation."""
        train, test = split
        scores = np.zeros((train.n_users, train.n_items), dtype=np.float32)
        scores[:, train.user_items(0)[0]] = 1.0
        with pytest.raises(ValueError, match=re.escape("IgnoresExclusion.recommend_indices returned training item")):
            evaluate(IgnoresExclusion(scores).fit(train), train, test)

    def test_unknown_metric(self, split: tuple[Interactions, Interactions]) -> None:
        """Metric names are checked and the valid ones listed."""
        train, test = split
        message = "unknown metric(s) ['ndcg@10']: expected names from ['recall', 'precision', 'ndcg', 'map', 'mrr', 'hit_rate', 'coverage'], without the '@k' suffix."
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate(MostPopular().fit(train), train, test, metrics=["ndcg@10"])

    @pytest.mark.parametrize("k", [0, (10, -5), ()])
    def test_invalid_k(self, split: tuple[Interactions, Interactions], k: object) -> None:
        """Every cut-off must be a positive integer."""
        train, test = split
        with pytest.raises(ValueError, match="k"):
            evaluate(MostPopular().fit(train), train, test, k=k)  # type: ignore[arg-type]

    def test_invalid_batch_size(self, split: tuple[Interactions, Interactions]) -> None:
        """batch_size must be positive."""
        train, test = split
        with pytest.raises(ValueError, match=re.escape("batch_size must be a positive integer or None, got 0.")):
            evaluate(MostPopular().fit(train), train, test, batch_size=0)

    def test_cutoff_above_catalogue(self, split: tuple[Interactions, Interactions]) -> None:
        """A cut-off longer than the catalogue is rejected before any model is called."""
        train, test = split
        n = train.n_items
        message = f"cut-off k={n + 1} exceeds the catalogue size ({n} items), so no model can fill the list. Pass cut-offs <= {n}; k={n} ranks every item."
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate(Recording(MostPopular().fit(train)), train, test, k=(10, n + 1))

    def test_users_out_of_range(self, split: tuple[Interactions, Interactions]) -> None:
        """User indices beyond the map are rejected."""
        train, test = split
        with pytest.raises(ValueError, match=re.escape(f"users contains indices [{train.n_users}] outside 0 .. {train.n_users - 1}.")):
            evaluate(MostPopular().fit(train), train, test, users=[0, train.n_users])

    def test_no_user_with_test_items(self, split: tuple[Interactions, Interactions]) -> None:
        """A test split without non-zero entries leaves nothing to evaluate."""
        train, test = split
        empty = test.with_entries(sp.csr_matrix(test.matrix.shape, dtype=np.float32), None)
        with pytest.raises(ValueError, match=re.escape("no user to evaluate: none of the selected users has a non-zero test interaction.")):
            evaluate(MostPopular().fit(train), train, empty)


class TestDefaultBatchSize:
    def test_fits_budget(self) -> None:
        """The default batch contains as many float32 score rows as fit in the budget."""
        assert SCORE_BUDGET_BYTES == 64 * 2**20
        assert default_batch_size(4096) == 4096
        assert default_batch_size(18_357) == 913
        assert 913 * 18_357 * 4 <= SCORE_BUDGET_BYTES < 914 * 18_357 * 4

    def test_at_least_one_row(self) -> None:
        """A catalogue larger than the budget still gets one user per batch."""
        assert default_batch_size(10**9) == 1


# ------------------------------------------------------------------ top-k selection


def oracle_top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
    """Rank each row by (score descending, item index ascending) with a full sort, one row at a time."""
    scores = scores.astype(np.float32)
    indices = np.full((scores.shape[0], k), -1, dtype=np.int64)
    values = np.full((scores.shape[0], k), -np.inf, dtype=np.float32)
    for row in range(scores.shape[0]):
        candidates = scores[row].copy()
        if exclude is not None:
            candidates[exclude.indices[exclude.indptr[row] : exclude.indptr[row + 1]]] = -np.inf
        order = sorted(range(len(candidates)), key=lambda item: (-candidates[item], item))[:k]
        kept = [item for item in order if candidates[item] != -np.inf]
        indices[row, : len(kept)] = kept
        values[row, : len(kept)] = candidates[kept]
    return indices, values


class TestTopKFromScores:
    @pytest.mark.parametrize("seed", range(6))
    def test_matches_sorting_oracle_with_ties(self, seed: int) -> None:
        """On scores full of ties, infinities and exclusions, every k gives the full sort's first k."""
        rng = np.random.default_rng(seed)
        n_queries, n_items = 40, int(rng.integers(5, 60))
        scores = rng.integers(0, 4, size=(n_queries, n_items)).astype(np.float32)
        scores[rng.random(scores.shape) < 0.05] = np.inf
        scores[rng.random(scores.shape) < 0.05] = -np.inf
        exclude = sp.random(n_queries, n_items, density=0.3, format="csr", random_state=seed)
        exclude.data[::4] = 0.0  # stored zeros exclude too
        for k in sorted({1, 2, 3, n_items // 2 + 1, n_items - 1, n_items} - {0}):
            indices, values = top_k_from_scores(scores.copy(), k, exclude)
            expected_indices, expected_values = oracle_top_k(scores, k, exclude)
            np.testing.assert_array_equal(indices, expected_indices, err_msg=f"k={k}")
            np.testing.assert_array_equal(values, expected_values, err_msg=f"k={k}")
            assert indices.dtype == np.int64
            assert values.dtype == np.float32

    def test_matches_oracle_on_continuous_scores(self) -> None:
        """Float64 scores without exclusions: the same ranking, scores returned as float32."""
        scores = np.random.default_rng(1).standard_normal((30, 200))
        indices, values = top_k_from_scores(scores, 15)
        expected_indices, expected_values = oracle_top_k(scores, 15, None)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(values, expected_values)

    def test_tie_across_the_cut_takes_lower_indices(self) -> None:
        """Three items tie at the second-best score; the two lowest indices fill k=3."""
        scores = np.array([[0.5, 0.9, 0.1, 0.5, 0.5]], dtype=np.float32)
        indices, values = top_k_from_scores(scores, 3)
        assert indices.tolist() == [[1, 0, 3]]
        assert values.tolist() == [[np.float32(0.9), 0.5, 0.5]]

    def test_fewer_items_left_than_k(self) -> None:
        """Rows end with -1 and -inf once the unexcluded items run out."""
        scores = np.array([[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
        exclude = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 0, 0, 0]]))
        indices, values = top_k_from_scores(scores, 3, exclude)
        assert indices.tolist() == [[1, -1, -1], [0, 1, 2]]
        assert values.tolist() == [[2.0, -np.inf, -np.inf], [1.0, 1.0, 1.0]]

    def test_read_only_scores_are_not_modified(self) -> None:
        """A read-only score matrix is copied before the excluded items are masked."""
        scores = np.arange(12, dtype=np.float32).reshape(3, 4)
        scores.flags.writeable = False
        indices, _ = top_k_from_scores(scores, 2, sp.csr_matrix(np.eye(3, 4)))
        assert indices.tolist() == [[3, 2], [3, 2], [3, 1]]
        assert scores[0, 0] == 0.0

    def test_nan_is_rejected(self) -> None:
        """NaN has no rank, so a row containing it stops the selection."""
        scores = np.zeros((3, 5), dtype=np.float32)
        scores[2, 4] = np.nan
        message = "scores contain NaN in 1 of 3 rows (first: row 2); NaN has no rank. Check the model for divergence or NaN inputs."
        with pytest.raises(ValueError, match=re.escape(message)):
            top_k_from_scores(scores, 2)

    @pytest.mark.parametrize(
        ("k", "message"),
        [
            (0, "k must be a positive integer no larger than the catalogue size (5 items), got 0."),
            (6, "k=6 exceeds the catalogue size (5 items). Pass k <= 5; k=5 ranks every item."),
        ],
    )
    def test_k_outside_catalogue(self, k: int, message: str) -> None:
        """k is checked against the number of columns."""
        with pytest.raises(ValueError, match=re.escape(message)):
            top_k_from_scores(np.zeros((2, 5), dtype=np.float32), k)

    def test_exclude_shape(self) -> None:
        """exclude must have one row per query and one column per item."""
        with pytest.raises(ValueError, match=re.escape("exclude has shape (2, 4), expected (2, 5) (one row per query, one column per item).")):
            top_k_from_scores(np.zeros((2, 5), dtype=np.float32), 2, sp.csr_matrix((2, 4)))

    def test_exclude_type(self) -> None:
        """A dense exclusion mask is rejected with the expected type."""
        with pytest.raises(TypeError, match=re.escape("exclude must be a scipy sparse matrix of shape (2, 5) or None, got ndarray.")):
            top_k_from_scores(np.zeros((2, 5), dtype=np.float32), 2, np.zeros((2, 5)))  # type: ignore[arg-type]


class TestFormatTable:
    def test_two_models(self) -> None:
        """One row per model, metrics as columns, "users" last, missing values as "-"."""
        table = format_metrics_table(
            {
                "model": {"ndcg@10": 0.31234, "users": 610},
                "most_popular": {"ndcg@10": 0.1, "recall@10": 0.05, "users": 610},
            }
        )
        expected = "\n".join(
            [
                "| model        | ndcg@10 | recall@10 | users |",
                "|:-------------|--------:|----------:|------:|",
                "| model        |  0.3123 |         - |   610 |",
                "| most_popular |  0.1000 |    0.0500 |   610 |",
            ]
        )
        assert table == expected

    def test_digits(self) -> None:
        """digits sets the decimal places."""
        assert format_metrics_table({"m": {"recall@5": 0.123456}}, digits=2).splitlines()[2] == "| m     |     0.12 |"

    def test_empty(self) -> None:
        """No models is an error."""
        with pytest.raises(ValueError, match=re.escape("results is empty")):
            format_metrics_table({})
