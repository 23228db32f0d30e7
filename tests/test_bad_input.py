"""Bad inputs across loaders, splits, training, the index, serving bundles and the command line.

``BAD_INPUTS`` is one table: each row builds a bad input, calls recx with it,
and states the exception and the message (the wrong value and the fix) that
must come back. Rows of the command line run ``recx`` in-process and expect
exit status 2 with the message on stderr. The last block of the table is
kept for rows of ``recx.transfer``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import recx
from recx.baselines import MostPopular
from recx.cli.main import main
from recx.data import Interactions, read_csv, split_interactions
from recx.data.idmap import IdMap
from recx.evaluation import evaluate
from recx.index import ItemIndex
from recx.serving import BundleError, Retriever, UnknownIdError, export_bundle
from recx.serving.bundle import MANIFEST_FILE, sha256_file
from recx.training import TrainConfig, TwoTowerRecommender, load_model
from recx.transfer import FineTuning, ItemVectors, RunInit, TextEncoder, VectorInit


@dataclass(frozen=True)
class Context:
    """What a row may use: a private folder and shared, already-built objects it must not change."""

    tmp: Path
    data: Interactions
    model: TwoTowerRecommender
    run: Path
    bundle: Path
    index: ItemIndex


class CommandFailed(Exception):
    """`recx` exited with status 2; the message is its last stderr line."""


def cli(*arguments: str) -> None:
    """Run `recx` in-process and raise CommandFailed with the error line when it exits with status 2."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            status = main(list(arguments))
        except SystemExit as exit:
            status = exit.code
    assert status in (0, 2), f"recx exited with status {status}"
    if status == 2:
        raise CommandFailed(errors.getvalue().strip().splitlines()[-1])


def _fast_training(**options: Any) -> TrainConfig:
    settings: dict[str, Any] = {"epochs": 1, "batch_size": 64, "show_progress": False, "device": "cpu", "patience": 0, "seed": 0}
    settings.update(options)
    return TrainConfig(**settings)


def _frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def _write(ctx: Context, name: str, content: str | bytes) -> Path:
    path = ctx.tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _bundle_copy(ctx: Context) -> Path:
    return Path(shutil.copytree(ctx.bundle, ctx.tmp / "bundle"))


def _relist(bundle: Path, relative: str) -> None:
    """Record a changed file's size and checksum in the manifest, as someone forging a bundle would."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"][relative] = {"sha256": sha256_file(bundle / relative), "size": (bundle / relative).stat().st_size}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))


def _edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    change(manifest)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    return bundle


def _forged_onnx(ctx: Context) -> Path:
    bundle = _bundle_copy(ctx)
    (bundle / "user_tower.onnx").write_bytes(b"not an ONNX model")
    _relist(bundle, "user_tower.onnx")
    return bundle


def _pickled_embeddings(ctx: Context) -> Path:
    bundle = _bundle_copy(ctx)
    with open(bundle / "user_embeddings.npy", "wb") as stream:
        np.save(stream, np.array([{"payload": 1}] * 3, dtype=object), allow_pickle=True)
    _relist(bundle, "user_embeddings.npy")
    return bundle


def _unlisted_linked_index_file(ctx: Context) -> Path:
    """A bundle whose index/items.json is dropped from the manifest and replaced by a link to a file outside."""
    bundle = _bundle_copy(ctx)
    outside = _write(ctx, "outside.json", (bundle / "index" / "items.json").read_text())
    (bundle / "index" / "items.json").unlink()
    (bundle / "index" / "items.json").symlink_to(outside)
    return _edit_manifest(bundle, lambda manifest: manifest["files"].pop("index/items.json"))


def _linked_index_folder(ctx: Context) -> Path:
    """A bundle whose index folder is a link to a copy outside the bundle."""
    bundle = _bundle_copy(ctx)
    outside = shutil.copytree(bundle / "index", ctx.tmp / "outside-index")
    shutil.rmtree(bundle / "index")
    (bundle / "index").symlink_to(outside, target_is_directory=True)
    return bundle


def _interrupted_run(ctx: Context) -> Path:
    (ctx.tmp / "interrupted" / "checkpoint").mkdir(parents=True)
    return ctx.tmp / "interrupted"


def _diverging_fit(ctx: Context) -> Any:
    return TwoTowerRecommender(training=_fast_training(optimizer="sgd", momentum=0.0, learning_rate=1e30)).fit(ctx.data)


def _filtered_user(ctx: Context) -> Any:
    """User "ghost" rated nothing at or above min_weight, so filtering removed them from the id map."""
    data = Interactions.from_dataframe(_frame(user_id=["a", "a", "ghost"], item_id=[1, 2, 1], rating=[5, 4, 2]), weight_col="rating", min_weight=4)
    return MostPopular().fit(data).recommend("ghost", 1)


def row(name: str, error: type[BaseException], message: str | Callable[[Context], str], action: Callable[[Context], Any], *, pattern: bool = False) -> Any:
    """One table row: ``action`` must raise ``error`` whose text contains ``message`` (a regular expression when ``pattern``)."""
    return pytest.param(error, message, action, pattern, id=name)


BAD_INPUTS = [
    # ---------------------------------------------------------------- loaders
    row(
        "matrix-transposed",
        ValueError,
        "matrix shape (36, 30) does not match 30 users x 36 items. It looks transposed: pass the items x users matrix's transpose (matrix.T), rows are users.",
        lambda ctx: Interactions.from_scipy(ctx.data.matrix.T, users=ctx.data.users, items=ctx.data.items),
    ),
    row(
        "matrix-dense",
        TypeError,
        "matrix must be a scipy sparse matrix (for example scipy.sparse.csr_matrix), got ndarray.",
        lambda ctx: Interactions.from_scipy(np.ones((3, 4))),
    ),
    row(
        "duplicate-pairs",
        ValueError,
        "1 duplicate (user, item) events, for example user id 'u1' and item id 5. Choose a duplicates policy: 'sum', 'max', 'first' or 'last'.",
        lambda ctx: Interactions.from_dataframe(_frame(user_id=["u1", "u1", "u2"], item_id=[5, 5, 6]), duplicates="error"),
    ),
    row("duplicate-ids", ValueError, "item ids must be unique, but [3] appear more than once.", lambda ctx: IdMap([3, 1, 3])),
    row(
        "ids-mix-types",
        TypeError,
        "user ids mix integers and strings (for example 1 and 'a'). Convert the column to one type, for example with df[column].astype(str).",
        lambda ctx: Interactions.from_dataframe(_frame(user_id=[1, "a"], item_id=[5, 6])),
    ),
    row(
        "csv-ids-mix-numbers-and-text",
        ValueError,
        lambda ctx: f"column 'user_id' (user_col) in {ctx.tmp / 'mixed.csv'} mixes integer ids and other text, for example 1 and 'u3' on line 4. Pass id_dtype='str'",
        lambda ctx: read_csv(_write(ctx, "mixed.csv", "user_id,item_id\n1,5\n2,6\nu3,7\n")),
    ),
    row(
        "csv-not-utf8",
        ValueError,
        lambda ctx: f"could not decode {ctx.tmp / 'latin.csv'} as utf-8 (unexpected end of data: byte 0xe9). Pass the file's encoding, for example encoding='latin-1'.",
        lambda ctx: read_csv(_write(ctx, "latin.csv", "user_id,item_id\nJos\xe9,1\nAna,2\n".encode("latin-1"))),
    ),
    row(
        "csv-header-only",
        ValueError,
        lambda ctx: f"no interactions: {ctx.tmp / 'header.csv'} has a header row but no data rows.",
        lambda ctx: read_csv(_write(ctx, "header.csv", "user_id,item_id\n")),
    ),
    row(
        "csv-missing-column",
        ValueError,
        lambda ctx: f"column 'visitor' (user_col) not found in {ctx.tmp / 'log.csv'}. The file has columns ['user_id', 'item_id']. Pass user_col=<name> to choose another column.",
        lambda ctx: read_csv(_write(ctx, "log.csv", "user_id,item_id\n1,5\n"), user_col="visitor"),
    ),
    row(
        "csv-missing-file",
        FileNotFoundError,
        lambda ctx: f"interaction file not found: {ctx.tmp / 'absent.csv'}",
        lambda ctx: read_csv(ctx.tmp / "absent.csv"),
    ),
    row(
        "weights-negative",
        ValueError,
        "weight column 'w' has 1 negative values, first -2 at position 1. Implicit feedback weights must be >= 0; drop negative events or shift the scale.",
        lambda ctx: Interactions.from_dataframe(_frame(user_id=[1, 1, 2], item_id=[5, 6, 6], w=[1, -2, 3]), weight_col="w"),
    ),
    row(
        "ids-missing",
        ValueError,
        "column 'user_id' (user_col) has 1 missing ids, first at row 1. Drop or fill those rows before loading.",
        lambda ctx: Interactions.from_dataframe(_frame(user_id=[1, None, 2], item_id=[5, 5, 6])),
    ),
    row(
        "min-weight-removes-everything",
        ValueError,
        "no interactions left: every weight is below min_weight=5 (largest weight 3). Lower min_weight or drop it.",
        lambda ctx: Interactions.from_dataframe(_frame(user_id=[1, 1, 2], item_id=[5, 6, 6], w=[1, 2, 3]), weight_col="w", min_weight=5),
    ),
    row(
        "catalogue-empty",
        ValueError,
        "no interactions: the 3 x 0 matrix has no non-zero entries.",
        lambda ctx: Interactions.from_scipy(sp.csr_matrix((3, 0), dtype=np.float32)),
    ),
    # ---------------------------------------------------------------- splits
    row(
        "split-without-timestamps",
        ValueError,
        "the temporal split needs timestamps, but these interactions have none. Load them with timestamp_col=<column>, or use the 'random' protocol (random_split), which needs no times.",
        lambda ctx: split_interactions(Interactions.from_dataframe(_frame(user_id=[1, 1], item_id=[5, 6])), "temporal"),
    ),
    row(
        "split-fraction-one",
        ValueError,
        "test_fraction must be a number between 0 and 1 (exclusive), got 1.0. For example test_fraction=0.2 holds out 20%.",
        lambda ctx: split_interactions(ctx.data, "temporal", test_fraction=1.0),
    ),
    row(
        "split-unknown-protocol",
        ValueError,
        "unknown split protocol 'by-day': expected one of ['temporal', 'leave-one-out', 'random', 'time-cut'].",
        lambda ctx: split_interactions(ctx.data, "by-day"),
    ),
    row(
        "split-parameter-of-other-protocol",
        TypeError,
        "split protocol 'temporal' has no parameter 'seed'. Its parameters are ['test_fraction', 'validation_fraction'].",
        lambda ctx: split_interactions(ctx.data, "temporal", seed=1),
    ),
    row(
        "split-no-user-with-two-interactions",
        ValueError,
        "the temporal split found no test interactions, because no user has 2 or more interactions (3 users, 3 interactions).",
        lambda ctx: split_interactions(Interactions.from_dataframe(_frame(user_id=[1, 2, 3], item_id=[5, 6, 7], t=[1, 2, 3]), timestamp_col="t"), "temporal"),
    ),
    row(
        "user-removed-by-filtering",
        KeyError,
        "unknown user id(s) ['ghost'] (1 of 1 not found). Known user ids are like ['a']; check the id and its type (str).",
        _filtered_user,
    ),
    row(
        "evaluate-no-test-user",
        ValueError,
        "no user to evaluate: none of the selected users has a non-zero test interaction. Check the split and the users argument.",
        lambda ctx: evaluate(MostPopular().fit(ctx.data), ctx.data, ctx.data.with_entries(sp.csr_matrix(ctx.data.matrix.shape, dtype=np.float32), None), k=5),
    ),
    # ---------------------------------------------------------------- training
    row("learning-rate-zero", ValueError, "learning_rate must be a positive number, got 0.0. Values near 0.001 to 0.01 suit Adam.", lambda ctx: TrainConfig(learning_rate=0.0)),
    row(
        "learning-rate-diverges",
        FloatingPointError,
        r"training diverged: the loss is (nan|inf|-inf) at epoch 1, step \d+\. The best weights so far were restored\. Lower the learning rate \(now 1e\+30\)\.",
        _diverging_fit,
        pattern=True,
    ),
    row("epochs-zero", ValueError, "epochs must be a positive integer, got 0.", lambda ctx: TrainConfig(epochs=0)),
    row("temperature-zero", ValueError, "temperature must be > 0, got 0. Values near 0.05 to 0.5 are usual.", lambda ctx: TwoTowerRecommender(temperature=0)),
    row(
        "fit-one-interaction",
        ValueError,
        "training needs at least 2 interactions, got 1.",
        lambda ctx: TwoTowerRecommender(training=_fast_training()).fit(Interactions.from_dataframe(_frame(user_id=[1], item_id=[5]))),
    ),
    row(
        "resume-without-checkpoint-dir",
        ValueError,
        "resume=True needs checkpoint_dir: pass the folder in which the interrupted run wrote its checkpoints.",
        lambda ctx: TwoTowerRecommender(training=_fast_training()).fit(ctx.data, resume=True),
    ),
    row(
        "history-of-other-data",
        ValueError,
        "history has 1 users x 1 items, the model expects 30 x 36. Pass interactions with the id maps the model was trained with, such as a part of the same split.",
        lambda ctx: ctx.model.set_history(Interactions.from_dataframe(_frame(user_id=[1], item_id=[5]))),
    ),
    row("recommend-k-zero", ValueError, "k must be a positive integer no larger than the catalogue size (36 items), got 0.", lambda ctx: ctx.model.recommend("u0-1", 0)),
    row(
        "recommend-unknown-user",
        KeyError,
        "unknown user id(s) ['nobody'] (1 of 1 not found). Known user ids are like ['u0-0', 'u0-1', 'u0-2']; check the id and its type (str).",
        lambda ctx: ctx.model.recommend("nobody", 3),
    ),
    row("recommend-before-fit", RuntimeError, "TwoTowerRecommender is not fitted: call fit(train) first.", lambda ctx: TwoTowerRecommender().recommend("u0-1", 3)),
    row(
        "checkpoint-config-truncated",
        ValueError,
        lambda ctx: f"checkpoint config at {ctx.tmp / 'model' / 'config.json'} is not valid UTF-8 JSON (",
        lambda ctx: load_model(_truncate(Path(shutil.copytree(ctx.run / "model", ctx.tmp / "model")) / "config.json").parent),
    ),
    # ---------------------------------------------------------------- index
    row("index-text-embeddings", TypeError, "embeddings must be numeric, got dtype <U1.", lambda ctx: ItemIndex(np.array([["a", "b"]]), [1])),
    row(
        "index-nan-embeddings",
        ValueError,
        "embeddings contain NaN or infinite float32 values in 1 rows, first row 2. Check the model that produced them, for example for a diverged training run.",
        lambda ctx: ItemIndex(np.where(np.arange(40)[:, None] == 2, np.nan, np.ones((40, 8))), np.arange(40)),
    ),
    row("index-one-dimensional", ValueError, "embeddings must be a 2-D array of shape (n_items, d), got shape (8,).", lambda ctx: ItemIndex(np.ones(8), [1])),
    row(
        "index-empty-catalogue",
        ValueError,
        "cannot build an index over an empty catalogue: embeddings has 0 rows. Pass one row per item.",
        lambda ctx: ItemIndex(np.empty((0, 8), dtype=np.float32), []),
    ),
    row(
        "index-id-count",
        ValueError,
        "item_ids has 49 ids but embeddings has 50 rows. Pass one id per embedding row, in row order.",
        lambda ctx: ItemIndex(np.ones((50, 8), dtype=np.float32), np.arange(49)),
    ),
    row(
        "index-query-dimension",
        ValueError,
        "queries have dimension 5 but the index contains items of dimension 8. Encode queries with the model that produced the item embeddings.",
        lambda ctx: ctx.index.search(np.ones((2, 5), dtype=np.float32), 3),
    ),
    row("index-query-shape", ValueError, "queries must have shape (8,) or (m, 8), got shape (1, 1, 8).", lambda ctx: ctx.index.search(np.ones((1, 1, 8)), 3)),
    row("index-query-dtype", TypeError, "queries must be numeric, got dtype object.", lambda ctx: ctx.index.search(np.array([[None] * 8]), 3)),
    row("index-k-zero", ValueError, "k must be a positive integer no larger than the catalogue size (50 items), got 0.", lambda ctx: ctx.index.search(np.ones(8), 0)),
    row("index-k-above-catalogue", ValueError, "k=51 exceeds the catalogue size (50 items). Pass k <= 50; k=50 ranks every item.", lambda ctx: ctx.index.search(np.ones(8), 51)),
    row(
        "index-exclude-shape",
        ValueError,
        "exclude has shape (3, 50), expected (2, 50): one row per query, one column per indexed item.",
        lambda ctx: ctx.index.search_indices(np.ones((2, 8), dtype=np.float32), 3, sp.csr_matrix((3, 50))),
    ),
    # ---------------------------------------------------------------- export and serving
    row("export-tolerance-zero", ValueError, "tolerance must be a positive number, got 0.", lambda ctx: export_bundle(ctx.model, ctx.tmp / "bundle", tolerance=0)),
    row(
        "export-from-folder-without-model",
        FileNotFoundError,
        lambda ctx: f"saved model not found: {ctx.tmp / 'recommender.json'} does not exist. Pass the folder that TwoTowerRecommender.save or `recx train` wrote;",
        lambda ctx: export_bundle(ctx.tmp, ctx.tmp / "bundle"),
    ),
    row(
        "bundle-missing-file",
        FileNotFoundError,
        lambda ctx: f"bundle file not found: {ctx.tmp / 'bundle' / 'index' / 'index.faiss'} is listed in the manifest but does not exist. The bundle is incomplete; copy it again or export it again.",
        lambda ctx: Retriever.load(_remove(_bundle_copy(ctx) / "index" / "index.faiss").parent.parent),
    ),
    row("retriever-k-zero", ValueError, "k must be a positive integer, got 0. Pass for example k=10.", lambda ctx: Retriever.load(ctx.bundle).recommend("u0-1", 0)),
    row(
        "retriever-unknown-item",
        UnknownIdError,
        "unknown item id 999: the catalogue of 36 items has no such id (int ids, such as [0, 1, 2]). Check the id and its type.",
        lambda ctx: Retriever.load(ctx.bundle).similar_items(999, 3),
    ),
    # ---------------------------------------------------------------- untrusted files
    row(
        "bundle-manifest-truncated",
        BundleError,
        lambda ctx: f"bundle manifest {ctx.tmp / 'bundle' / MANIFEST_FILE} is not valid UTF-8 JSON (",
        lambda ctx: Retriever.load(_truncate(_bundle_copy(ctx) / MANIFEST_FILE).parent),
    ),
    row(
        "bundle-manifest-count-not-integer",
        BundleError,
        lambda ctx: f"invalid bundle manifest {ctx.tmp / 'bundle' / MANIFEST_FILE}: \"n_items\" must be a non-negative integer, got 'abc'. Export the bundle again.",
        lambda ctx: Retriever.load(_edit_manifest(_bundle_copy(ctx), lambda manifest: manifest.update(n_items="abc"))),
    ),
    row(
        "bundle-onnx-forged-with-checksum",
        BundleError,
        lambda ctx: f"invalid bundle {ctx.tmp / 'bundle'}: onnxruntime cannot load user_tower.onnx (",
        lambda ctx: Retriever.load(_forged_onnx(ctx)),
    ),
    row(
        "bundle-array-holds-pickle",
        BundleError,
        lambda ctx: f"invalid bundle {ctx.tmp / 'bundle'}: its arrays could not be read as plain numeric .npy/.npz data (Object arrays cannot be loaded when allow_pickle=False). recx never unpickles bundle files;",
        lambda ctx: Retriever.load(_pickled_embeddings(ctx)),
    ),
    row(
        "bundle-unlisted-file-links-outside",
        BundleError,
        lambda ctx: f"invalid bundle manifest {ctx.tmp / 'bundle' / MANIFEST_FILE}: required files ['index/items.json'] are not listed. Export the bundle again.",
        lambda ctx: Retriever.load(_unlisted_linked_index_file(ctx)),
    ),
    row(
        "bundle-index-folder-links-outside",
        BundleError,
        lambda ctx: f"unsafe file path 'index/index.faiss' in the manifest of bundle {ctx.tmp / 'bundle'}: it resolves to {(ctx.tmp / 'outside-index' / 'index.faiss').resolve()}, outside the bundle folder.",
        lambda ctx: Retriever.load(_linked_index_folder(ctx)),
    ),
    # ---------------------------------------------------------------- command line
    row(
        "cli-missing-data-file",
        CommandFailed,
        lambda ctx: f"recx train: error: interaction file not found: {ctx.tmp / 'absent.csv'}",
        lambda ctx: cli("train", "--dataset", "csv", "--data-path", str(ctx.tmp / "absent.csv"), "--output", str(ctx.tmp / "run"), "-q"),
    ),
    row(
        "cli-resume-without-output",
        CommandFailed,
        "recx train: error: --resume needs --output: pass the run folder of the interrupted run, for example --output runs/first --resume.",
        lambda ctx: cli("train", "--resume", "-q"),
    ),
    row(
        "cli-interrupted-run-without-resume",
        CommandFailed,
        lambda ctx: f"recx train: error: output folder {ctx.tmp / 'interrupted'} contains an interrupted run (a checkpoint/ folder but no run.json). Pass --resume to continue it from its last epoch, or choose another --output.",
        lambda ctx: cli("train", "--output", str(_interrupted_run(ctx)), "--epochs", "1", "-q"),
    ),
    row("cli-epochs-zero", CommandFailed, "recx train: error: argument --epochs: expected a positive integer, got 0", lambda ctx: cli("train", "--epochs", "0")),
    row(
        "cli-config-missing",
        CommandFailed,
        lambda ctx: f"recx train: error: config file not found: {ctx.tmp / 'absent.toml'}. Check the path given to --config",
        lambda ctx: cli("train", "--config", str(ctx.tmp / "absent.toml"), "-q"),
    ),
    row("cli-recommend-k-zero", CommandFailed, "recx recommend: error: k must be a positive integer, got 0. Pass -k 10 for ten items.", lambda ctx: cli("recommend", "--run", str(ctx.run), "--user", "u0-1", "-k", "0", "-q")),
    row(
        "cli-recommend-unknown-user",
        CommandFailed,
        lambda ctx: f"recx recommend: error: unknown user id 'nobody': run {ctx.run} has no such user. Known user ids are like ['u0-0', 'u0-1', 'u0-2'].",
        lambda ctx: cli("recommend", "--run", str(ctx.run), "--user", "nobody", "-q"),
    ),
    row(
        "cli-evaluate-not-a-run",
        CommandFailed,
        lambda ctx: f"recx evaluate: error: no recx run at {ctx.tmp}: run.json not found. Pass the --output folder of `recx train`.",
        lambda ctx: cli("evaluate", str(ctx.tmp), "-q"),
    ),
    # transfer
    row(
        "transfer-encoder-missing",
        FileNotFoundError,
        "text encoder not found: 'no-such-encoder' is not a folder. Pass the folder of a sentence-transformers model, or leave the encoder unset for the packaged all-MiniLM-L6-v2. Hub model names are not downloaded.",
        lambda ctx: TextEncoder("no-such-encoder"),
    ),
    row(
        "transfer-items-without-text",
        ValueError,
        "the interactions have no item metadata, so items have no text to embed. Load a dataset with titles (for example MovieLens), or initialise from a vector file instead of text.",
        lambda ctx: TwoTowerRecommender(init="text", training=_fast_training()).fit(ctx.data),
    ),
    row(
        "transfer-dimension-mismatch",
        ValueError,
        lambda ctx: f"the source model's embedding tables have 8 dimensions, the target's 64. Set embedding_dim=8 to initialise from {ctx.run}.",
        lambda ctx: TwoTowerRecommender(init=[RunInit(ctx.run, align="id")], training=_fast_training()).fit(ctx.data),
    ),
    row(
        "transfer-alignment-matches-nothing",
        ValueError,
        "align='id' matched none of the 36 target items to the 36 source items. Check that both catalogues identify items the same way, or pass a key function of (item_id, title).",
        lambda ctx: TwoTowerRecommender(embedding_dim=8, init=[RunInit(ctx.run, align="id")], training=_fast_training()).fit(_shifted_items(ctx.data)),
    ),
    row(
        "transfer-source-of-another-model-type",
        ValueError,
        lambda ctx: f"unknown model type 'ease' in {ctx.tmp / 'ease-run' / 'model' / 'config.json'}: expected 'two_tower'.",
        lambda ctx: TwoTowerRecommender(embedding_dim=8, init=[RunInit(_other_model_type(ctx), align="id")], training=_fast_training()).fit(ctx.data),
    ),
    row(
        "transfer-vector-dimension-mismatch",
        ValueError,
        "the item vectors have 3 dimensions but the model's embedding tables have 8. Set embedding_dim=3, or project the vectors first.",
        lambda ctx: TwoTowerRecommender(embedding_dim=8, init=[VectorInit(ItemVectors(ctx.data.items.ids, np.ones((ctx.data.n_items, 3))))], training=_fast_training()).fit(ctx.data),
    ),
    row(
        "transfer-train-fraction-zero",
        CommandFailed,
        "recx train: error: train_fraction must be in (0, 1], got 0.0. Use 0.25 to keep a quarter of each user's training interactions.",
        lambda ctx: cli("train", "--train-fraction", "0", "-q"),
    ),
    row(
        "transfer-unknown-group",
        ValueError,
        "unknown parameter group 'towers': expected one of ['user_id', 'user_history', 'user_recent', 'user_mlp', 'item_id', 'item_genres', 'item_text', 'item_mlp', 'pretrained'].",
        lambda ctx: FineTuning(freeze=["towers"]),
    ),
]


def _shifted_items(data: Interactions) -> Interactions:
    """The same interactions with every item id moved by 1000, so no id is shared with the saved run."""
    frame = data.to_dataframe()
    frame["item_id"] = frame["item_id"] + 1000
    return Interactions.from_dataframe(frame, timestamp_col="timestamp")


def _other_model_type(ctx: Context) -> Path:
    folder = ctx.tmp / "ease-run"
    shutil.copytree(ctx.run, folder)
    config_file = folder / "model" / "config.json"
    config = json.loads(config_file.read_text())
    config["model_type"] = "ease"
    config_file.write_text(json.dumps(config))
    return folder


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _remove(path: Path) -> Path:
    path.unlink()
    return path


@pytest.fixture(scope="module")
def clustered() -> Interactions:
    """30 users (string ids) in 3 clusters of 12 items, 8 items each, with timestamps."""
    generator = np.random.default_rng(7)
    rows = []
    for cluster in range(3):
        for member in range(10):
            for time, item in enumerate(generator.choice(12, size=8, replace=False) + 12 * cluster):
                rows.append((f"u{cluster}-{member}", int(item), time))
    return Interactions.from_dataframe(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), timestamp_col="timestamp")


@pytest.fixture(scope="module")
def built(clustered: Interactions, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-epoch model on ``clustered``, its saved run folder, its bundle and a 50-item index."""
    model = TwoTowerRecommender(embedding_dim=8, hidden_dims=[16], output_dim=8, training=_fast_training()).fit(clustered)
    folder = tmp_path_factory.mktemp("built")
    model.save(folder / "run")
    export_bundle(model, folder / "bundle")
    index = ItemIndex(np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32), np.arange(50))
    return {"model": model, "run": folder / "run", "bundle": folder / "bundle", "index": index}


@pytest.mark.parametrize(("error", "message", "action", "pattern"), BAD_INPUTS)
def test_bad_input(
    error: type[BaseException],
    message: str | Callable[[Context], str],
    action: Callable[[Context], Any],
    pattern: bool,
    clustered: Interactions,
    built: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The bad input raises the expected error, with a message that names the value and the fix."""
    ctx = Context(tmp=tmp_path, data=clustered, **built)
    text = message(ctx) if callable(message) else message
    with pytest.raises(error, match=text if pattern else re.escape(text)):
        action(ctx)


def test_table_size() -> None:
    """The table covers at least 30 bad inputs, each with a distinct id."""
    names = [case.id for case in BAD_INPUTS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)


# --------------------------------------------------------------------------- documented behaviour, not errors


def test_embedding_wider_than_catalogue(tmp_path: Path) -> None:
    """More embedding dimensions than users or items is allowed: the model trains and ranks every item."""
    data = Interactions.from_dataframe(_frame(user_id=[1, 1, 2, 2, 3], item_id=[5, 6, 5, 7, 6]))
    model = TwoTowerRecommender(embedding_dim=64, hidden_dims=[], output_dim=32, training=_fast_training(epochs=2)).fit(data)
    assert model.model.config.embedding_dim > max(data.n_users, data.n_items)
    ids, scores = model.recommend(1, 1)
    assert ids.tolist() == [7]
    assert np.isfinite(scores).all()


# --------------------------------------------------------------------------- nothing a user loads is unpickled

# Code that would unpickle data: pickle and its relatives, and the numpy and torch loaders with pickle allowed.
_UNPICKLING = re.compile(
    r"^\s*(?:import|from)\s+(?:pickle|cPickle|dill|cloudpickle|shelve|joblib)\b"
    r"|\bpickle\.loads?\("
    r"|\bUnpickler\b"
    r"|\bread_pickle\("
    r"|allow_pickle\s*=\s*True",
    re.MULTILINE,
)
_TORCH_LOAD = re.compile(r"\btorch\.load\(")


def find_unpickling(source: str) -> list[str]:
    """Return the unpickling calls in ``source``: pickle use, allow_pickle=True, and torch.load without weights_only=True."""
    found = [match.group(0).strip() for match in _UNPICKLING.finditer(source)]
    for match in _TORCH_LOAD.finditer(source):
        # The arguments up to the closing bracket of this call.
        depth, end = 1, match.end()
        while end < len(source) and depth:
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        if not re.search(r"weights_only\s*=\s*True", source[match.end() : end]):
            found.append(source[match.start() : end])
    return found


def test_unpickling_detector_can_fail() -> None:
    """The detector flags each kind of unpickling and lets safe calls pass."""
    flagged = [
        "import pickle",
        "from dill import loads",
        "model = pickle.load(stream)",
        "frame = pd.read_pickle(path)",
        "np.load(path, allow_pickle=True)",
        "torch.load(path)",
        "torch.load(\n    path,\n    map_location='cpu',\n)",
        "torch.load(path, weights_only=False)",
    ]
    for source in flagged:
        assert find_unpickling(source), source
    for source in ("np.load(path, allow_pickle=False)", "torch.load(path, weights_only=True)", "# no pickle for anything a user loads", "torch.load(f(x), weights_only=True)"):
        assert not find_unpickling(source), source


def test_package_never_unpickles() -> None:
    """No module of recx unpickles: no pickle, no allow_pickle=True, and torch.load only with weights_only=True."""
    package = Path(recx.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 30
    offenders = {str(path.relative_to(package)): found for path in sources if (found := find_unpickling(path.read_text(encoding="utf-8")))}
    assert offenders == {}
