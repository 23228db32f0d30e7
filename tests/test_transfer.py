"""Transfer: alignment, vector tables, text encoding, initialisers, fine-tuning policies, CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file

from recx.data import Interactions, drop_items, keep_items, sample_per_user
from recx.models import TwoTowerConfig
from recx.models.two_tower import TwoTowerModel
from recx.training import TrainConfig, TwoTowerRecommender
from recx.transfer import (
    FineTuning,
    ItemVectors,
    RunInit,
    TextEncoder,
    TextInit,
    VectorInit,
    align,
    encode_items,
    item_texts,
    load_vectors,
    parameter_group,
    resolve_source,
    title_key,
)
from recx.transfer.content import TextSimilarity
from recx.transfer.initialize import embedding_tables, fill_unmatched, principal_components

FAST = {"epochs": 2, "batch_size": 256, "show_progress": False, "device": "cpu", "patience": 0}


@pytest.fixture(scope="module")
def small(movielens_small: Interactions) -> Interactions:
    """The first 60 users of ml-latest-small, with titles, genres and timestamps."""
    frame = movielens_small.to_dataframe()
    frame = frame[frame["user_id"] <= 60]
    return Interactions.from_dataframe(frame, timestamp_col="timestamp", item_metadata=movielens_small.item_metadata)


@pytest.fixture(scope="module")
def other(movielens_small: Interactions) -> Interactions:
    """Users 61 to 120 of ml-latest-small: another catalogue that shares many items with ``small``."""
    frame = movielens_small.to_dataframe()
    frame = frame[(frame["user_id"] > 60) & (frame["user_id"] <= 120)]
    return Interactions.from_dataframe(frame, timestamp_col="timestamp", item_metadata=movielens_small.item_metadata)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir: Path) -> TextEncoder:
    return TextEncoder(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def source_run(other: Interactions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-tower model trained briefly on ``other`` and saved as a run folder."""
    folder = tmp_path_factory.mktemp("source")
    TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, training=TrainConfig(**FAST)).fit(other).save(folder)
    return folder


# ------------------------------------------------------------------ alignment


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("Usual Suspects, The (1995)", "the usual suspects 1995"),
        ("usual suspects, the (1995)", "the usual suspects 1995"),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", "shanghai triad 1995"),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "the city of lost children 1995"),
        ("Amélie (2001)", "amelie 2001"),
        ("Se7en (1995)", "se7en 1995"),
        ("Unknown", "unknown"),
        ("", ""),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_title_key_known_answers(title: object, key: str) -> None:
    assert title_key(title) == key


def test_align_pairs_equal_keys_and_takes_first_duplicate() -> None:
    alignment = align(["a", "b", "a", "", "c"], ["c", "x", "a", "", "b"])
    assert alignment.target_rows.tolist() == [0, 2, 4]
    assert alignment.source_rows.tolist() == [4, 0, 1]
    assert alignment.unmatched.tolist() == [1, 3]
    assert len(alignment) == 3


def test_title_alignment_links_movielens_catalogues(movielens_small: Interactions, shared_data) -> None:
    from recx.data import load_dataset

    ml100k = load_dataset("movielens-100k", str(shared_data("ml-100k")))
    alignment = align([title_key(t) for t in movielens_small.item_titles()], [title_key(t) for t in ml100k.item_titles()])
    # Most ml-100k films are in ml-latest-small; a handful of known pairs must match.
    assert len(alignment) > 0.7 * ml100k.n_items
    target_titles = ml100k.item_titles()[alignment.target_rows]
    source_titles = movielens_small.item_titles()[alignment.source_rows]
    pairs = dict(zip(target_titles.tolist(), source_titles.tolist(), strict=True))
    assert pairs["Toy Story (1995)"] == "Toy Story (1995)"
    assert pairs["Usual Suspects, The (1995)"] == "Usual Suspects, The (1995)"


# ------------------------------------------------------------------ sampling


def test_sample_per_user_rounds_up(small: Interactions) -> None:
    sampled = sample_per_user(small, 0.25, seed=3)
    before, after = small.user_counts(), sampled.user_counts()
    assert after.tolist() == [math.ceil(0.25 * n) for n in before.tolist()]
    # A subset of the original entries, with their timestamps.
    kept = sampled.matrix.multiply(small.matrix)
    assert kept.nnz == sampled.nnz
    frame = sampled.to_dataframe().merge(small.to_dataframe(), on=["user_id", "item_id"], suffixes=("", "_full"))
    assert len(frame) == sampled.nnz
    assert (frame["timestamp"] == frame["timestamp_full"]).all()
    assert sampled.users == small.users
    assert sampled.items == small.items


def test_sample_per_user_is_seeded(small: Interactions) -> None:
    first, again, other = (sample_per_user(small, 0.5, seed=s) for s in (1, 1, 2))
    assert (first.matrix != again.matrix).nnz == 0
    assert (first.matrix != other.matrix).nnz > 0
    assert sample_per_user(small, 1.0) is small


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_sample_per_user_rejects_bad_fraction(small: Interactions, fraction: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"train fraction must be in (0, 1], got {fraction!r}.")):
        sample_per_user(small, fraction)  # type: ignore[arg-type]


def test_drop_and_keep_items_partition_the_entries(small: Interactions) -> None:
    cold = np.array([0, 5, 9])
    dropped, kept = drop_items(small, cold), keep_items(small, cold)
    assert dropped.nnz + kept.nnz == small.nnz
    assert set(np.unique(kept.matrix.indices)) <= set(cold.tolist())
    assert not set(np.unique(dropped.matrix.indices)) & set(cold.tolist())
    assert dropped.n_items == small.n_items


# ------------------------------------------------------------------ vectors


def test_vectors_round_trip_npz_and_safetensors(tmp_path: Path) -> None:
    table = ItemVectors(np.array([10, 20, 30]), np.arange(6, dtype=np.float32).reshape(3, 2))
    loaded = load_vectors(table.save(tmp_path / "v.npz"))
    assert loaded.ids.tolist() == [10, 20, 30]
    assert np.array_equal(loaded.vectors, table.vectors)

    save_file({"vectors": table.vectors, "ids": np.array([10, 20, 30], dtype=np.int64)}, str(tmp_path / "a.safetensors"))
    assert load_vectors(tmp_path / "a.safetensors").ids.tolist() == [10, 20, 30]
    save_file({"vectors": table.vectors}, str(tmp_path / "b.safetensors"), metadata={"ids": json.dumps(["x", "y", "z"])})
    assert load_vectors(tmp_path / "b.safetensors").ids.tolist() == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent.npz", "vector file not found"),
        (lambda p: (p / "v.txt").write_text("1 2") and p / "v.txt", "unsupported vector file"),
        (lambda p: (np.savez(p / "v.npz", vectors=np.ones((2, 2))), p / "v.npz")[1], "lacks the arrays ['ids']"),
        (lambda p: ((p / "v.npz").write_bytes(b"not a zip"), p / "v.npz")[1], "is not a readable .npz file"),
        (lambda p: (save_file({"vectors": np.ones((2, 2), dtype=np.float32)}, str(p / "v.safetensors")), p / "v.safetensors")[1], "has no item ids"),
        (lambda p: (np.savez(p / "v.npz", ids=np.array([1, 1]), vectors=np.ones((2, 2))), p / "v.npz")[1], "item vector ids must be unique"),
        (lambda p: (np.savez(p / "v.npz", ids=np.array([1, 2]), vectors=np.array([[1.0, np.nan], [0, 0]])), p / "v.npz")[1], "contain NaN or infinite values"),
        (lambda p: (np.savez(p / "v.npz", ids=np.array([1, 2, 3]), vectors=np.ones((2, 2))), p / "v.npz")[1], "got 3 ids for 2 vectors"),
    ],
)
def test_bad_vector_files_raise_clear_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=re.escape(message)):
        load_vectors(path)


# ------------------------------------------------------------------ numerics


def test_principal_components_shape_and_scale() -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    projected = principal_components(vectors, 4, row_norm=0.5)
    assert projected.shape == (50, 4)
    assert projected.dtype == np.float32
    assert np.sqrt((projected**2).sum(axis=1).mean()) == pytest.approx(0.5, rel=1e-5)
    # Components are ordered by variance.
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)
    padded = principal_components(vectors, 12, row_norm=1.0)
    assert padded.shape == (50, 12)
    assert np.all(padded[:, 8:] == 0)


def test_fill_unmatched_ridge_and_mean() -> None:
    generator = np.random.default_rng(1)
    content = generator.normal(size=(200, 5))
    weights = generator.normal(size=(5, 3))
    truth = (content @ weights + 0.25).astype(np.float32)
    matched, unmatched = np.arange(150), np.arange(150, 200)
    rows = truth.copy()
    rows[unmatched] = 0
    filled, method = fill_unmatched(rows, matched, unmatched, content)
    assert method == "content"
    # Ridge shrinks the map a little: within 2% of the values' range.
    assert np.abs(filled[unmatched] - truth[unmatched]).max() < 0.02 * np.abs(truth).max()
    rows = truth.copy()
    filled, method = fill_unmatched(rows, matched, unmatched, None)
    assert method == "mean"
    assert np.allclose(filled[unmatched], truth[matched].mean(axis=0))


# ------------------------------------------------------------------ text


def test_item_texts_join_title_and_genres(small: Interactions) -> None:
    texts = item_texts(small)
    toy_story = int(np.flatnonzero(small.items.ids == 1)[0])
    assert texts[toy_story] == "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy"
    assert item_texts(small, columns=("title",))[toy_story] == "Toy Story (1995)"


def test_item_texts_errors(small: Interactions) -> None:
    bare = small.with_entries(small.matrix, small.timestamps)
    bare = Interactions(bare.matrix, bare.users, bare.items, bare.timestamps, None)
    with pytest.raises(ValueError, match=re.escape("the interactions have no item metadata, so items have no text to embed")):
        item_texts(bare)
    with pytest.raises(ValueError, match=re.escape("item metadata has none of the text columns ['plot']")):
        item_texts(small, columns=("plot",))


def test_encoder_embeds_caches_and_zeroes_empty_texts(cache_dir: Path) -> None:
    first = TextEncoder(cache_dir=cache_dir)
    vectors = first.encode(["Toy Story (1995) | Animation", "", "Heat (1995) | Crime"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0, atol=1e-5)
    assert np.all(vectors[1] == 0)
    # A fresh encoder reads the cache without loading the model.
    second = TextEncoder(cache_dir=cache_dir)
    assert np.array_equal(second.encode(["Toy Story (1995) | Animation", "", "Heat (1995) | Crime"]), vectors)
    assert second._model is None
    # Similar titles are closer than unrelated ones: the encoder carries meaning.
    more = first.encode(["Toy Story 2 (1999) | Animation", "Heat (1995) | Crime"])
    assert float(more[0] @ vectors[0]) > float(more[0] @ vectors[2])


def test_encoder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("text encoder not found: 'sentence-transformers/all-MiniLM-L6-v2' is not a folder")):
        TextEncoder("sentence-transformers/all-MiniLM-L6-v2")
    (tmp_path / "empty").mkdir()
    broken = TextEncoder(tmp_path / "empty", cache=False)
    with pytest.raises(ValueError, match=re.escape(f"could not load a sentence-transformers model from {(tmp_path / 'empty').resolve()}")):
        broken.encode(["x"])


def test_encode_items_needs_some_text(small: Interactions, encoder: TextEncoder) -> None:
    metadata = small.item_metadata.copy()
    metadata["title"] = ""
    metadata["genres"] = [[] for _ in range(len(metadata))]
    blank = Interactions(small.matrix, small.users, small.items, small.timestamps, metadata)
    with pytest.raises(ValueError, match=re.escape(f"none of the {small.n_items} items has text in the columns ['title', 'genres']")):
        encode_items(blank, encoder)


# ------------------------------------------------------------------ initialisers


def _target_model(train: Interactions, **options: object) -> TwoTowerModel:
    recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, **options)  # type: ignore[arg-type]
    config = recommender._model_config(train.n_users, train.n_items, recommender_genres(train), has_timestamps=True)
    return TwoTowerModel(config)


def recommender_genres(train: Interactions) -> list[str]:
    from recx.models.features import FeatureBuilder

    return FeatureBuilder.vocabulary(train)


def test_run_init_copies_aligned_rows_and_layers(small: Interactions, source_run: Path) -> None:
    from recx.training.checkpoint import load_model

    source = load_model(source_run / "model")
    source_items = Interactions.load(source_run / "history").items
    model = _target_model(small)
    report = RunInit(source_run, align="id").apply(model, small)

    shared = np.intersect1d(small.items.ids, source_items.ids)
    assert report.aligned_items == len(shared)
    assert report.n_items == small.n_items
    assert report.filled_by == "mean"
    target_tables, source_tables = embedding_tables(model), embedding_tables(source)
    for item in shared[:20]:
        target_row = int(np.flatnonzero(small.items.ids == item)[0])
        source_row = int(np.flatnonzero(source_items.ids == item)[0])
        for name in ("item_id", "user_history", "user_recent"):
            assert torch.equal(target_tables[name][target_row], source_tables[name][source_row])
    assert torch.equal(model.user_tower.mlp[0].weight, source.user_tower.mlp[0].weight)
    assert {"item_id", "user_history", "user_recent", "user_mlp", "item_mlp", "item_genres"} <= set(report.groups)
    # Unmatched rows hold the mean of the matched ones.
    unmatched = np.setdiff1d(np.arange(small.n_items), np.flatnonzero(np.isin(small.items.ids, shared)))
    if len(unmatched):
        matched_rows = target_tables["item_id"][np.flatnonzero(np.isin(small.items.ids, shared))]
        assert torch.allclose(target_tables["item_id"][unmatched[0]], matched_rows.mean(dim=0), atol=1e-6)


def test_run_init_by_title_matches_the_same_items(small: Interactions, source_run: Path) -> None:
    by_id = RunInit(source_run, align="id").apply(_target_model(small), small)
    by_title = RunInit(source_run, align="title").apply(_target_model(small), small)
    # ml-latest-small titles are unique but for a few remakes, so both keys pair nearly the same items.
    assert abs(by_title.aligned_items - by_id.aligned_items) <= 5


def test_run_init_errors(small: Interactions, source_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("the source model's embedding tables have 16 dimensions, the target's 32. Set embedding_dim=16")):
        model = TwoTowerModel(TwoTowerConfig(n_users=small.n_users, n_items=small.n_items, embedding_dim=32))
        RunInit(source_run).apply(model, small)
    with pytest.raises(ValueError, match=re.escape("matched none of the")):
        RunInit(source_run, align=lambda item, title: "").apply(_target_model(small), small)
    with pytest.raises(FileNotFoundError, match=re.escape("source run not found")):
        RunInit(tmp_path / "nowhere").apply(_target_model(small), small)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=re.escape("is not a recx run: it lacks ['model', 'history']")):
        RunInit(tmp_path / "plain").apply(_target_model(small), small)
    # A checkpoint of another model type is refused by name.
    other_type = tmp_path / "other-type"
    import shutil

    shutil.copytree(source_run, other_type)
    config = json.loads((other_type / "model" / "config.json").read_text())
    config["model_type"] = "ease"
    (other_type / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape("unknown model type 'ease'")):
        RunInit(other_type).apply(_target_model(small), small)


def test_vector_init_copies_rows_and_checks_dimension(small: Interactions, tmp_path: Path) -> None:
    ids = small.items.ids[:10]
    vectors = np.arange(10 * 16, dtype=np.float32).reshape(10, 16)
    path = ItemVectors(ids, vectors).save(tmp_path / "factors.npz")
    model = _target_model(small)
    report = VectorInit(path).apply(model, small)
    assert report.aligned_items == 10
    assert torch.equal(embedding_tables(model)["item_id"][:10], torch.from_numpy(vectors))
    assert torch.allclose(embedding_tables(model)["user_history"][10], torch.from_numpy(vectors.mean(axis=0)))
    with pytest.raises(ValueError, match=re.escape("the item vectors have 16 dimensions but the model's embedding tables have 32. Set embedding_dim=16")):
        VectorInit(path).apply(TwoTowerModel(TwoTowerConfig(n_users=small.n_users, n_items=small.n_items, embedding_dim=32)), small)
    with pytest.raises(ValueError, match=re.escape("unknown tables ['item_genres']")):
        VectorInit(path, tables=["item_genres"])


def test_resolve_source(tmp_path: Path, source_run: Path) -> None:
    assert isinstance(resolve_source("text"), TextInit)
    assert isinstance(resolve_source(str(source_run)), RunInit)
    assert isinstance(resolve_source(tmp_path / "x.npz"), VectorInit)
    with pytest.raises(FileNotFoundError, match=re.escape("initialisation source not found: 'nothing-here' is neither 'text'")):
        resolve_source("nothing-here")
    (tmp_path / "file.csv").write_text("a")
    with pytest.raises(ValueError, match=re.escape("cannot initialise from")):
        resolve_source(str(tmp_path / "file.csv"))


def test_text_init_reads_cold_items_from_content(small: Interactions, encoder: TextEncoder) -> None:
    cold = np.arange(0, small.n_items, 7)
    train = drop_items(small, cold)
    recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, init=[TextInit(encoder=encoder)], training=TrainConfig(**FAST))
    recommender.fit(train)
    model = recommender.model
    assert model.config.text_dim == 384
    weights = model.item_tower.id_weight.numpy()
    assert set(np.flatnonzero(weights == 0)) == set(cold.tolist()) | set(np.flatnonzero(train.item_counts() == 0).tolist())
    # A cold item's embedding does not depend on its id row.
    before = recommender.item_embeddings(cold[:3])
    with torch.no_grad():
        embedding_tables(model)["item_id"][cold[:3]] += 5.0
    assert np.allclose(recommender.item_embeddings(cold[:3]), before, atol=1e-6)
    assert recommender.transfer_report[0]["source"] == "text"
    assert set(recommender.transfer_report[0]["groups"]) == {"item_id", "user_history", "user_recent"}


def test_text_model_saves_and_loads_with_its_vectors(small: Interactions, encoder: TextEncoder, tmp_path: Path) -> None:
    recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[], output_dim=16, init=[TextInit(encoder=encoder, tables=False)], training=TrainConfig(**FAST)).fit(small)
    recommender.save(tmp_path / "run")
    loaded = TwoTowerRecommender.load(tmp_path / "run")
    assert np.allclose(loaded.item_embeddings(), recommender.item_embeddings(), atol=1e-6)
    saved = json.loads((tmp_path / "run" / "recommender.json").read_text())
    assert saved["transfer"]["init"][0]["tables"] is False


# ------------------------------------------------------------------ policies


def test_parameter_groups_cover_every_parameter(small: Interactions) -> None:
    model = _target_model(small)
    groups = {parameter_group(name) for name, _ in model.named_parameters()}
    assert groups == {"user_history", "user_recent", "user_mlp", "item_id", "item_genres", "item_mlp"}
    with pytest.raises(ValueError, match=re.escape("parameter 'head.weight' belongs to no known group")):
        parameter_group("head.weight")


def test_policy_learning_rates_and_l2_sp_penalty(small: Interactions) -> None:
    model = _target_model(small)
    policy = FineTuning(pretrained_lr_scale=0.1, learning_rates={"item_mlp": 0.5}, l2_sp=0.01)
    policy.bind(model, {"item_id", "user_history"})
    rates = {group["name"]: group["lr"] for group in policy.parameter_groups(model, 0.003)}
    assert rates["item_id"] == pytest.approx(0.0003)
    assert rates["user_history"] == pytest.approx(0.0003)
    assert rates["user_mlp"] == pytest.approx(0.003)
    assert rates["item_mlp"] == 0.5
    assert float(torch.as_tensor(policy.penalty(model)).detach()) == 0.0
    with torch.no_grad():
        embedding_tables(model)["item_id"][0] += 2.0  # 16 entries moved by 2: sum of squares 64
        model.user_tower.mlp[0].weight += 1.0  # not pretrained: no penalty
    assert float(torch.as_tensor(policy.penalty(model)).detach()) == pytest.approx(0.01 * 64.0)


def test_frozen_tables_stay_put_until_unfrozen(small: Interactions, source_run: Path) -> None:
    def train(unfreeze: int | None) -> tuple[TwoTowerRecommender, torch.Tensor]:
        policy = FineTuning(freeze=["item_id", "user_history"], unfreeze_epoch=unfreeze)
        recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, init=[RunInit(source_run, align="id")], fine_tuning=policy, training=TrainConfig(**FAST))
        initial = {}

        original_apply = RunInit.apply

        def capture(self, model, data):  # records the weights right after initialisation
            report = original_apply(self, model, data)
            initial.update({name: table.detach().clone() for name, table in embedding_tables(model).items()})
            return report

        RunInit.apply = capture  # type: ignore[method-assign]
        try:
            recommender.fit(small)
        finally:
            RunInit.apply = original_apply  # type: ignore[method-assign]
        return recommender, initial

    frozen, initial = train(None)
    tables = embedding_tables(frozen.model)
    assert torch.equal(tables["item_id"], initial["item_id"]) and torch.equal(tables["user_history"], initial["user_history"])
    assert not torch.equal(tables["user_recent"], initial["user_recent"])
    unfrozen, initial = train(2)
    assert not torch.equal(embedding_tables(unfrozen.model)["item_id"], initial["item_id"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"freeze": ["towers"]}, "unknown parameter group 'towers'"),
        ({"learning_rates": {"mlp": 0.1}}, "unknown parameter group 'mlp'"),
        ({"freeze": ["item_id"], "unfreeze_epoch": 0}, "unfreeze_epoch must be a positive integer or None, got 0."),
        ({"unfreeze_epoch": 2}, "unfreeze_epoch is set but freeze is empty"),
        ({"pretrained_lr_scale": 0}, "pretrained_lr_scale must be > 0, got 0."),
        ({"learning_rates": {"item_id": -1}}, "learning rate of group 'item_id' must be > 0, got -1."),
        ({"l2_sp": -0.1}, "l2_sp must be >= 0, got -0.1."),
    ],
)
def test_policy_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FineTuning(**options)


def test_freezing_everything_is_refused(small: Interactions, source_run: Path) -> None:
    recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, init=[RunInit(source_run, align="id")], fine_tuning=FineTuning(freeze=["pretrained"]), training=TrainConfig(**FAST))
    with pytest.raises(ValueError, match=re.escape("covers every parameter group of the model")):
        recommender.fit(small)


# ------------------------------------------------------------------ content baseline


def test_text_similarity_scores_by_cosine_to_the_history_mean(small: Interactions) -> None:
    vectors = np.random.default_rng(0).normal(size=(small.n_items, 6)).astype(np.float32)
    model = TextSimilarity(vectors).fit(small)
    scores = model.score_users(np.array([0, 3]))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, user in enumerate([0, 3]):
        profile = unit[small.user_items(user)].sum(axis=0)
        expected = unit @ (profile / np.linalg.norm(profile))
        assert np.allclose(scores[row], expected, atol=1e-5)
    with pytest.raises(ValueError, match=re.escape(f"the interactions have {small.n_items} items but 3 item vectors were given")):
        TextSimilarity(vectors[:3]).fit(small)


# ------------------------------------------------------------------ command line


def test_cli_train_with_text_init_and_train_fraction(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recx.cli.main import main

    monkeypatch.setenv("RECX_CACHE_DIR", str(cache_dir))
    # A MovieLens-format folder with the first 30 users keeps the catalogue (and the encoding) small.
    embedded = Path(__file__).resolve().parents[1] / "recx" / "data" / "embedded" / "ml-latest-small"
    ratings = pd.read_csv(embedded / "ratings.csv")
    ratings = ratings[ratings["userId"] <= 30]
    movies = pd.read_csv(embedded / "movies.csv")
    (tmp_path / "ml").mkdir()
    ratings.to_csv(tmp_path / "ml" / "ratings.csv", index=False)
    movies[movies["movieId"].isin(ratings["movieId"])].to_csv(tmp_path / "ml" / "movies.csv", index=False)
    run = tmp_path / "run"
    arguments = ["train", "--dataset", "movielens", "--data-path", str(tmp_path / "ml"), "--init", "text", "--train-fraction", "0.2"]
    assert main([*arguments, "--epochs", "1", "--output", str(run), "--quiet"]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["settings"]["transfer"] == {"init": ["text"]}
    assert record["settings"]["split"]["train_fraction"] == 0.2
    saved = json.loads((run / "recommender.json").read_text())
    assert saved["transfer"]["init"][0]["source"] == "text"
    assert json.loads((run / "model" / "config.json").read_text())["model"]["text_dim"] == 384
    # The run trained on a fifth of each user's training interactions, rounded up.
    from recx.pipeline import RunSettings, load_data, make_split

    settings = RunSettings.from_dict(record["settings"])
    full = make_split(RunSettings.from_dict({**record["settings"], "split": {**settings.split, "train_fraction": 1.0}}), load_data(settings))
    assert record["split"]["train"] == sum(math.ceil(0.2 * n) for n in full.train.user_counts().tolist())
    assert json.loads((run / "metrics.json").read_text())["model"]["ndcg@20"] > 0


def test_cli_text_init_without_titles_says_how_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recx.cli.main import main

    frame = pd.read_csv(Path(__file__).resolve().parents[1] / "recx" / "data" / "embedded" / "ml-latest-small" / "ratings.csv")
    frame[frame["userId"] <= 40].to_csv(tmp_path / "ratings.csv", index=False)
    arguments = ["train", "--dataset", "csv", "--data-path", str(tmp_path / "ratings.csv"), "--user-col", "userId", "--item-col", "movieId"]
    arguments += ["--timestamp-col", "timestamp", "--init", "text", "--epochs", "1", "--output", str(tmp_path / "run"), "--quiet"]
    assert main(arguments) != 0
    assert "the interactions have no item metadata, so items have no text to embed" in capsys.readouterr().err


def test_cli_rejects_bad_transfer_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recx.cli.main import main

    assert main(["train", "--train-fraction", "0", "--output", str(tmp_path / "a"), "--quiet"]) != 0
    assert "train_fraction must be in (0, 1], got 0.0" in capsys.readouterr().err
    assert main(["train", "--init", str(tmp_path / "missing-run"), "--output", str(tmp_path / "b"), "--quiet"]) != 0
    assert "initialisation source not found" in capsys.readouterr().err
    assert main(["train", "--freeze", "towers", "--init", "text", "--output", str(tmp_path / "c"), "--quiet"]) != 0
    assert "unknown parameter group 'towers'" in capsys.readouterr().err


def test_run_init_into_a_text_model_starts_as_the_source(small: Interactions, source_run: Path) -> None:
    from recx.models.features import FeatureBuilder
    from recx.training.checkpoint import load_model

    source = load_model(source_run / "model").eval()
    source_history = Interactions.load(source_run / "history")
    recommender = TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16)
    config = recommender._model_config(small.n_users, small.n_items, recommender_genres(small), has_timestamps=True, text_dim=8)
    model = TwoTowerModel(config).eval()
    with torch.no_grad():
        model.item_tower.text_vectors.normal_()
    report = RunInit(source_run, align="id").apply(model, small)
    assert "item_mlp" in report.groups

    # The text input starts with zero weight, so aligned items embed exactly as in the source.
    first = model.item_tower.mlp[0].weight
    assert torch.equal(first[:, 32:48], torch.zeros_like(first[:, 32:48]))
    assert torch.equal(first[:, :32], source.item_tower.mlp[0].weight)
    shared = np.intersect1d(small.items.ids, source_history.items.ids)[:10]
    target_rows = np.array([np.flatnonzero(small.items.ids == item)[0] for item in shared])
    source_rows = np.array([np.flatnonzero(source_history.items.ids == item)[0] for item in shared])
    with torch.no_grad():
        target_out = model.item_tower(FeatureBuilder(config, small).item_features(target_rows))
        source_out = source.item_tower(FeatureBuilder(source.config, source_history).item_features(source_rows))
    assert config.genre_names == source.config.genre_names
    assert torch.allclose(target_out, source_out, atol=1e-5)


def test_softmax_takes_a_logq_per_negative() -> None:
    from recx.losses import sampled_softmax_loss

    generator = torch.Generator().manual_seed(0)
    users, items, others = (torch.randn(3, 4, generator=generator) for _ in range(3))
    ids = torch.tensor([0, 1, 2])
    log_q, other_log_q = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, -0.5, 1.0])
    loss = sampled_softmax_loss(users, items, ids, item_log_q=log_q, negative_embeddings=others, negative_ids=torch.tensor([2, 7, 8]), negative_log_q=other_log_q)
    logits = torch.cat([users @ items.T - log_q, users @ others.T - other_log_q], dim=1)
    logits[2, 3] = float("-inf")  # negative 0 has id 2, which is row 2's own positive
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_content_loss_matches_both_views_by_hand(small: Interactions) -> None:
    from recx.losses import sampled_softmax_loss
    from recx.models.features import FeatureBuilder
    from recx.training.trainer import Trainer

    config = TwoTowerConfig(n_users=small.n_users, n_items=small.n_items, embedding_dim=8, hidden_dims=[], output_dim=8, text_dim=4, content_weight=0.5)
    model = TwoTowerModel(config)
    with torch.no_grad():
        model.item_tower.text_vectors.normal_()
    features = FeatureBuilder(config, small)
    trainer = Trainer(model, features, TrainConfig(**FAST))
    items = np.array([0, 1, 2, 1])
    item_input = features.item_features(items)
    users = model.user_tower(features.user_features(np.array([0, 1, 2, 3])))
    full, content = model.item_tower(item_input), model.item_tower(item_input, content_only=True)
    ids, log_q = torch.from_numpy(items), torch.tensor([0.1, -0.2, 0.3, -0.2])

    loss = trainer._content_softmax(users, full, item_input, ids, log_q, 0.5, (None, None, None))
    expected = sampled_softmax_loss(users, full, ids, item_log_q=log_q, negative_embeddings=content, negative_ids=ids, negative_log_q=log_q)
    expected = expected + 0.5 * sampled_softmax_loss(users, content, ids, item_log_q=log_q, negative_embeddings=full, negative_ids=ids, negative_log_q=log_q)
    assert torch.allclose(loss, expected, atol=1e-6)
    # The content view ignores the id table: changing an id row leaves it unchanged.
    with torch.no_grad():
        embedding_tables(model)["item_id"][0] += 3.0
    assert torch.allclose(model.item_tower(item_input, content_only=True), content, atol=1e-6)
    assert not torch.allclose(model.item_tower(item_input), full, atol=1e-3)
