"""Tests of the synthetic interaction log: determinism, exact counts, no repeated pairs, power laws."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as parquet
import pytest

from recx.data.synthetic import USERS_PER_BLOCK, SyntheticConfig, iter_synthetic_blocks, synthetic_clusters, user_activity, write_synthetic_parquet

#: Small enough for a second of generation, large enough for stable tail counts.
SMALL = {"n_users": 9000, "n_items": 6000, "n_interactions": 180_000, "n_clusters": 8, "max_user_items": 150}


def _log(config: SyntheticConfig) -> pd.DataFrame:
    return pd.concat(list(iter_synthetic_blocks(config)), ignore_index=True)


@pytest.fixture(scope="module")
def small_log() -> pd.DataFrame:
    return _log(SyntheticConfig(seed=5, **SMALL))


class TestDeterminism:
    def test_same_seed_same_log(self, small_log: pd.DataFrame) -> None:
        """Generating twice with one seed gives identical rows."""
        pd.testing.assert_frame_equal(_log(SyntheticConfig(seed=5, **SMALL)), small_log)

    def test_other_seed_other_log(self, small_log: pd.DataFrame) -> None:
        """Another seed changes the rows but not their number."""
        other = _log(SyntheticConfig(seed=6, **SMALL))
        assert len(other) == len(small_log)
        assert not other.equals(small_log)

    def test_parquet_file_holds_the_blocks(self, small_log: pd.DataFrame, tmp_path: Path) -> None:
        """The Parquet writer stores the same rows, one row group per block of users."""
        summary = write_synthetic_parquet(SyntheticConfig(seed=5, **SMALL), tmp_path / "log.parquet")
        assert summary.rows == len(small_log)
        assert parquet.ParquetFile(tmp_path / "log.parquet").metadata.num_row_groups == -(-SMALL["n_users"] // USERS_PER_BLOCK)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "log.parquet"), small_log)


class TestCounts:
    def test_exact_interaction_count(self, small_log: pd.DataFrame) -> None:
        """The log has exactly n_interactions rows."""
        assert len(small_log) == SMALL["n_interactions"]

    def test_no_repeated_pairs(self, small_log: pd.DataFrame) -> None:
        """No (user, item) pair appears twice."""
        assert not small_log.duplicated(["user_id", "item_id"]).any()

    def test_every_user_within_bounds(self, small_log: pd.DataFrame) -> None:
        """Every user appears, with between min_user_items and max_user_items rows; ids stay in range."""
        per_user = small_log.groupby("user_id").size()
        assert len(per_user) == SMALL["n_users"]
        assert per_user.min() >= 5
        assert per_user.max() <= SMALL["max_user_items"]
        assert small_log["item_id"].between(0, SMALL["n_items"] - 1).all()

    def test_time_increases_within_user(self, small_log: pd.DataFrame) -> None:
        """Rows of a user are in time order."""
        steps = small_log.groupby("user_id")["timestamp"].diff().dropna()
        assert (steps >= 0).all()

    def test_activity_sums_exactly_with_heavy_tail(self) -> None:
        """User counts add up to n_interactions, respect the bounds and keep the Zipf shape between them."""
        config = SyntheticConfig(n_users=20_000, n_items=100_000, n_interactions=1_000_000, user_exponent=1.0, max_user_items=2_000)
        counts = user_activity(config, np.random.default_rng(0))
        assert counts.sum() == config.n_interactions
        assert counts.min() >= 5 and counts.max() <= 2_000
        ranked = np.sort(counts)[::-1]
        # Between the clipped ends, count is c * rank ** -1: rank 100 has about ten times rank 1000's count.
        assert ranked[99] / ranked[999] == pytest.approx(10.0, rel=0.05)


class TestPowerLaw:
    @pytest.mark.parametrize("exponent", [0.8, 1.2])
    def test_popularity_tail_follows_exponent(self, exponent: float) -> None:
        """The slope of log(count) over log(rank), ranks 100 to 3000, is within 0.15 of -item_exponent.

        A loose check: popular items count at most once per user, which
        flattens the head, and tail counts are noisy, so the fit skips both
        ends. Measured slopes were -0.75 for 0.8 and -1.13 for 1.2.
        """
        log = _log(SyntheticConfig(seed=1, n_users=20_000, n_items=20_000, n_interactions=400_000, n_clusters=8, max_user_items=200, item_exponent=exponent))
        counts = np.sort(np.bincount(log["item_id"], minlength=20_000))[::-1]
        ranks = np.arange(1, len(counts) + 1)
        slope = np.polyfit(np.log(ranks[99:3000]), np.log(counts[99:3000]), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.15)

    def test_users_draw_from_their_cluster(self) -> None:
        """Most of a user's items come from the user's cluster; without affinity, only the global share does.

        Global draws land in a cluster in proportion to its popularity mass,
        so with cluster_affinity 0 the own-cluster share is that mass
        (estimated from the log's item counts). With 0.8 it is at most
        ``0.8 + 0.2 * mass``; redrawn duplicates lower it (see the module notes),
        by less than 0.1.
        """
        shares = {}
        for affinity in (0.0, 0.8):
            config = SyntheticConfig(seed=5, cluster_affinity=affinity, **SMALL)
            log = _log(config)
            user_cluster, item_cluster = synthetic_clusters(config)
            users = log["user_id"].to_numpy()
            shares[affinity] = float(np.mean(user_cluster[users] == item_cluster[log["item_id"].to_numpy()]))
            counts = np.bincount(log["item_id"], minlength=SMALL["n_items"]).astype(float)
            cluster_mass = np.bincount(item_cluster, weights=counts, minlength=8) / counts.sum()
            baseline = float(cluster_mass[user_cluster[users]].mean())
            if affinity == 0.0:
                assert shares[affinity] == pytest.approx(baseline, abs=0.02)
            else:
                assert affinity - 0.1 < shares[affinity] <= affinity + (1 - affinity) * baseline + 0.02
        assert shares[0.8] > 4 * shares[0.0]


class TestValidation:
    def test_too_many_interactions_rejected(self) -> None:
        """More interactions than users x max_user_items is an error naming the bound."""
        with pytest.raises(ValueError, match=re.escape("n_interactions must be between n_users * min_user_items (50) and n_users * max_user_items (200), got 500.")):
            SyntheticConfig(n_users=10, n_items=100, n_interactions=500, max_user_items=20)

    def test_user_cap_above_catalogue_rejected(self) -> None:
        """A user cannot have more distinct items than exist."""
        with pytest.raises(ValueError, match=re.escape("max_user_items (300) exceeds n_items (100)")):
            SyntheticConfig(n_users=10, n_items=100, n_interactions=500, max_user_items=300)


class TestSynthCommand:
    def test_writes_seeded_log(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`recx synth` writes the log SyntheticConfig describes, row for row."""
        from recx.cli.main import main

        arguments = ["synth", "--output", str(tmp_path / "log.parquet"), "--users", "500", "--items", "2000", "--interactions", "10000", "--clusters", "4", "--seed", "3", "--quiet"]
        assert main(arguments) == 0
        assert "Wrote 10000 interactions of 500 users and 2000 items" in capsys.readouterr().out
        expected = _log(SyntheticConfig(n_users=500, n_items=2000, n_interactions=10_000, n_clusters=4, seed=3))
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "log.parquet"), expected)

    def test_impossible_sizes_are_one_line_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Sizes no log can have end the command with status 2 and the bound."""
        from recx.cli.main import main

        assert main(["synth", "--output", str(tmp_path / "log.parquet"), "--users", "10", "--items", "1000", "--interactions", "5", "--quiet"]) == 2
        assert "recx synth: error: n_interactions must be between n_users * min_user_items (50)" in capsys.readouterr().err
        assert not (tmp_path / "log.parquet").exists()
