"""Tests of chunked ingestion into a CSR store, batches read from it, and training on it.

The oracle is recx's in-memory reader: a store built chunk by chunk, with a
chunk far smaller than the file, must hold exactly what
``read_csv``/``read_parquet`` build from the whole file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as parquet
import pytest
import torch

from recx.data import Interactions, read_csv, read_parquet
from recx.data.datasets import embedded_dataset_path
from recx.data.streaming import CsrStore, EntryBatches, ingest
from recx.distributed.features import StoreFeatureBuilder
from recx.models import FeatureBuilder, TwoTowerConfig

# TorchRec 1.8 and torch 2.13 warn about their own internals (TorchScript, ShardedTensor, planner heuristics).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

RATINGS = embedded_dataset_path() / "ratings.csv"
COLUMNS = {"user_col": "userId", "item_col": "movieId", "weight_col": "rating", "timestamp_col": "timestamp"}

#: Rows per chunk: about 100 chunks over the 100,836 rows of the file.
CHUNK_ROWS = 1009


def assert_same_interactions(got: Interactions, expected: Interactions) -> None:
    assert got.users == expected.users
    assert got.items == expected.items
    assert got.users.kind == expected.users.kind
    np.testing.assert_array_equal(got.matrix.indptr, expected.matrix.indptr)
    np.testing.assert_array_equal(got.matrix.indices, expected.matrix.indices)
    np.testing.assert_array_equal(got.matrix.data, expected.matrix.data)
    if expected.timestamps is None:
        assert got.timestamps is None
    else:
        np.testing.assert_array_equal(got.timestamps, expected.timestamps)


@pytest.fixture(scope="module")
def ratings_store(tmp_path_factory: pytest.TempPathFactory) -> CsrStore:
    """The embedded ratings.csv, ingested in chunks of 1009 rows with a rating threshold."""
    return ingest(RATINGS, tmp_path_factory.mktemp("store") / "ratings", chunk_rows=CHUNK_ROWS, min_weight=3.0, **COLUMNS)


class TestIngest:
    def test_csv_chunks_equal_in_memory_reader(self, ratings_store: CsrStore) -> None:
        """Same id maps, matrix, weights and timestamps as read_csv on the whole file."""
        expected = read_csv(RATINGS, min_weight=3.0, **COLUMNS)
        assert ratings_store.summary["source"]["rows"] == 100_836
        assert ratings_store.summary["source"]["kept_rows"] == expected.nnz
        assert_same_interactions(ratings_store.to_interactions(), expected)
        np.testing.assert_array_equal(ratings_store.item_counts, expected.item_counts())

    def test_arrays_are_memory_mapped(self, ratings_store: CsrStore) -> None:
        """Opening a store maps its arrays instead of reading them."""
        for array in (ratings_store.indptr, ratings_store.indices, ratings_store.data, ratings_store.timestamps, ratings_store.time_order):
            assert isinstance(array, np.memmap)

    def test_parquet_batches_equal_in_memory_reader(self, tmp_path: Path) -> None:
        """A Parquet file read with iter_batches of 1009 rows gives what read_parquet gives."""
        frame = pd.read_csv(RATINGS)
        path = tmp_path / "ratings.parquet"
        parquet.write_table(pyarrow.Table.from_pandas(frame, preserve_index=False), path, row_group_size=5000)
        store = ingest(path, tmp_path / "store", chunk_rows=CHUNK_ROWS, **COLUMNS)
        assert_same_interactions(store.to_interactions(), read_parquet(path, **COLUMNS))

    @pytest.mark.parametrize("policy", ["sum", "max", "first", "last"])
    def test_duplicate_policies_match(self, tmp_path: Path, policy: str) -> None:
        """Repeated (user, item) rows spread over many chunks merge as in memory, for every policy."""
        frame = pd.read_csv(RATINGS)
        generator = np.random.default_rng(0)
        repeats = frame.sample(n=5000, random_state=1).assign(
            rating=generator.choice([0.5, 1.0, 4.5], size=5000),
            timestamp=lambda rows: rows["timestamp"] + generator.integers(-10**6, 10**6, size=5000),
        )
        # Some repeats keep the original timestamp, so ties fall back to row order.
        repeats.iloc[:500, repeats.columns.get_loc("timestamp")] = frame.loc[repeats.index[:500], "timestamp"].to_numpy()
        logged = pd.concat([frame, repeats]).sample(frac=1.0, random_state=2)
        logged.to_csv(tmp_path / "repeated.csv", index=False)
        store = ingest(tmp_path / "repeated.csv", tmp_path / "store", chunk_rows=CHUNK_ROWS, duplicates=policy, **COLUMNS)
        assert store.nnz == len(frame)
        assert_same_interactions(store.to_interactions(), read_csv(tmp_path / "repeated.csv", duplicates=policy, **COLUMNS))

    def test_duplicates_error_policy(self, tmp_path: Path) -> None:
        """duplicates='error' names a repeated pair and the policies."""
        frame = pd.read_csv(RATINGS)
        pd.concat([frame, frame.iloc[[10]]]).to_csv(tmp_path / "repeated.csv", index=False)
        user, item = frame.loc[10, "userId"], frame.loc[10, "movieId"]
        with pytest.raises(ValueError, match=re.escape(f"duplicate (user, item) events, for example user {user} and item {item}. Choose a duplicates policy")):
            ingest(tmp_path / "repeated.csv", tmp_path / "store", chunk_rows=CHUNK_ROWS, duplicates="error", **COLUMNS)

    def test_text_ids_sorted_as_in_memory(self, tmp_path: Path) -> None:
        """Text ids (zero-padded, not integer literals) keep their text and sort like read_csv's."""
        frame = pd.read_csv(RATINGS)
        frame["userId"] = "u" + frame["userId"].astype(str)
        frame["movieId"] = frame["movieId"].map(lambda item: f"{item:07d}")
        frame.to_csv(tmp_path / "text.csv", index=False)
        store = ingest(tmp_path / "text.csv", tmp_path / "store", chunk_rows=CHUNK_ROWS, **COLUMNS)
        expected = read_csv(tmp_path / "text.csv", **COLUMNS)
        assert expected.items.kind == "str"
        assert_same_interactions(store.to_interactions(), expected)

    def test_integer_and_text_ids_across_chunks_rejected(self, tmp_path: Path) -> None:
        """Integer ids in the first chunks and only text ids in the last one are a mixture, as for the in-memory reader."""
        frame = pd.read_csv(RATINGS).head(3000)
        frame["movieId"] = frame["movieId"].astype(str)
        frame.loc[2000:, "movieId"] = "m" + frame.loc[2000:, "movieId"]
        frame.to_csv(tmp_path / "mixed.csv", index=False)
        first_text = frame.loc[2000, "movieId"]
        message = f"column 'movieId' (item_col) mixes integer ids and other text, for example 1 ({tmp_path / 'mixed.csv'}, chunk from line 2) and {first_text!r} ({tmp_path / 'mixed.csv'}, chunk from line 2002)."
        with pytest.raises(ValueError, match=re.escape(message)):
            ingest(tmp_path / "mixed.csv", tmp_path / "store", chunk_rows=1000, **COLUMNS)
        with pytest.raises(ValueError, match="mixes integer ids and other text"):
            read_csv(tmp_path / "mixed.csv", **COLUMNS)

    def test_missing_id_names_file_row(self, tmp_path: Path) -> None:
        """A missing id is reported with its row counted over the whole file, not within its chunk."""
        frame = pd.read_csv(RATINGS).head(3000).astype({"userId": object})
        frame.loc[2500, "userId"] = ""
        frame.to_csv(tmp_path / "gap.csv", index=False)
        with pytest.raises(ValueError, match=re.escape("column 'userId' (user_col) in ") + ".*" + re.escape("has missing user ids, first at data row 2500.")):
            ingest(tmp_path / "gap.csv", tmp_path / "store", chunk_rows=1000, **COLUMNS)

    def test_existing_store_needs_overwrite(self, ratings_store: CsrStore, tmp_path: Path) -> None:
        """Writing over a store needs overwrite=True, and then replaces it."""
        target = tmp_path / "store"
        ingest(RATINGS, target, chunk_rows=50_000, **COLUMNS)
        with pytest.raises(FileExistsError, match=re.escape(f"store output {target} already contains a recx store. Pass overwrite=True (--overwrite) to replace it")):
            ingest(RATINGS, target, chunk_rows=50_000, **COLUMNS)
        replaced = ingest(RATINGS, target, chunk_rows=50_000, min_weight=3.0, overwrite=True, **COLUMNS)
        assert replaced.nnz == ratings_store.nnz

    def test_unknown_store_version_rejected(self, ratings_store: CsrStore, tmp_path: Path) -> None:
        """A store of another format version is refused with the fix."""
        summary = json.loads((ratings_store.folder / "store.json").read_text())
        copy = tmp_path / "copy"
        copy.mkdir()
        for file in ratings_store.folder.iterdir():
            (copy / file.name).write_bytes(file.read_bytes())
        (copy / "store.json").write_text(json.dumps({**summary, "format_version": 99}))
        with pytest.raises(ValueError, match=re.escape("unsupported store format version 99")):
            CsrStore.open(copy)


class TestEntryBatches:
    def test_exact_shuffle_sees_every_entry_once(self, ratings_store: CsrStore) -> None:
        """One epoch is a permutation of the entries, and each example's user and item are its CSR row and column."""
        batches = EntryBatches(ratings_store.indptr, ratings_store.indices, 1000, seed=4)
        assert batches.exact_shuffle
        seen = [batch for batch in batches.epoch(1)]
        positions = np.concatenate([batch.positions for batch in seen])
        assert len(seen) == len(batches)
        np.testing.assert_array_equal(np.sort(positions), np.arange(ratings_store.nnz))
        matrix = ratings_store.to_interactions().matrix
        for batch in seen[:5]:
            assert np.all(matrix[batch.users, batch.items].A1 == ratings_store.data[batch.positions])

    def test_block_shuffle_sees_every_entry_once(self, ratings_store: CsrStore) -> None:
        """With a buffer far below nnz, block-wise shuffling still covers each entry exactly once, in another order per epoch."""
        batches = EntryBatches(ratings_store.indptr, ratings_store.indices, 512, seed=4, shuffle_buffer=8192)
        assert not batches.exact_shuffle
        first = np.concatenate([batch.positions for batch in batches.epoch(1)])
        second = np.concatenate([batch.positions for batch in batches.epoch(2)])
        np.testing.assert_array_equal(np.sort(first), np.arange(ratings_store.nnz))
        np.testing.assert_array_equal(np.sort(second), np.arange(ratings_store.nnz))
        assert not np.array_equal(first, second)

    def test_ranks_split_global_batches(self, ratings_store: CsrStore) -> None:
        """Three ranks take disjoint thirds of the same global batches; together they see every entry except a short last batch's remainder."""
        parts = [list(EntryBatches(ratings_store.indptr, ratings_store.indices, 999, seed=1, rank=rank, world_size=3).epoch(1)) for rank in range(3)]
        whole = list(EntryBatches(ratings_store.indptr, ratings_store.indices, 999, seed=1).epoch(1))
        assert len(parts[0]) == len(parts[1]) == len(parts[2]) == len(whole)
        for step, batch in enumerate(whole[:-1]):
            np.testing.assert_array_equal(np.concatenate([parts[rank][step].positions for rank in range(3)]), batch.positions)
        covered = np.concatenate([batch.positions for rank in range(3) for batch in parts[rank]])
        assert len(np.unique(covered)) == len(covered) == ratings_store.nnz - ratings_store.nnz % 999 % 3

    def test_batch_size_must_divide_over_ranks(self, ratings_store: CsrStore) -> None:
        """A global batch that does not split evenly is refused, naming the fix."""
        with pytest.raises(ValueError, match=re.escape("batch_size 1000 is not a multiple of the 3 processes")):
            EntryBatches(ratings_store.indptr, ratings_store.indices, 1000, world_size=3)


class TestStoreFeatures:
    def test_equal_feature_builder_in_memory(self, ratings_store: CsrStore) -> None:
        """History and recent-item bags read from the memory-mapped store equal FeatureBuilder's on the loaded matrix."""
        interactions = ratings_store.to_interactions()
        config = TwoTowerConfig(n_users=interactions.n_users, n_items=interactions.n_items, recent_items=4)
        in_memory = FeatureBuilder(config, interactions, max_history=None)
        mapped = StoreFeatureBuilder(config, ratings_store, max_history=None)
        batch = next(EntryBatches(ratings_store.indptr, ratings_store.indices, 256, seed=0).epoch(1))
        for target in (batch.positions, None):
            expected = in_memory.user_features(batch.users, target_positions=target)
            got = mapped.user_features(batch.users, target_positions=target)
            assert got.keys() == expected.keys()
            assert torch.equal(got.values(), expected.values())
            assert torch.equal(got.lengths(), expected.lengths())

    def test_long_histories_sampled_uniformly(self) -> None:
        """A 1000-item history (sampled without reading it whole) keeps about max_history distinct items, uniformly, never the target."""
        data = Interactions.from_dataframe(pd.DataFrame({"user_id": np.zeros(1000, dtype=np.int64), "item_id": np.arange(1000)}))
        builder = FeatureBuilder(TwoTowerConfig(n_users=1, n_items=1000), data, max_history=10)
        examples = 4000
        target = 500
        bags = builder.user_features(np.zeros(examples, dtype=np.int64), target_positions=np.full(examples, target), generator=np.random.default_rng(0))
        lengths = bags.lengths().numpy()
        values = bags.values().numpy()
        assert lengths.mean() == pytest.approx(10.0, abs=0.3)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        assert all(len(np.unique(values[start : start + length])) == length for start, length in zip(starts, lengths))
        counts = np.bincount(values, minlength=1000)
        assert counts[target] == 0
        # Each other item is kept with probability 10 / 999: about 40 times here.
        others = np.delete(counts, target)
        assert others.mean() == pytest.approx(examples * 10 / 999, rel=0.02)
        assert counts[:target].mean() == pytest.approx(counts[target + 1 :].mean(), rel=0.1)

    def test_recent_items_need_timestamps(self, tmp_path: Path) -> None:
        """A store without timestamps cannot feed the recent-item bag."""
        store = ingest(RATINGS, tmp_path / "store", chunk_rows=50_000, user_col="userId", item_col="movieId")
        config = TwoTowerConfig(n_users=store.n_users, n_items=store.n_items, recent_items=3)
        with pytest.raises(ValueError, match=re.escape("recent_items needs timestamps, but the store has none.")):
            StoreFeatureBuilder(config, store)


@pytest.fixture
def torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear torchrun's variables, and remove those init_single_process sets once the test ends."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        # setenv records the variable's original state, which teardown restores.
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("torchrun_environment")
def test_sharded_trainer_on_store_equals_in_memory(ratings_store: CsrStore) -> None:
    """One process: an epoch on the memory-mapped store ends with the same weights as on the in-memory matrix."""
    from recx.distributed.context import close_distributed, init_single_process
    from recx.distributed.options import ShardingConfig
    from recx.distributed.trainer import ShardedTrainer
    from recx.models import TwoTowerModel
    from recx.training import TrainConfig

    interactions = ratings_store.to_interactions()
    config = TwoTowerConfig(n_users=interactions.n_users, n_items=interactions.n_items, embedding_dim=16, hidden_dims=[16], output_dim=8, recent_items=3)
    training = TrainConfig(epochs=1, batch_size=4096, optimizer="adagrad", learning_rate=0.05, show_progress=False, device="cpu")
    torch.manual_seed(0)
    initial = TwoTowerModel(config).state_dict()
    context = init_single_process("cpu")
    try:
        results = []
        for source, features in ((ratings_store, StoreFeatureBuilder(config, ratings_store)), (interactions, FeatureBuilder(config, interactions))):
            model = TwoTowerModel(config)
            model.load_state_dict(initial)
            trainer = ShardedTrainer(model, features, training, context, sharding=ShardingConfig(sharding="table-wise"))
            history = trainer.fit(source)
            results.append((model.state_dict(), history.epochs[0].loss))
    finally:
        close_distributed()
    (store_state, store_loss), (memory_state, memory_loss) = results
    assert store_loss == memory_loss
    for name, tensor in memory_state.items():
        assert torch.equal(store_state[name], tensor), name
    assert not torch.equal(store_state["item_tower.embeddings.embedding_bags.item_id.weight"], initial["item_tower.embeddings.embedding_bags.item_id.weight"])


class TestIngestCommand:
    def test_writes_store_equal_to_reader(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`recx ingest` writes the store read_csv's result equals and prints its sizes."""
        from recx.cli.main import main

        arguments = ["ingest", str(RATINGS), "--output", str(tmp_path / "store"), "--user-col", "userId", "--item-col", "movieId"]
        arguments += ["--weight-col", "rating", "--timestamp-col", "timestamp", "--chunk-rows", "5000", "--quiet"]
        assert main(arguments) == 0
        assert "610 users, 9724 items, 100836 interactions" in capsys.readouterr().out
        assert_same_interactions(CsrStore.open(tmp_path / "store").to_interactions(), read_csv(RATINGS, **COLUMNS))

    def test_missing_column_is_one_line_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A column the file lacks ends the command with status 2 and a message naming the flag."""
        from recx.cli.main import main

        assert main(["ingest", str(RATINGS), "--output", str(tmp_path / "store"), "--user-col", "customer", "--quiet"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("recx ingest: error: column 'customer' (user_col) not found in ")
        assert "--user-col NAME" in error
