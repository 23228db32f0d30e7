"""Tests of the serving bundle: export, load-time checks, the Retriever and `recx export`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from recx.cli.main import main
from recx.data import Interactions, load_dataset
from recx.serving import BundleError, Retriever, UnknownIdError, export_bundle
from recx.serving.bundle import BUNDLE_FORMAT_VERSION, MANIFEST_FILE, ONNX_TOLERANCE, sha256_file
from recx.training import TrainConfig, TwoTowerRecommender

# Scores of two rankings may differ by float32 rounding; items whose scores
# agree within this tolerance may swap places.
SCORE_TOLERANCE = 1e-5


def _tiny_training(epochs: int = 1) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=512, learning_rate=0.01, show_progress=False, patience=0, device="cpu", seed=0)


@pytest.fixture(scope="module")
def movielens_slice() -> Interactions:
    """The first 40 users of the embedded MovieLens copy, with item titles (integer user and item ids)."""
    full = load_dataset("movielens-latest-small")
    frame = full.to_dataframe()
    frame = frame[frame["user_id"] <= 40]
    metadata = full.item_metadata.copy()
    metadata.index = full.items.ids
    return Interactions.from_dataframe(frame, timestamp_col="timestamp", item_metadata=metadata)


@pytest.fixture(scope="module")
def model(movielens_slice: Interactions) -> TwoTowerRecommender:
    return TwoTowerRecommender(embedding_dim=16, hidden_dims=[32], output_dim=16, training=_tiny_training()).fit(movielens_slice)


@pytest.fixture(scope="module")
def bundle(model: TwoTowerRecommender, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_bundle(model, tmp_path_factory.mktemp("bundles") / "movielens")


@pytest.fixture(scope="module")
def retriever(bundle: Path) -> Retriever:
    return Retriever.load(bundle)


@pytest.fixture()
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def assert_same_top_k(ids: Any, scores: Any, expected_ids: Any, expected_scores: Any) -> None:
    """Check two top-k lists agree: scores within SCORE_TOLERANCE, ids equal except among tied scores."""
    ids, expected_ids = list(np.asarray(ids).tolist()), list(np.asarray(expected_ids).tolist())
    assert len(ids) == len(expected_ids)
    np.testing.assert_allclose(np.asarray(scores, dtype=np.float64), np.asarray(expected_scores, dtype=np.float64), rtol=0, atol=SCORE_TOLERANCE)
    if not ids:
        return
    # Items clearly above the last score cannot be displaced by a tie at the cut-off.
    boundary = float(expected_scores[-1]) + SCORE_TOLERANCE
    above = {item for item, score in zip(ids, scores) if score > boundary}
    expected_above = {item for item, score in zip(expected_ids, expected_scores) if score > boundary}
    assert above == expected_above


def _chronological_items(data: Interactions, user: int) -> np.ndarray:
    """Return the external ids of a user's items, oldest first (ties by item index, as the feature builder orders them)."""
    start, stop = data.matrix.indptr[user], data.matrix.indptr[user + 1]
    indices = data.matrix.indices[start:stop]
    order = np.lexsort((indices, data.timestamps[start:stop]))
    return data.items.to_id(indices[order])


def _expected_input_names(model: TwoTowerRecommender) -> list[str]:
    config = model.model.config
    names = ["user_index"] if config.use_user_id else []
    names += ["history", "history_mask"] if config.use_history else []
    names += ["recent", "recent_mask"] if getattr(config, "recent_items", 0) else []
    return names


def _rewrite_manifest(folder: Path, change: Any) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    change(manifest)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- export


def test_bundle_contains_listed_files(bundle: Path, movielens_slice: Interactions) -> None:
    """The manifest describes the model and lists the size and sha256 of every other file."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert manifest["format"] == "recx-serving-bundle"
    assert manifest["format_version"] == BUNDLE_FORMAT_VERSION
    assert manifest["n_users"] == movielens_slice.n_users
    assert manifest["n_items"] == movielens_slice.n_items
    assert manifest["dimension"] == 16
    assert manifest["metric"] == "inner_product"
    assert manifest["index_kind"] == "flat"
    assert manifest["model"]["output_dim"] == 16
    assert manifest["has_titles"] is True
    on_disk = {path.relative_to(bundle).as_posix() for path in bundle.rglob("*") if path.is_file()} - {MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk
    for relative, entry in manifest["files"].items():
        assert entry["size"] == (bundle / relative).stat().st_size
        assert entry["sha256"] == sha256_file(bundle / relative)
    for required in ("item_ids.json", "user_ids.json", "item_titles.json", "item_embeddings.npy", "user_embeddings.npy", "user_history.npz", "user_tower.onnx"):
        assert required in manifest["files"]
    assert any(relative.startswith("index/") for relative in manifest["files"])


def test_manifest_records_onnx_signature(bundle: Path, model: TwoTowerRecommender) -> None:
    """The ONNX inputs and output, with their dynamic axes, are in the manifest and in the model."""
    tower = json.loads((bundle / MANIFEST_FILE).read_text())["user_tower"]
    assert [spec["name"] for spec in tower["inputs"]] == _expected_input_names(model)
    assert tower["inputs"][0] == {"name": "history", "dtype": "int64", "shape": ["batch", "history_length"]}
    assert tower["inputs"][1] == {"name": "history_mask", "dtype": "float32", "shape": ["batch", "history_length"]}
    assert tower["outputs"] == [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", 16]}]
    assert tower["check"]["users"] == 40
    assert tower["check"]["max_abs_difference"] <= tower["check"]["tolerance"]
    session = onnxruntime.InferenceSession(str(bundle / tower["file"]), providers=["CPUExecutionProvider"])
    signature = {node.name: node.shape for node in session.get_inputs()}
    assert list(signature) == _expected_input_names(model)
    assert signature["history"] == ["batch", "history_length"]


def test_onnx_tower_matches_torchrec(bundle: Path, model: TwoTowerRecommender, movielens_slice: Interactions) -> None:
    """The ONNX tower on padded histories equals the TorchRec tower within the export tolerance."""
    session = onnxruntime.InferenceSession(str(bundle / "user_tower.onnx"), providers=["CPUExecutionProvider"])
    recent_items = getattr(model.model.config, "recent_items", 0)
    n_users = movielens_slice.n_users
    # Padding wider than any bag checks that masked positions are ignored.
    width = int(np.diff(movielens_slice.matrix.indptr).max()) + 3
    feeds = {
        "history": np.zeros((n_users, width), dtype=np.int64),
        "history_mask": np.zeros((n_users, width), dtype=np.float32),
        "recent": np.zeros((n_users, recent_items + 2), dtype=np.int64),
        "recent_mask": np.zeros((n_users, recent_items + 2), dtype=np.float32),
    }
    for user in range(n_users):
        items = movielens_slice.items.to_index(_chronological_items(movielens_slice, user))
        feeds["history"][user, : len(items)] = items
        feeds["history_mask"][user, : len(items)] = 1.0
        latest = items[len(items) - min(recent_items, len(items)) :]
        feeds["recent"][user, : len(latest)] = latest
        feeds["recent_mask"][user, : len(latest)] = 1.0
    onnx_embeddings = session.run(["user_embedding"], {name: feeds[name] for name in _expected_input_names(model)})[0]
    torchrec_embeddings = model.user_embeddings()
    temperature = model.model.config.temperature
    np.testing.assert_allclose(onnx_embeddings, torchrec_embeddings, rtol=0, atol=ONNX_TOLERANCE / temperature)
    np.testing.assert_allclose(np.linalg.norm(onnx_embeddings, axis=1), 1.0 / temperature, rtol=1e-5)


def test_export_rejects_non_bundle_folder(model: TwoTowerRecommender, tmp_path: Path) -> None:
    """A non-empty folder without a bundle manifest, or a file, is never overwritten."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(f"bundle output folder {folder} is not empty and contains no recx serving bundle. Choose an empty or new folder for --output.")):
        export_bundle(model, folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileExistsError, match=re.escape(f"bundle output {file} exists and is not a folder. Choose another --output.")):
        export_bundle(model, file)


def test_export_replaces_existing_bundle(bundle: Path, model: TwoTowerRecommender, tmp_path: Path) -> None:
    """Exporting over a bundle replaces it and leaves no temporary folders behind."""
    target = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    (target / "stale.txt").write_text("from an older export")
    export_bundle(model, target)
    assert not (target / "stale.txt").exists()
    assert Retriever.load(target).n_items == model.train.n_items
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle"]


def test_export_fails_on_onnx_mismatch(model: TwoTowerRecommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ONNX tower that computes something else fails the export, and nothing is written."""
    from recx.serving import onnx_tower

    original = onnx_tower.export_onnx

    def export_scaled(tower: onnx_tower.PaddedUserTower) -> bytes:
        tower.inverse_temperature *= 1.01
        return original(tower)

    monkeypatch.setattr(onnx_tower, "export_onnx", export_scaled)
    target = tmp_path / "bundle"
    with pytest.raises(ValueError, match=re.escape("the ONNX user tower differs from the TorchRec user tower by ")) as raised:
        export_bundle(model, target)
    assert "No bundle was written." in str(raised.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- load-time checks


def test_load_rejects_missing_file(bundle_copy: Path) -> None:
    """A file listed in the manifest but absent is reported by path."""
    missing = bundle_copy / "user_embeddings.npy"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"bundle file not found: {missing} is listed in the manifest but does not exist. The bundle is incomplete; copy it again or export it again.")):
        Retriever.load(bundle_copy)


def test_load_rejects_tampered_file(bundle_copy: Path) -> None:
    """A changed byte in a file of the right size fails the checksum."""
    tampered = bundle_copy / "item_embeddings.npy"
    expected = sha256_file(tampered)
    payload = bytearray(tampered.read_bytes())
    payload[-1] ^= 0xFF
    tampered.write_bytes(bytes(payload))
    found = sha256_file(tampered)
    with pytest.raises(BundleError, match=re.escape(f"checksum mismatch for {tampered}: the manifest expects sha256 {expected}, the file has {found}. The file is corrupt or was changed after export; copy the bundle again or export it again.")):
        Retriever.load(bundle_copy)


def test_load_rejects_truncated_file(bundle_copy: Path) -> None:
    """A shortened file fails the size check before it is hashed or parsed."""
    truncated = bundle_copy / "user_tower.onnx"
    size = truncated.stat().st_size
    truncated.write_bytes(truncated.read_bytes()[: size // 2])
    with pytest.raises(BundleError, match=re.escape(f"size mismatch for {truncated}: the manifest expects {size} bytes, the file has {size // 2}. The file is truncated or was changed after export; copy the bundle again or export it again.")):
        Retriever.load(bundle_copy)


def test_load_rejects_tampered_index_file(bundle_copy: Path) -> None:
    """Files of the index subfolder are covered by the bundle manifest too."""
    tampered = bundle_copy / "index" / "index.faiss"
    payload = bytearray(tampered.read_bytes())
    payload[-1] ^= 0xFF
    tampered.write_bytes(bytes(payload))
    with pytest.raises(BundleError, match=re.escape(f"checksum mismatch for {tampered}: ")):
        Retriever.load(bundle_copy)


def test_load_rejects_unknown_version(bundle_copy: Path) -> None:
    """A format version this recx does not know is rejected with the version that wrote it."""
    _rewrite_manifest(bundle_copy, lambda manifest: manifest.update(format_version=99))
    with pytest.raises(BundleError, match=re.escape(f"unsupported bundle format version 99 in {bundle_copy / MANIFEST_FILE}: this recx reads version {BUNDLE_FORMAT_VERSION}. Export the bundle again with this recx, or load it with the recx version that wrote it (0.1.0).")):
        Retriever.load(bundle_copy)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../outside.npy", "'..' would leave the bundle folder"),
        ("index/../../outside.npy", "'..' would leave the bundle folder"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("C:\\Windows\\win.ini", "absolute paths are not allowed"),
    ],
)
def test_load_rejects_path_traversal(bundle_copy: Path, entry: str, reason: str) -> None:
    """Manifest paths that are absolute or climb out of the folder are rejected, even with a valid checksum."""
    outside = bundle_copy.parent / "outside.npy"
    outside.write_bytes(b"outside the bundle")
    _rewrite_manifest(bundle_copy, lambda manifest: manifest["files"].update({entry: {"sha256": sha256_file(outside), "size": outside.stat().st_size}}))
    with pytest.raises(BundleError, match=re.escape(f"unsafe file path {entry!r} in the manifest of bundle {bundle_copy}: {reason}.")):
        Retriever.load(bundle_copy)


def test_load_rejects_link_out_of_bundle(bundle_copy: Path) -> None:
    """A listed file that is a symbolic link to a file outside the bundle is rejected."""
    outside = bundle_copy.parent / "outside.npy"
    outside.write_bytes(b"outside the bundle")
    (bundle_copy / "linked.npy").symlink_to(outside)
    _rewrite_manifest(bundle_copy, lambda manifest: manifest["files"].update({"linked.npy": {"sha256": sha256_file(outside), "size": outside.stat().st_size}}))
    with pytest.raises(BundleError, match=re.escape(f"unsafe file path 'linked.npy' in the manifest of bundle {bundle_copy}: it resolves to {outside.resolve()}, outside the bundle folder.")):
        Retriever.load(bundle_copy)


def test_load_rejects_redirected_tower(bundle_copy: Path) -> None:
    """The ONNX file named in user_tower must be the checked bundle file."""
    _rewrite_manifest(bundle_copy, lambda manifest: manifest["user_tower"].update(file="../elsewhere.onnx"))
    with pytest.raises(BundleError, match=re.escape(f"invalid bundle manifest {bundle_copy / MANIFEST_FILE}: user_tower.file is '../elsewhere.onnx', expected 'user_tower.onnx'. Export the bundle again.")):
        Retriever.load(bundle_copy)

def test_load_rejects_missing_manifest(bundle_copy: Path, tmp_path: Path) -> None:
    """A folder without a manifest, or no folder at all, is reported with the fix."""
    (bundle_copy / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"bundle manifest not found: {bundle_copy / MANIFEST_FILE} does not exist.")):
        Retriever.load(bundle_copy)
    with pytest.raises(FileNotFoundError, match=re.escape(f"serving bundle not found: {tmp_path / 'absent'} is not a folder. Pass the --output folder of `recx export`.")):
        Retriever.load(tmp_path / "absent")


def test_load_rejects_unmarked_manifest(bundle_copy: Path) -> None:
    """A manifest without the bundle format marker is not read as a bundle."""
    _rewrite_manifest(bundle_copy, lambda manifest: manifest.pop("format"))
    with pytest.raises(BundleError, match=re.escape(f"{bundle_copy / MANIFEST_FILE} is not a recx serving bundle manifest")):
        Retriever.load(bundle_copy)


def test_load_rejects_unlisted_required_file(bundle_copy: Path) -> None:
    """A manifest that drops a required file from its list is rejected."""
    _rewrite_manifest(bundle_copy, lambda manifest: manifest["files"].pop("user_history.npz"))
    with pytest.raises(BundleError, match=re.escape(f"invalid bundle manifest {bundle_copy / MANIFEST_FILE}: required files ['user_history.npz'] are not listed. Export the bundle again.")):
        Retriever.load(bundle_copy)


# --------------------------------------------------------------------------- queries


def test_recommend_equals_model(retriever: Retriever, model: TwoTowerRecommender, movielens_slice: Interactions) -> None:
    """In-process, every user's top 10 equals the model's, and seen items are excluded."""
    for user_id in movielens_slice.users.ids.tolist():
        ids, scores = retriever.recommend(user_id, 10)
        expected_ids, expected_scores = model.recommend(user_id, 10)
        assert_same_top_k(ids, scores, expected_ids, expected_scores)
        seen = set(movielens_slice.items.to_id(movielens_slice.user_items(movielens_slice.users.to_index([user_id])[0])).tolist())
        assert not seen & set(ids.tolist())


def test_recommend_equals_model_without_torch(bundle: Path, model: TwoTowerRecommender, movielens_slice: Interactions, tmp_path: Path) -> None:
    """A fresh process that never imports torch or torchrec gets the model's top k for every query."""
    output = tmp_path / "results.json"
    script = textwrap.dedent(
        """
        import json, sys
        from recx.cli.main import build_parser
        from recx.serving import Retriever
        from recx.serving.http import create_server

        # The modules and parser of `recx serve` load too, to check they stay free of torch.
        build_parser()

        retriever = Retriever.load(sys.argv[1])
        results = {"recommend": {}, "from_history": {}, "similar": {}}
        for user_id in retriever.user_ids.ids.tolist():
            ids, scores = retriever.recommend(user_id, 10)
            results["recommend"][str(user_id)] = [ids.tolist(), scores.tolist()]
        for user_id, history in json.loads(sys.argv[3]).items():
            ids, scores = retriever.recommend_from_history(history, 10)
            results["from_history"][user_id] = [ids.tolist(), scores.tolist()]
        for item_id in retriever.item_ids.ids[:20].tolist():
            ids, scores = retriever.similar_items(item_id, 5)
            results["similar"][str(item_id)] = [ids.tolist(), scores.tolist()]
        assert "torch" not in sys.modules, "the retriever imported torch"
        assert "torchrec" not in sys.modules, "the retriever imported torchrec"
        with open(sys.argv[2], "w") as stream:
            json.dump(results, stream)
        """
    )
    histories = {str(user_id): _chronological_items(movielens_slice, user).tolist() for user, user_id in enumerate(movielens_slice.users.ids.tolist())}
    completed = subprocess.run([sys.executable, "-c", script, str(bundle), str(output), json.dumps(histories)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(output.read_text())

    for user_id in movielens_slice.users.ids.tolist():
        expected_ids, expected_scores = model.recommend(user_id, 10)
        assert_same_top_k(*results["recommend"][str(user_id)], expected_ids, expected_scores)
        # The ONNX tower on the user's history gives the same ranking as the TorchRec embedding.
        assert_same_top_k(*results["from_history"][str(user_id)], expected_ids, expected_scores)

    item_embeddings = model.item_embeddings()
    for item_id, (ids, scores) in results["similar"].items():
        item = movielens_slice.items.to_index([int(item_id)])[0]
        similarity = item_embeddings @ item_embeddings[item]
        similarity[item] = -np.inf
        order = np.argsort(-similarity, kind="stable")[:5]
        assert_same_top_k(ids, scores, movielens_slice.items.to_id(order), similarity[order])


def test_similar_items_excludes_query(retriever: Retriever) -> None:
    """An item is never its own neighbour, and scores are cosine similarities, best first."""
    for item_id in retriever.item_ids.ids[:10].tolist():
        ids, scores = retriever.similar_items(item_id, 8)
        assert item_id not in ids.tolist()
        assert len(ids) == 8
        assert np.all(np.diff(scores) <= 0)
        assert np.all(scores <= 1.0 + 1e-5)


def test_recommend_exclude_seen_false(retriever: Retriever, model: TwoTowerRecommender) -> None:
    """exclude_seen=False ranks the whole catalogue, like the model's filter_seen=False."""
    ids, scores = retriever.recommend(1, 15, exclude_seen=False)
    expected_ids, expected_scores = model.recommend(1, 15, filter_seen=False)
    assert_same_top_k(ids, scores, expected_ids, expected_scores)


def test_history_order_and_repeats_ignored(retriever: Retriever, movielens_slice: Interactions) -> None:
    """Reordering ids before the latest ``recent_items``, or repeating them earlier, does not change the result."""
    history = _chronological_items(movielens_slice, 3).tolist()
    ids, scores = retriever.recommend_from_history(history, 10)
    split = len(history) - retriever.recent_items
    older, latest = history[:split], history[split:]
    # A repeat counts at its last position, so an early copy of the newest item changes nothing.
    shuffled = [history[-1]] + list(np.random.default_rng(0).permutation(older).tolist()) + latest
    again_ids, again_scores = retriever.recommend_from_history(shuffled, 10)
    assert again_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(again_scores, scores)
    kept_ids, _ = retriever.recommend_from_history(history, 10, exclude_history=False)
    assert set(kept_ids.tolist()) & set(history)


def test_string_ids_map_to_int_ids(retriever: Retriever) -> None:
    """Ids typed as text find integer ids, and results keep the integer type."""
    ids, scores = retriever.recommend("1", 5)
    expected_ids, expected_scores = retriever.recommend(1, 5)
    assert ids.tolist() == expected_ids.tolist()
    assert ids.dtype == np.int64
    assert retriever.similar_items("1", 3)[0].tolist() == retriever.similar_items(1, 3)[0].tolist()
    assert retriever.recommend_from_history(["1", "2"], 3)[0].tolist() == retriever.recommend_from_history([1, 2], 3)[0].tolist()


def test_unknown_history_ids(retriever: Retriever) -> None:
    """Unknown history ids raise, unless ignore_unknown drops them."""
    with pytest.raises(UnknownIdError, match=re.escape("unknown item id(s) [-5, 'x'] in the history (2 of 3 not in the catalogue of")):
        retriever.recommend_from_history([1, -5, "x"], 5)
    dropped = retriever.recommend_from_history([1, -5, "x"], 5, ignore_unknown=True)
    alone = retriever.recommend_from_history([1], 5)
    assert dropped[0].tolist() == alone[0].tolist()
    with pytest.raises(ValueError, match=re.escape("the history is empty after dropping unknown ids: none of the 2 item ids, such as [-5, -6], is in the catalogue. Pass at least one known item id.")):
        retriever.recommend_from_history([-5, -6], 5, ignore_unknown=True)


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, "k must be a positive integer, got 0. Pass for example k=10."),
        (-3, "k must be a positive integer, got -3. Pass for example k=10."),
        (2.5, "k must be a positive integer, got 2.5 (float). Pass for example k=10."),
        (True, "k must be a positive integer, got True (bool). Pass for example k=10."),
        ("10", "k must be a positive integer, got '10' (str). Pass for example k=10."),
    ],
)
def test_bad_k_rejected(retriever: Retriever, k: Any, message: str) -> None:
    """Each query rejects a k that is not a positive integer."""
    for query in (lambda: retriever.recommend(1, k), lambda: retriever.similar_items(1, k), lambda: retriever.recommend_from_history([1], k)):
        with pytest.raises(ValueError, match=re.escape(message)):
            query()


def test_k_larger_than_catalogue(retriever: Retriever, movielens_slice: Interactions) -> None:
    """k above the number of items is rejected with the largest valid k; k equal to it returns every unseen item."""
    n_items = retriever.n_items
    with pytest.raises(ValueError, match=re.escape(f"k={n_items + 1} is larger than the catalogue of {n_items} items. Pass k <= {n_items}.")):
        retriever.recommend(1, n_items + 1)
    ids, _ = retriever.recommend(1, n_items)
    seen = movielens_slice.user_items(movielens_slice.users.to_index([1])[0])
    assert len(ids) == n_items - len(seen)
    assert len(retriever.similar_items(1, n_items)[0]) == n_items - 1


def test_unknown_ids_rejected(retriever: Retriever) -> None:
    """Unknown users and items raise UnknownIdError naming the id and the fix."""
    with pytest.raises(UnknownIdError, match=re.escape("unknown user id 999999: the bundle has no embedding for it (40 known users with int ids, such as [1, 2, 3]). For a user who was not in the training data, call recommend_from_history with their item ids.")):
        retriever.recommend(999999, 5)
    with pytest.raises(UnknownIdError, match=re.escape("unknown user id 'abc': ")):
        retriever.recommend("abc", 5)
    with pytest.raises(UnknownIdError, match=re.escape(f"unknown item id -1: the catalogue of {retriever.n_items} items has no such id (int ids, such as [1, 2, 3]). Check the id and its type.")):
        retriever.similar_items(-1, 5)
    with pytest.raises(TypeError, match=re.escape("user ids are integers or strings, got float 1.5. Pass the id as it appears in the training data.")):
        retriever.recommend(1.5, 5)


def test_empty_or_malformed_history(retriever: Retriever) -> None:
    """An empty history, or a single id in place of a list, is rejected."""
    with pytest.raises(ValueError, match=re.escape("the history is empty: item_ids contains no item ids. Pass at least one item the user interacted with.")):
        retriever.recommend_from_history([], 5)
    with pytest.raises(TypeError, match=re.escape("item_ids must be a list of item ids, got str '1'. Wrap a single id in a list: ['1'].")):
        retriever.recommend_from_history("1", 5)
    with pytest.raises(ValueError, match=re.escape("user_id=1 was given, but this bundle's user tower reads no user id: the history alone describes the user. Leave user_id out.")):
        retriever.recommend_from_history([1], 5, user_id=1)


def test_threads_match_serial(retriever: Retriever) -> None:
    """Eight threads querying one Retriever get exactly the serial results."""
    users = retriever.user_ids.ids.tolist()
    items = retriever.item_ids.ids[:40].tolist()
    queries: list[tuple[str, Any]] = [("recommend", user) for user in users] + [("similar", item) for item in items] + [("history", items[i : i + 5]) for i in range(0, 40, 5)]
    queries = queries * 3

    def run(query: tuple[str, Any]) -> tuple[list[Any], list[float]]:
        kind, argument = query
        if kind == "recommend":
            ids, scores = retriever.recommend(argument, 10)
        elif kind == "similar":
            ids, scores = retriever.similar_items(argument, 10)
        else:
            ids, scores = retriever.recommend_from_history(argument, 10)
        return ids.tolist(), scores.tolist()

    serial = [run(query) for query in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, queries))
    assert parallel == serial


# --------------------------------------------------------------------------- user ids, string ids and the command line


@pytest.fixture(scope="module")
def clustered_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TwoTowerRecommender, Path]:
    """A saved run of a model with a user-id table, on string user ids in three taste clusters."""
    generator = np.random.default_rng(5)
    rows = []
    for cluster in range(3):
        for member in range(20):
            items = generator.choice(10, size=6, replace=False) + 10 * cluster
            rows += [(f"u{cluster}-{member}", f"item{item}", step) for step, item in enumerate(items)]
    data = Interactions.from_dataframe(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), timestamp_col="timestamp")
    model = TwoTowerRecommender(embedding_dim=8, hidden_dims=[16], output_dim=8, use_user_id=True, training=_tiny_training(epochs=2)).fit(data)
    folder = tmp_path_factory.mktemp("runs") / "clustered"
    model.save(folder)
    return model, folder


def test_cli_export_with_user_ids(clustered_run: tuple[TwoTowerRecommender, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recx export` writes a bundle whose ONNX tower also takes user indices."""
    model, run = clustered_run
    output = tmp_path / "bundle"
    assert main(["export", str(run), "--output", str(output), "-q"]) == 0
    assert f"Wrote serving bundle {output}/ from run {run}" in capsys.readouterr().out

    retriever = Retriever.load(output)
    assert retriever.uses_user_id
    assert not retriever.has_titles
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert [spec["name"] for spec in manifest["user_tower"]["inputs"]] == _expected_input_names(model)
    assert _expected_input_names(model)[0] == "user_index"
    history = _chronological_items(model.train, 0).tolist()
    user_id = model.train.users.ids[0]
    ids, scores = retriever.recommend_from_history(history, 5, user_id=user_id)
    expected_ids, expected_scores = model.recommend(user_id, 5)
    assert_same_top_k(ids, scores, expected_ids, expected_scores)
    assert_same_top_k(*retriever.recommend(user_id, 5), expected_ids, expected_scores)
    assert retriever.recommend(user_id, 5)[0].dtype == object
    with pytest.raises(ValueError, match=re.escape("this bundle's user tower also reads a user id (the model was trained with use_user_id=True). Pass user_id= of a known user, or call recommend(user_id).")):
        retriever.recommend_from_history(history, 5)


def test_cli_export_reports_errors(clustered_run: tuple[TwoTowerRecommender, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recx export` into a folder of other files exits with status 2 and one error line."""
    _, run = clustered_run
    (tmp_path / "other.txt").write_text("x")
    assert main(["export", str(run), "--output", str(tmp_path), "-q"]) == 2
    assert f"recx export: error: bundle output folder {tmp_path} is not empty and contains no recx serving bundle." in capsys.readouterr().err

