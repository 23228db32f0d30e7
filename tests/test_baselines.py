"""Tests of the non-neural baselines: known answers, brute-force oracles and the Recommender contract.

MostPopular's metrics on a real split are checked against an independent
per-user numpy computation in tests/test_evaluate.py
(test_most_popular_matches_reference) and, on the benchmark's own split,
in tests/test_bench.py.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recx.baselines import BPRMF, EASE, IALS, ItemKNN, MostPopular
from recx.baselines._factors import FactorModel
from recx.baselines.ease import gram_to_weights
from recx.data import Interactions, temporal_split
from recx.evaluation import evaluate
from recx.recommender import Recommender


def interactions_from_dense(dense: np.ndarray, user_ids: list | None = None, item_ids: list | None = None) -> Interactions:
    """Build interactions from a dense 0/1 user x item array, with optional external ids."""
    rows, columns = np.nonzero(dense)
    users = np.asarray(user_ids if user_ids is not None else np.arange(dense.shape[0]))
    items = np.asarray(item_ids if item_ids is not None else np.arange(dense.shape[1]))
    frame = pd.DataFrame({"user_id": users[rows], "item_id": items[columns], "timestamp": np.arange(len(rows), dtype=float)})
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


@pytest.fixture(scope="module")
def clustered() -> Interactions:
    """Four groups of 30 users; each user has 12 random items of the group's 15-item block and 2 random items elsewhere."""
    rng = np.random.default_rng(7)
    n_groups, users_per_group, block = 4, 30, 15
    n_items = n_groups * block
    dense = np.zeros((n_groups * users_per_group, n_items), dtype=np.int8)
    for user in range(dense.shape[0]):
        group = user // users_per_group
        dense[user, group * block + rng.choice(block, size=12, replace=False)] = 1
        dense[user, rng.choice(n_items, size=2, replace=False)] = 1
    rows, columns = np.nonzero(dense)
    order = rng.permutation(len(rows))
    frame = pd.DataFrame({"user_id": rows[order], "item_id": columns[order], "timestamp": np.arange(len(rows), dtype=float)})
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


class RandomScores(Recommender):
    """Scores drawn uniformly at random: the floor every baseline must clear."""

    def fit(self, train: Interactions) -> RandomScores:
        self.train = train
        return self

    def score_users(self, user_indices: np.ndarray) -> np.ndarray:
        assert self.train is not None
        return np.random.default_rng(0).random((len(user_indices), self.train.n_items)).astype(np.float32)


FACTORIES = {
    "ItemKNN": lambda: ItemKNN(k_neighbors=20),
    "EASE": lambda: EASE(l2=10.0),
    "IALS": lambda: IALS(factors=8, regularization=0.1, alpha=10.0, iterations=10, seed=0),
    "BPRMF": lambda: BPRMF(factors=8, learning_rate=0.05, regularization=0.001, iterations=200, seed=0),
}


# ------------------------------------------------------------------ EASE


class TestEASE:
    def test_weights_known_answer(self):
        """EASE on two users and three items gives the hand-computed B.

        X = [[1, 1, 0], [1, 0, 1]], λ = 1: X^T X + I = [[3, 1, 1], [1, 2, 0], [1, 0, 2]],
        whose inverse is P = [[4, -2, -2], [-2, 5, 1], [-2, 1, 5]] / 8, and B_ij = -P_ij / P_jj.
        """
        x = interactions_from_dense(np.array([[1, 1, 0], [1, 0, 1]]))
        model = EASE(l2=1.0).fit(x)
        expected = np.array([[0.0, 0.4, 0.4], [0.5, 0.0, -0.2], [0.5, -0.2, 0.0]])
        np.testing.assert_allclose(model.weights, expected, atol=1e-6)
        assert model.weights.dtype == np.float32

    def test_scores_are_history_times_weights(self):
        """score_users returns x_u B for each user."""
        x = interactions_from_dense(np.array([[1, 1, 0], [1, 0, 1]]))
        model = EASE(l2=1.0).fit(x)
        np.testing.assert_allclose(model.score_users(np.array([0, 1])), np.array([[0.5, 0.4, 0.2], [0.5, 0.2, 0.4]]), atol=1e-6)

    def test_matches_float64_inverse(self):
        """The in-place float32 Cholesky inverse matches numpy's float64 inverse on a larger random matrix."""
        rng = np.random.default_rng(3)
        x = (rng.random((300, 1500)) < 0.05).astype(np.float64)
        gram = x.T @ x
        precision = np.linalg.inv(gram + 20.0 * np.eye(1500))
        expected = -precision / np.diag(precision)[None, :]
        np.fill_diagonal(expected, 0.0)
        weights = gram_to_weights(gram.astype(np.float32), 20.0)
        np.testing.assert_allclose(weights, expected, atol=2e-5)

    def test_item_limit(self):
        """A catalogue above max_items raises naming the size and the fix."""
        x = interactions_from_dense(np.eye(5, dtype=int))
        expected = "EASE needs a dense 5 x 5 float32 matrix (0.0 GB, about twice that while fitting), but max_items is 4. Pass EASE(max_items=5) if the memory is there, or use ItemKNN or IALS."
        with pytest.raises(ValueError, match=re.escape(expected)):
            EASE(max_items=4).fit(x)

    def test_invalid_l2(self):
        """l2 must be positive."""
        with pytest.raises(ValueError, match=re.escape("l2 must be a finite number > 0, got 0.")):
            EASE(l2=0)


# ------------------------------------------------------------------ ItemKNN


def brute_force_cosine(dense: np.ndarray, shrink: float) -> np.ndarray:
    """Return the shrunk cosine similarity of the columns of a 0/1 matrix, with a zero diagonal."""
    binary = (dense != 0).astype(np.float64)
    counts = binary.T @ binary
    norms = np.sqrt(np.diag(counts))
    similarity = counts / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(similarity, 0.0)
    return similarity


class TestItemKNN:
    @pytest.mark.parametrize("shrink", [0.0, 5.0])
    def test_full_neighbourhood_equals_cosine(self, clustered, shrink):
        """With k >= n_items every similarity is kept and equals the brute-force cosine."""
        model = ItemKNN(k_neighbors=clustered.n_items, shrink=shrink).fit(clustered)
        expected = brute_force_cosine(clustered.matrix.toarray(), shrink)
        np.testing.assert_allclose(model.similarity.toarray(), expected, atol=1e-6)

    def test_pruning_keeps_top_k_per_item(self, clustered):
        """Column i keeps item i's k largest similarities (compared as sorted values, which ties cannot change)."""
        k = 5
        model = ItemKNN(k_neighbors=k).fit(clustered)
        full = brute_force_cosine(clustered.matrix.toarray(), 0.0)
        kept = model.similarity.toarray()
        for item in range(clustered.n_items):
            column = kept[:, item]
            assert np.count_nonzero(column) == min(k, np.count_nonzero(full[:, item]))
            np.testing.assert_allclose(np.sort(column[column > 0])[::-1], np.sort(full[:, item])[::-1][: np.count_nonzero(column)], atol=1e-6)
            # Every kept value is a true similarity of that pair.
            np.testing.assert_allclose(column[column > 0], full[column > 0, item], atol=1e-6)

    def test_scores_sum_neighbour_similarities(self, clustered):
        """score_users equals the user's row times the kept similarity matrix."""
        model = ItemKNN(k_neighbors=7, shrink=2.0).fit(clustered)
        users = np.array([0, 5, 77])
        expected = (clustered.matrix.toarray()[users] != 0) @ model.similarity.toarray()
        np.testing.assert_allclose(model.score_users(users), expected, atol=1e-5)

    def test_invalid_neighbours(self):
        """k_neighbors must be a positive integer."""
        with pytest.raises(ValueError, match=re.escape("k_neighbors must be a positive integer, got 0.")):
            ItemKNN(k_neighbors=0)


# ------------------------------------------------------------------ factorisation models


class TestFactorisation:
    def test_ials_scores_are_factor_products(self, clustered):
        """IALS scores equal user_factors @ item_factors.T."""
        model = IALS(factors=4, iterations=3, seed=1).fit(clustered)
        users = np.array([2, 3])
        np.testing.assert_allclose(model.score_users(users), model.user_factors[users] @ model.item_factors.T, rtol=1e-6)
        assert model.user_factors.shape == (clustered.n_users, 4)

    def test_ials_seed_repeats(self, clustered):
        """Two IALS fits with the same seed give identical factors, whatever the thread count."""
        first = IALS(factors=6, iterations=4, seed=3, num_threads=1).fit(clustered)
        second = IALS(factors=6, iterations=4, seed=3, num_threads=2).fit(clustered)
        np.testing.assert_allclose(first.item_factors, second.item_factors, rtol=1e-5, atol=1e-6)

    def test_bpr_seed_repeats(self, clustered):
        """Two single-threaded BPR fits with the same seed give identical factors."""
        first = BPRMF(factors=6, iterations=5, seed=3).fit(clustered)
        second = BPRMF(factors=6, iterations=5, seed=3).fit(clustered)
        np.testing.assert_array_equal(first.model.item_factors, second.model.item_factors)

    def test_bpr_scores_include_item_bias(self, clustered):
        """BPRMF scores equal the factor products, whose last column pairs implicit's constant 1 with the item bias."""
        model = BPRMF(factors=4, iterations=3, seed=1).fit(clustered)
        users = np.array([0, 5, 7])
        assert model.user_factors.shape == (clustered.n_users, 5)
        np.testing.assert_array_equal(model.user_factors[:, -1], np.ones(clustered.n_users, dtype=np.float32))
        expected = model.user_factors[users, :-1] @ model.item_factors[:, :-1].T + model.item_factors[:, -1]
        np.testing.assert_allclose(model.score_users(users), expected, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize(("factory", "logger_name"), [(lambda: IALS(factors=4, iterations=2), "recx.baselines.ials"), (lambda: BPRMF(factors=4, iterations=2), "recx.baselines.bpr")])
    def test_fit_logs_through_model_module(self, clustered, caplog, factory, logger_name):
        """The shared fit logs the fitted model and the data size on the model module's logger."""
        model = factory()
        with caplog.at_level(logging.DEBUG, logger=logger_name):
            model.fit(clustered)
        records = [record for record in caplog.records if record.name == logger_name]
        assert len(records) == 1
        assert records[0].getMessage().startswith(f"fitted {model!r} on {clustered.n_users} users x {clustered.n_items} items in ")

    def test_factor_models_share_fit_and_scoring(self):
        """IALS and BPRMF take fit and score_users from FactorModel instead of defining their own."""
        for model in (IALS, BPRMF):
            assert issubclass(model, FactorModel)
            assert "fit" not in vars(model)
            assert "score_users" not in vars(model)

    def test_factors_before_fit(self):
        """Reading the factors of an unfitted model raises with the fix."""
        with pytest.raises(RuntimeError, match=re.escape("BPRMF is not fitted: call fit(train) first.")):
            BPRMF().user_factors

    def test_invalid_alpha(self):
        """alpha must be positive."""
        with pytest.raises(ValueError, match=re.escape("alpha must be a finite number > 0, got -1.0.")):
            IALS(alpha=-1.0)

    def test_invalid_seed(self):
        """seed must be a non-negative integer."""
        with pytest.raises(ValueError, match=re.escape("seed must be a non-negative integer, got 1.5.")):
            BPRMF(seed=1.5)


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", list(FACTORIES))
def test_beats_random_on_clusters(clustered, name):
    """Each baseline ranks held-out items of the user's own cluster far above random."""
    split = temporal_split(clustered, test_fraction=0.2)
    model = FACTORIES[name]().fit(split.train)
    baseline = evaluate(RandomScores().fit(split.train), split.train, split.test, k=10, metrics=["ndcg"])["ndcg@10"]
    score = evaluate(model, split.train, split.test, k=10, metrics=["ndcg"])["ndcg@10"]
    assert score > baseline + 0.15, f"{name} NDCG@10 {score:.3f} vs random {baseline:.3f}"


@pytest.mark.parametrize("name", list(FACTORIES))
def test_recommend_excludes_seen_and_returns_ids(name):
    """recommend() returns external string ids, best first, without the user's training items."""
    # Every user has the 5 shared items and 2 items of their own: 17 items in all.
    dense = np.zeros((6, 17), dtype=int)
    dense[:, :5] = 1
    dense[np.arange(6), 5 + 2 * np.arange(6)] = 1
    dense[np.arange(6), 6 + 2 * np.arange(6)] = 1
    x = interactions_from_dense(dense, user_ids=[f"u{i}" for i in range(6)], item_ids=[f"item-{i:02d}" for i in range(17)])
    model = FACTORIES[name]().fit(x)
    item_ids, scores = model.recommend("u3", k=8)
    assert len(item_ids) == 8
    assert all(isinstance(item, str) and item.startswith("item-") for item in item_ids)
    seen = set(x.items.to_id(x.user_items(x.users.to_index(["u3"])[0])).tolist())
    assert not seen & set(item_ids.tolist())
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_score_shape_and_dtype(clustered, name):
    """score_users returns (n, n_items) float32."""
    model = FACTORIES[name]().fit(clustered)
    scores = model.score_users(np.array([0, 1, 2]))
    assert scores.shape == (3, clustered.n_items)
    assert scores.dtype == np.float32


@pytest.mark.parametrize("name", list(FACTORIES))
def test_unfitted_raises(name):
    """score_users before fit raises with the fix."""
    model = FACTORIES[name]()
    with pytest.raises(RuntimeError, match=re.escape(f"{type(model).__name__} is not fitted: call fit(train) first.")):
        model.score_users(np.array([0]))


# Every recommender, the FAISS-backed two-tower model included, treats k alike.
ALL_RECOMMENDERS = {"MostPopular": MostPopular, **FACTORIES, "TwoTower": lambda: _two_tower()}


def _two_tower() -> Recommender:
    from recx.training import TrainConfig, TwoTowerRecommender

    return TwoTowerRecommender(embedding_dim=8, hidden_dims=[], output_dim=8, training=TrainConfig(epochs=1, batch_size=64, show_progress=False, device="cpu"))


@pytest.fixture(scope="module")
def fitted_on_clusters(clustered):
    """Every recommender fitted once on the train part of a temporal split of the clustered data."""
    split = temporal_split(clustered, test_fraction=0.2)
    return split, {name: factory().fit(split.train) for name, factory in ALL_RECOMMENDERS.items()}


class TestCutoffContract:
    @pytest.mark.parametrize("name", list(ALL_RECOMMENDERS))
    @pytest.mark.parametrize("k", [0, -2])
    def test_k_not_positive(self, fitted_on_clusters, name, k):
        """k <= 0 raises the same message from recommend_indices and recommend."""
        split, models = fitted_on_clusters
        message = f"k must be a positive integer no larger than the catalogue size ({split.train.n_items} items), got {k}."
        with pytest.raises(ValueError, match=re.escape(message)):
            models[name].recommend_indices(np.array([0, 1]), k, exclude=split.train.matrix[[0, 1]])
        with pytest.raises(ValueError, match=re.escape(message)):
            models[name].recommend(split.train.users.ids[0], k)

    @pytest.mark.parametrize("name", list(ALL_RECOMMENDERS))
    def test_k_above_catalogue(self, fitted_on_clusters, name):
        """k beyond the catalogue raises with the largest valid k instead of being clipped."""
        split, models = fitted_on_clusters
        n_items = split.train.n_items
        message = f"k={n_items + 1} exceeds the catalogue size ({n_items} items). Pass k <= {n_items}; k={n_items} ranks every item."
        with pytest.raises(ValueError, match=re.escape(message)):
            models[name].recommend_indices(np.array([0, 1]), n_items + 1, exclude=split.train.matrix[[0, 1]])
        with pytest.raises(ValueError, match=re.escape(message)):
            models[name].recommend(split.train.users.ids[0], n_items + 1)

    @pytest.mark.parametrize("name", list(ALL_RECOMMENDERS))
    def test_k_equal_to_catalogue(self, fitted_on_clusters, name):
        """k = n_items ranks every unseen item once and pads each row with -1 for the seen ones."""
        split, models = fitted_on_clusters
        users = np.array([0, 1, 2])
        exclude = split.train.matrix[users]
        indices, _ = models[name].recommend_indices(users, split.train.n_items, exclude=exclude)
        assert indices.shape == (3, split.train.n_items)
        for row, user in enumerate(users):
            unseen = set(range(split.train.n_items)) - set(split.train.user_items(user).tolist())
            assert set(indices[row][indices[row] >= 0].tolist()) == unseen
            assert np.all(indices[row][len(unseen) :] == -1)

    @pytest.mark.parametrize("name", list(ALL_RECOMMENDERS))
    def test_evaluate_cutoff_above_catalogue(self, fitted_on_clusters, name):
        """evaluate rejects a cut-off above the catalogue with one message for every model."""
        split, models = fitted_on_clusters
        n_items = split.train.n_items
        message = f"cut-off k={n_items + 5} exceeds the catalogue size ({n_items} items), so no model can fill the list. Pass cut-offs <= {n_items}; k={n_items} ranks every item."
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate(models[name], split.train, split.test, k=(10, n_items + 5))


def test_user_out_of_range(clustered):
    """A user index beyond the training users raises naming it."""
    model = EASE(l2=10.0).fit(clustered)
    with pytest.raises(IndexError, match=re.escape(f"user indices [{clustered.n_users}] are out of range for {clustered.n_users} training users.")):
        model.score_users(np.array([0, clustered.n_users]))


def test_empty_train_rejected():
    """Fitting on interactions without entries raises."""
    x = interactions_from_dense(np.eye(3, dtype=int))
    empty = x.with_entries(sp.csr_matrix(x.matrix.shape, dtype=np.float32), np.empty(0))
    with pytest.raises(ValueError, match=re.escape("train has no interactions (3 users x 3 items). Fit on a non-empty training split.")):
        ItemKNN().fit(empty)


def test_public_api():
    """recx.baselines exports every baseline."""
    import recx.baselines

    assert set(recx.baselines.__all__) == {"BPRMF", "EASE", "IALS", "ItemKNN", "MostPopular"}
    assert isinstance(MostPopular(), Recommender)
