"""Tests of the top-k metrics: hand-computed cases, a per-user oracle and range properties."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recx.evaluation.metrics import (
    CATALOGUE_METRICS,
    METRICS,
    PER_USER_METRICS,
    average_over_users,
    coverage_at_k,
    hit_rate_at_k,
    isin_rows,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
    recommended_item_mask,
)


def relevant_matrix(sets: list[set[int]], n_items: int) -> sp.csr_matrix:
    """Build a binary user x item CSR matrix from one set of relevant items per user."""
    rows = [row for row, items in enumerate(sets) for _ in items]
    columns = [item for items in sets for item in sorted(items)]
    return sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(sets), n_items))


def all_metrics(ranked: list[list[int]], sets: list[set[int]], k: int, n_items: int = 10) -> dict[str, np.ndarray]:
    array = np.asarray(ranked, dtype=np.int64)
    relevant = relevant_matrix(sets, n_items)
    return {name: METRICS[name](array, relevant, k) for name in PER_USER_METRICS}


def discount(position: int) -> float:
    return 1.0 / math.log2(position + 1)


# ------------------------------------------------------------------ hand-computed cases


class TestHandComputed:
    def test_two_hits_in_three(self) -> None:
        """ranked [3, 1, 7], relevant {1, 7, 9}, k=3: hits at positions 2 and 3."""
        values = all_metrics([[3, 1, 7]], [{1, 7, 9}], k=3)
        # H = 2 of |R| = 3.
        assert values["recall"][0] == pytest.approx(2 / 3)
        # 2 hits in k = 3 positions.
        assert values["precision"][0] == pytest.approx(2 / 3)
        assert values["hit_rate"][0] == 1.0
        # DCG = 1/log2(3) + 1/log2(4); IDCG over min(3, 3) = 3 positions.
        dcg = 1 / math.log2(3) + 1 / math.log2(4)
        idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
        assert values["ndcg"][0] == pytest.approx(dcg / idcg)
        # First hit at position 2.
        assert values["mrr"][0] == pytest.approx(1 / 2)
        # Precision at the hit positions: 1/2 at position 2, 2/3 at position 3; divided by min(3, 3).
        assert values["map"][0] == pytest.approx((1 / 2 + 2 / 3) / 3)

    def test_cutoff_drops_later_hits(self) -> None:
        """The same list at k=2 keeps only the hit at position 2."""
        values = all_metrics([[3, 1, 7]], [{1, 7, 9}], k=2)
        assert values["recall"][0] == pytest.approx(1 / 3)
        assert values["precision"][0] == pytest.approx(1 / 2)
        # IDCG over min(2, 3) = 2 positions.
        assert values["ndcg"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
        assert values["mrr"][0] == pytest.approx(1 / 2)
        # (1/2) / min(2, 3).
        assert values["map"][0] == pytest.approx(1 / 4)

    def test_no_hit(self) -> None:
        """A list without relevant items scores 0 on every metric."""
        values = all_metrics([[0, 2, 4]], [{1}], k=3)
        for name in PER_USER_METRICS:
            assert values[name][0] == 0.0, name

    def test_perfect_list(self) -> None:
        """Relevant items first give 1 everywhere except precision, which is 2/3 with 2 relevant items."""
        values = all_metrics([[5, 8, 0]], [{5, 8}], k=3)
        for name in ("recall", "ndcg", "map", "mrr", "hit_rate"):
            assert values[name][0] == pytest.approx(1.0), name
        assert values["precision"][0] == pytest.approx(2 / 3)

    def test_padding_counts_as_miss(self) -> None:
        """-1 positions contain no item: [5, -1, -1] with relevant {5} at k=3."""
        values = all_metrics([[5, -1, -1]], [{5}], k=3)
        assert values["recall"][0] == pytest.approx(1.0)
        # precision divides by k = 3, not by the one item returned.
        assert values["precision"][0] == pytest.approx(1 / 3)
        assert values["ndcg"][0] == pytest.approx(1.0)
        assert values["map"][0] == pytest.approx(1.0)

    def test_padding_before_a_hit_keeps_its_position(self) -> None:
        """[-1, 5] with relevant {5}: the hit is at position 2."""
        values = all_metrics([[-1, 5]], [{5}], k=2)
        assert values["mrr"][0] == pytest.approx(1 / 2)
        assert values["ndcg"][0] == pytest.approx(discount(2) / discount(1))

    def test_k_larger_than_list(self) -> None:
        """ranked [2, 4], relevant {4, 6}, k=5: positions 3 to 5 are empty."""
        values = all_metrics([[2, 4]], [{4, 6}], k=5)
        assert values["recall"][0] == pytest.approx(1 / 2)
        # 1 hit over k = 5 positions.
        assert values["precision"][0] == pytest.approx(1 / 5)
        # IDCG over min(5, 2) = 2 positions.
        assert values["ndcg"][0] == pytest.approx(discount(2) / (discount(1) + discount(2)))
        assert values["mrr"][0] == pytest.approx(1 / 2)
        # (1/2) / min(5, 2).
        assert values["map"][0] == pytest.approx(1 / 4)

    def test_recall_denominator_is_relevant_count(self) -> None:
        """With |R| = 4 > k = 2, a perfect list has recall 2/4 but NDCG and MAP 1."""
        values = all_metrics([[0, 1]], [{0, 1, 2, 3}], k=2)
        assert values["recall"][0] == pytest.approx(1 / 2)
        assert values["ndcg"][0] == pytest.approx(1.0)
        assert values["map"][0] == pytest.approx(1.0)

    def test_user_without_relevant_items_is_nan(self) -> None:
        """Every per-user metric is NaN for a user with an empty relevant set."""
        values = all_metrics([[1, 2], [1, 2]], [{1}, set()], k=2)
        for name in PER_USER_METRICS:
            assert not np.isnan(values[name][0]), name
            assert np.isnan(values[name][1]), name

    def test_explicit_zero_is_not_relevant(self) -> None:
        """A stored zero in relevant is neither a hit nor counted in |R|."""
        relevant = sp.csr_matrix((np.array([1.0, 0.0]), np.array([1, 2]), np.array([0, 2])), shape=(1, 5))
        ranked = np.array([[2, 1]])
        assert relevant.nnz == 2
        assert recall_at_k(ranked, relevant, 2)[0] == pytest.approx(1.0)
        assert mrr_at_k(ranked, relevant, 2)[0] == pytest.approx(1 / 2)

    def test_batch_equals_single_rows(self) -> None:
        """Each row of a batch scores as it does alone."""
        ranked = [[3, 1, 7], [0, 2, 4], [5, -1, -1]]
        sets = [{1, 7, 9}, {4}, {5, 6}]
        batch = all_metrics(ranked, sets, k=3)
        for row in range(3):
            alone = all_metrics([ranked[row]], [sets[row]], k=3)
            for name in PER_USER_METRICS:
                assert batch[name][row] == pytest.approx(alone[name][0]), name

    def test_output_shape_and_dtype(self) -> None:
        """Per-user metrics return float64 of shape (n_users,)."""
        values = all_metrics([[1, 2], [3, 4], [5, 6]], [{1}, {4}, {9}], k=2)
        for name in PER_USER_METRICS:
            assert values[name].shape == (3,), name
            assert values[name].dtype == np.float64, name


class TestCoverage:
    def test_distinct_items_over_catalogue(self) -> None:
        """Rows [0, 1] and [1, 2] cover {0, 1} at k=1 and {0, 1, 2} at k=2 of 10 items."""
        ranked = np.array([[0, 1], [1, 2]])
        relevant = relevant_matrix([{0}, {2}], 10)
        assert coverage_at_k(ranked, relevant, 1) == pytest.approx(2 / 10)
        assert coverage_at_k(ranked, relevant, 2) == pytest.approx(3 / 10)

    def test_padding_and_users_without_relevant_items(self) -> None:
        """-1 covers nothing, and rows without relevant items still count."""
        ranked = np.array([[4, -1], [7, -1]])
        relevant = relevant_matrix([{4}, set()], 8)
        # {4, 7} of 8 items.
        assert coverage_at_k(ranked, relevant, 2) == pytest.approx(2 / 8)

    def test_mask_marks_recommended_items(self) -> None:
        """The mask is True exactly at the items in the first k positions."""
        mask = recommended_item_mask(np.array([[3, 0, 2], [3, -1, 1]]), 5, 2)
        assert mask.tolist() == [True, False, False, True, False]


class TestAverage:
    def test_skips_nan(self) -> None:
        """Users without relevant items (NaN) do not count in the average."""
        assert average_over_users(np.array([1.0, np.nan, 0.5])) == pytest.approx(0.75)

    def test_all_nan_raises(self) -> None:
        """With no defined value, the average is an error rather than NaN."""
        message = "no user has a relevant item (2 values, all NaN), so the metric average is undefined."
        with pytest.raises(ValueError, match=re.escape(message)):
            average_over_users(np.array([np.nan, np.nan]))


class TestRegistry:
    def test_names(self) -> None:
        """The registry contains the seven metrics under their report names."""
        assert list(METRICS) == ["recall", "precision", "ndcg", "map", "mrr", "hit_rate", "coverage"]
        assert set(PER_USER_METRICS) | set(CATALOGUE_METRICS) == set(METRICS)
        assert not set(PER_USER_METRICS) & set(CATALOGUE_METRICS)

    def test_functions(self) -> None:
        """Each name maps to its function."""
        assert METRICS["recall"] is recall_at_k
        assert METRICS["precision"] is precision_at_k
        assert METRICS["ndcg"] is ndcg_at_k
        assert METRICS["map"] is map_at_k
        assert METRICS["mrr"] is mrr_at_k
        assert METRICS["hit_rate"] is hit_rate_at_k
        assert METRICS["coverage"] is coverage_at_k


class TestInputErrors:
    relevant = relevant_matrix([{1}, {2}], 5)

    def test_repeated_item(self) -> None:
        """An item twice in one row is rejected, since it would count twice."""
        with pytest.raises(ValueError, match=re.escape("ranked row 1 contains item 3 more than once.")):
            recall_at_k(np.array([[1, 2], [3, 3]]), self.relevant, 2)

    def test_repeated_padding_is_allowed(self) -> None:
        """Several -1 entries in one row are padding, not repeats."""
        values = recall_at_k(np.array([[1, -1, -1], [2, -1, -1]]), self.relevant, 3)
        assert values.tolist() == [1.0, 1.0]

    def test_index_out_of_range(self) -> None:
        """Indices beyond the catalogue or below -1 are rejected."""
        with pytest.raises(ValueError, match=re.escape("ranked contains item index 5, outside 0 .. 4; use -1 only")):
            ndcg_at_k(np.array([[1, 5], [2, 0]]), self.relevant, 2)
        with pytest.raises(ValueError, match=re.escape("ranked contains item index -2, outside 0 .. 4")):
            ndcg_at_k(np.array([[1, -2], [2, 0]]), self.relevant, 2)

    def test_row_count_mismatch(self) -> None:
        """ranked and relevant need the same users."""
        with pytest.raises(ValueError, match=re.escape("ranked has 1 rows but relevant has 2;")):
            map_at_k(np.array([[1, 2]]), self.relevant, 2)

    def test_one_dimensional_ranked(self) -> None:
        """A single list must be passed as one row."""
        with pytest.raises(ValueError, match=re.escape("ranked must be a 2-D array of shape (n_users, k_max), got shape (2,).")):
            mrr_at_k(np.array([1, 2]), self.relevant, 2)

    def test_float_ranked(self) -> None:
        """Item indices must be integers."""
        with pytest.raises(TypeError, match=re.escape("ranked must contain integer item indices, got dtype float64.")):
            precision_at_k(np.array([[1.0], [2.0]]), self.relevant, 1)

    @pytest.mark.parametrize("k", [0, -1, 2.5, True])
    def test_invalid_k(self, k: object) -> None:
        """k must be a positive integer."""
        with pytest.raises(ValueError, match=re.escape(f"k must be a positive integer, got {k!r}.")):
            hit_rate_at_k(np.array([[1], [2]]), self.relevant, k)  # type: ignore[arg-type]

    def test_dense_relevant(self) -> None:
        """relevant must be sparse."""
        with pytest.raises(TypeError, match=re.escape("relevant must be a scipy sparse matrix of shape (n_users, n_items), got ndarray.")):
            recall_at_k(np.array([[1]]), np.ones((1, 5)), 1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ oracle


def oracle(ranked_row: list[int], relevant_set: set[int], k: int) -> dict[str, float]:
    """Compute every per-user metric for one user with plain Python loops."""
    if not relevant_set:
        return {name: math.nan for name in PER_USER_METRICS}
    top = ranked_row[:k]
    hit_flags = [item >= 0 and item in relevant_set for item in top]
    hits = sum(hit_flags)
    dcg = sum(discount(position) for position, hit in enumerate(hit_flags, start=1) if hit)
    idcg = sum(discount(position) for position in range(1, min(k, len(relevant_set)) + 1))
    precision_sum = 0.0
    seen = 0
    for position, hit in enumerate(hit_flags, start=1):
        if hit:
            seen += 1
            precision_sum += seen / position
    first = next((position for position, hit in enumerate(hit_flags, start=1) if hit), None)
    return {
        "recall": hits / len(relevant_set),
        "precision": hits / k,
        "ndcg": dcg / idcg,
        "map": precision_sum / min(k, len(relevant_set)),
        "mrr": 0.0 if first is None else 1.0 / first,
        "hit_rate": 1.0 if hits else 0.0,
    }


def random_case(rng: np.random.Generator, n_users: int, n_items: int, k_max: int) -> tuple[np.ndarray, list[set[int]]]:
    """Draw ranked lists with some -1 padding and relevant sets, some of them empty."""
    ranked = np.full((n_users, k_max), -1, dtype=np.int64)
    sets = []
    for user in range(n_users):
        length = int(rng.integers(0, k_max + 1))
        ranked[user, :length] = rng.choice(n_items, size=length, replace=False)
        size = int(rng.integers(0, 8))
        sets.append(set(rng.choice(n_items, size=size, replace=False).tolist()))
    return ranked, sets


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_vectorised_matches_oracle(k: int) -> None:
    """On seeded random data, every metric equals the per-user loop, NaN where it is NaN."""
    rng = np.random.default_rng(20240601 + k)
    ranked, sets = random_case(rng, n_users=200, n_items=30, k_max=12)
    relevant = relevant_matrix(sets, 30)
    expected = [oracle(ranked[user].tolist(), sets[user], k) for user in range(200)]
    for name in PER_USER_METRICS:
        values = METRICS[name](ranked, relevant, k)
        np.testing.assert_allclose(values, [row[name] for row in expected], rtol=1e-12, atol=1e-12, err_msg=name)

    # Coverage over all rows, padding excluded.
    covered = {int(item) for item in ranked[:, :k].ravel() if item >= 0}
    assert coverage_at_k(ranked, relevant, k) == pytest.approx(len(covered) / 30)


class TestPerUserMetrics:
    def test_equals_single_metric_functions(self) -> None:
        """One call gives, for every name and cut-off, exactly the single-metric function's values."""
        rng = np.random.default_rng(99)
        ranked, sets = random_case(rng, n_users=150, n_items=40, k_max=15)
        relevant = relevant_matrix(sets, 40)
        cutoffs = [1, 5, 15, 20]
        values = per_user_metrics(ranked, relevant, list(PER_USER_METRICS), cutoffs)
        assert list(values) == [(name, k) for name in PER_USER_METRICS for k in cutoffs]
        for (name, k), array in values.items():
            np.testing.assert_array_equal(array, METRICS[name](ranked, relevant, k), err_msg=f"{name}@{k}")

    def test_unknown_name(self) -> None:
        """Coverage is not per user, so it is rejected with the valid names."""
        message = "unknown per-user metric(s) ['coverage']: expected names from ['recall', 'precision', 'ndcg', 'map', 'mrr', 'hit_rate']."
        with pytest.raises(ValueError, match=re.escape(message)):
            per_user_metrics(np.array([[0]]), relevant_matrix([{0}], 2), ["ndcg", "coverage"], [1])

    def test_no_cutoff(self) -> None:
        """At least one cut-off is needed."""
        with pytest.raises(ValueError, match=re.escape("cutoffs is empty: pass at least one cut-off, for example (10, 20).")):
            per_user_metrics(np.array([[0]]), relevant_matrix([{0}], 2), ["ndcg"], [])

    def test_checks_ranked_once_for_all(self) -> None:
        """A repeated item is rejected as by the single-metric functions."""
        with pytest.raises(ValueError, match=re.escape("ranked row 0 contains item 1 more than once.")):
            per_user_metrics(np.array([[1, 1]]), relevant_matrix([{1}], 3), ["recall"], [2])


def test_isin_rows_matches_python() -> None:
    """Row-wise membership equals a set lookup per row, explicit zeros included."""
    rng = np.random.default_rng(7)
    matrix = sp.random(40, 25, density=0.2, format="csr", random_state=11)
    matrix.data[::3] = 0.0  # stored zeros still count as members
    indices = rng.integers(-1, 25, size=(40, 9))
    members = [set(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].tolist()) for row in range(40)]
    expected = [[int(item) in members[row] for item in indices[row]] for row in range(40)]
    assert isin_rows(indices, matrix).tolist() == expected


# ------------------------------------------------------------------ properties


@st.composite
def ranking_cases(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, int]:
    n_items = draw(st.integers(1, 15))
    n_users = draw(st.integers(1, 6))
    k_max = draw(st.integers(1, 8))
    ranked = np.full((n_users, k_max), -1, dtype=np.int64)
    sets = []
    for user in range(n_users):
        items = draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=min(k_max, n_items)))
        positions = draw(st.permutations(range(k_max)))[: len(items)]
        ranked[user, sorted(positions)] = items
        sets.append(set(draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=n_items))))
    k = draw(st.integers(1, 12))
    return ranked, relevant_matrix(sets, n_items), k


@settings(max_examples=150, deadline=None)
@given(ranking_cases())
def test_metrics_within_unit_interval(case: tuple[np.ndarray, sp.csr_matrix, int]) -> None:
    """Every metric is in [0, 1], and NaN only for users without relevant items."""
    ranked, relevant, k = case
    empty = np.diff(relevant.indptr) == 0
    for name in PER_USER_METRICS:
        values = METRICS[name](ranked, relevant, k)
        assert np.array_equal(np.isnan(values), empty), name
        defined = values[~empty]
        assert np.all((defined >= 0.0) & (defined <= 1.0 + 1e-12)), name
    coverage = coverage_at_k(ranked, relevant, k)
    assert 0.0 <= coverage <= 1.0
