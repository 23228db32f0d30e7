"""Property tests (hypothesis): id maps, split protocols, metrics and exact search against brute-force oracles.

Examples are few and the deadline is off, so the file runs in seconds and
does not fail on a slow machine; each property still covers edge cases such
as single users, ties and k equal to the catalogue size.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recx.data import Interactions, split_interactions
from recx.data.idmap import IdMap
from recx.evaluation.metrics import coverage_at_k, hit_rate_at_k, map_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recx.index import ItemIndex

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- id maps

integer_ids = st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1, max_size=30, unique=True)
text_ids = st.lists(st.text(min_size=0, max_size=6), min_size=1, max_size=30, unique=True)


@PROPERTY_SETTINGS
@given(ids=st.one_of(integer_ids, text_ids), data=st.data())
def test_idmap_round_trip(ids: list[object], data: st.DataObject) -> None:
    """to_index and to_id invert each other, and the JSON form rebuilds an equal map."""
    id_map = IdMap(ids, name="user")
    positions = data.draw(st.lists(st.integers(0, len(ids) - 1), max_size=20))
    assert id_map.to_index(id_map.to_id(positions)).tolist() == positions
    assert id_map.to_id(id_map.to_index(ids)).tolist() == ids
    rebuilt = IdMap.from_dict(json.loads(json.dumps(id_map.to_dict())))
    assert rebuilt == id_map
    assert rebuilt.kind == ("int" if isinstance(ids[0], int) else "str")


@PROPERTY_SETTINGS
@given(values=st.one_of(st.lists(st.integers(-50, 50), min_size=1, max_size=40), st.lists(st.sampled_from(["a", "b", "007", "7", ""]), min_size=1, max_size=40)))
def test_idmap_from_values(values: list[object]) -> None:
    """from_values sorts the distinct ids and returns the index of every value."""
    id_map, indices = IdMap.from_values(values)
    assert id_map.ids.tolist() == sorted(set(values))
    assert id_map.to_id(indices).tolist() == values


# --------------------------------------------------------------------------- splits


@st.composite
def interaction_logs(draw: st.DrawFn) -> Interactions:
    """Up to 10 users with 1 to 8 distinct items each out of up to 15, and integer timestamps that may tie."""
    n_users = draw(st.integers(1, 10))
    n_items = draw(st.integers(2, 15))
    rows = []
    for user in range(n_users):
        items = draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=min(8, n_items)))
        rows += [(f"u{user}", item, draw(st.integers(0, 20))) for item in sorted(items)]
    return Interactions.from_dataframe(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), timestamp_col="timestamp")


def _pairs(part: Interactions | None) -> set[tuple[int, int]]:
    if part is None:
        return set()
    coo = part.matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def _user_times(part: Interactions, user: int) -> np.ndarray:
    return part.timestamps[part.matrix.indptr[user] : part.matrix.indptr[user + 1]]


@PROPERTY_SETTINGS
@given(
    log=interaction_logs(),
    protocol=st.sampled_from(["temporal", "random", "leave-one-out"]),
    test_fraction=st.floats(0.05, 0.95),
    validation_fraction=st.sampled_from([0.0, 0.3]),
)
def test_split_never_leaks(log: Interactions, protocol: str, test_fraction: float, validation_fraction: float) -> None:
    """Parts are disjoint and add up to the input, and every test user keeps a training interaction."""
    options = {"validation": bool(validation_fraction)} if protocol == "leave-one-out" else {"test_fraction": test_fraction, "validation_fraction": validation_fraction}
    try:
        split = split_interactions(log, protocol, **options)
    except ValueError as error:
        # The documented refusal: no user has enough interactions to hold one out.
        event("split rejected: too few interactions per user")
        assert "no user has 2 or more" in str(error)
        if not validation_fraction:
            assert log.user_counts().max() < 2
        return
    train, test, validation = _pairs(split.train), _pairs(split.test), _pairs(split.validation)
    assert not train & test
    assert not train & validation
    assert not test & validation
    assert train | test | validation == _pairs(log)
    test_users = {user for user, _ in test | validation}
    assert test_users <= {user for user, _ in train}
    if protocol == "temporal":
        for user in {user for user, _ in test}:
            assert _user_times(split.train, user).max() <= _user_times(split.test, user).min()


# About half the drawn cuts leave no test interaction, so this property draws more examples.
@settings(PROPERTY_SETTINGS, max_examples=80)
@given(log=interaction_logs(), quantile=st.floats(0.2, 0.9))
def test_time_cut_keeps_test_users_in_train(log: Interactions, quantile: float) -> None:
    """A global time cut puts only users with earlier interactions in test, and nothing leaks."""
    cut = float(np.quantile(log.timestamps, quantile))
    try:
        split = split_interactions(log, "time-cut", cut=cut)
    except ValueError as error:
        event("time cut rejected: no test interactions")
        assert "leaves no test interactions" in str(error)
        return
    assert not _pairs(split.train) & _pairs(split.test)
    assert {user for user, _ in _pairs(split.test)} <= {user for user, _ in _pairs(split.train)}
    assert split.test.timestamps.min() >= cut


# --------------------------------------------------------------------------- metrics


@st.composite
def rankings(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, int]:
    """Ranked lists (distinct items, -1 padding at the end) and relevant sets, some of them empty."""
    n_items = draw(st.integers(1, 12))
    n_users = draw(st.integers(1, 6))
    k_max = draw(st.integers(1, n_items))
    rows, relevant_rows = [], []
    for _ in range(n_users):
        listed = draw(st.lists(st.integers(0, n_items - 1), max_size=k_max, unique=True))
        rows.append(listed + [-1] * (k_max - len(listed)))
        relevant_rows.append(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items)))
    relevant = sp.lil_matrix((n_users, n_items), dtype=np.float32)
    for user, items in enumerate(relevant_rows):
        for item in items:
            relevant[user, item] = 1.0
    k = draw(st.integers(1, k_max + 2))
    return np.array(rows, dtype=np.int64), relevant.tocsr(), k


def oracle(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Each metric from its textbook definition, one user at a time."""
    if not relevant:
        return dict.fromkeys(("recall", "precision", "ndcg", "map", "mrr", "hit_rate"), math.nan)
    top = ranked[:k]
    hits = [item in relevant for item in top]
    dcg = sum(1 / math.log2(position + 2) for position, hit in enumerate(hits) if hit)
    ideal = sum(1 / math.log2(position + 2) for position in range(min(k, len(relevant))))
    precisions = [sum(hits[: position + 1]) / (position + 1) for position, hit in enumerate(hits) if hit]
    first = next((position + 1 for position, hit in enumerate(hits) if hit), None)
    return {
        "recall": sum(hits) / len(relevant),
        "precision": sum(hits) / k,
        "ndcg": dcg / ideal,
        "map": sum(precisions) / min(k, len(relevant)),
        "mrr": 0.0 if first is None else 1 / first,
        "hit_rate": float(any(hits)),
    }


METRIC_FUNCTIONS = {"recall": recall_at_k, "precision": precision_at_k, "ndcg": ndcg_at_k, "map": map_at_k, "mrr": mrr_at_k, "hit_rate": hit_rate_at_k}


@PROPERTY_SETTINGS
@given(case=rankings())
def test_metrics_match_oracle(case: tuple[np.ndarray, sp.csr_matrix, int]) -> None:
    """Every per-user metric is in [0, 1], equals the oracle, and is NaN exactly for users without relevant items."""
    ranked, relevant, k = case
    for name, function in METRIC_FUNCTIONS.items():
        values = function(ranked, relevant, k)
        for user in range(len(ranked)):
            expected = oracle(ranked[user].tolist(), set(relevant[user].indices.tolist()), k)[name]
            if math.isnan(expected):
                assert math.isnan(values[user]), (name, user)
            else:
                assert 0.0 <= values[user] <= 1.0, (name, user, values[user])
                assert values[user] == pytest.approx(expected, abs=1e-12), (name, user)
    recommended = {item for row in ranked[:, :k].tolist() for item in row if item >= 0}
    assert coverage_at_k(ranked, relevant, k) == pytest.approx(len(recommended) / relevant.shape[1])


# --------------------------------------------------------------------------- exact search


@st.composite
def search_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, str, sp.csr_matrix | None]:
    n_items = draw(st.integers(1, 40))
    dimension = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    generator = np.random.default_rng(seed)
    # Integer coordinates make many scores tie exactly, the hard case for comparing rankings.
    scale = draw(st.sampled_from(["ties", "continuous"]))
    if scale == "ties":
        embeddings = generator.integers(-2, 3, size=(n_items, dimension)).astype(np.float32)
        queries = generator.integers(-2, 3, size=(draw(st.integers(1, 5)), dimension)).astype(np.float32)
    else:
        embeddings = generator.normal(size=(n_items, dimension)).astype(np.float32)
        queries = generator.normal(size=(draw(st.integers(1, 5)), dimension)).astype(np.float32)
    metric = draw(st.sampled_from(["inner_product", "l2", "cosine"]))
    if metric == "cosine":
        # Cosine is undefined for zero vectors.
        embeddings[np.linalg.norm(embeddings, axis=1) == 0] = 1.0
        queries[np.linalg.norm(queries, axis=1) == 0] = 1.0
    k = draw(st.integers(1, n_items))
    exclude = None
    if draw(st.booleans()):
        exclude = sp.csr_matrix(generator.random((len(queries), n_items)) < 0.3, dtype=np.float32)
    return embeddings, queries, k, metric, exclude


def brute_force_scores(embeddings: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """Scores of every (query, item) pair in float64; higher is better for every metric."""
    items, users = embeddings.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
        users = users / np.linalg.norm(users, axis=1, keepdims=True)
    if metric == "l2":
        return -((users[:, None, :] - items[None, :, :]) ** 2).sum(axis=2)
    return users @ items.T


@PROPERTY_SETTINGS
@given(case=search_cases())
def test_exact_search_equals_brute_force(case: tuple[np.ndarray, np.ndarray, int, str, sp.csr_matrix | None]) -> None:
    """A flat index returns the true top k (ties may swap), never an excluded item, and scores equal to numpy's."""
    embeddings, queries, k, metric, exclude = case
    index = ItemIndex(embeddings, np.arange(len(embeddings)) * 3, metric=metric, device="cpu")
    indices, scores = index.search_indices(queries, k, exclude)
    expected = brute_force_scores(embeddings, queries, metric)
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max()))
    for row in range(len(queries)):
        allowed = np.ones(len(embeddings), dtype=bool)
        if exclude is not None:
            allowed[exclude[row].indices] = False
        n_valid = min(k, int(allowed.sum()))
        found = indices[row][indices[row] >= 0]
        assert len(found) == n_valid
        assert len(set(found.tolist())) == n_valid
        assert allowed[found].all()
        assert (indices[row][n_valid:] == -1).all()
        # Each score is the item's true score, and the list is what numpy ranks first, up to ties.
        np.testing.assert_allclose(scores[row][:n_valid], expected[row][found], atol=tolerance, rtol=0)
        best = np.sort(expected[row][allowed])[::-1][:n_valid]
        np.testing.assert_allclose(np.sort(expected[row][found])[::-1], best, atol=tolerance, rtol=0)
        assert (np.diff(scores[row][:n_valid]) <= tolerance).all()
