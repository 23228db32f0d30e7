"""Write a trained two-tower model as a serving bundle (see :mod:`recx.serving.bundle` for the layout)."""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import recx
from recx._io import atomic_path, current_umask, write_json_atomic
from recx.serving.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    CHECK_USERS,
    EMBEDDING_OUTPUT,
    INDEX_FOLDER,
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    MANIFEST_FILE,
    ONNX_TOLERANCE,
    USER_EMBEDDINGS_FILE,
    USER_HISTORY_FILE,
    USER_IDS_FILE,
    USER_TOWER_FILE,
    describe_files,
    is_bundle,
)

logger = logging.getLogger(__name__)

# Users embedded per ONNX call during the check; bounds the (batch, history_length, dim) gather.
_CHECK_BATCH = 128


def export_bundle(
    source: Any,
    output: str | os.PathLike[str],
    *,
    tolerance: float = ONNX_TOLERANCE,
    check_users: int = CHECK_USERS,
) -> Path:
    """Write a serving bundle for a trained model.

    The bundle is written into a temporary folder next to ``output`` and
    renamed into place once complete, so a reader never sees a partial one.
    An existing bundle at ``output`` is replaced. There is a short moment
    during the swap when ``output`` does not exist.

    Parameters
    ----------
    source : TwoTowerRecommender or path-like
        A fitted recommender, or a run folder written by ``recx train`` or
        :meth:`TwoTowerRecommender.save`.
    output : path-like
        Bundle folder to write. It must not exist, be empty, or contain a bundle.
    tolerance : float, default=1e-5
        Largest allowed difference between the ONNX user tower and the
        TorchRec user tower on unit-length embeddings (see :data:`ONNX_TOLERANCE`).
    check_users : int, default=512
        Number of known users compared; all users when there are fewer.
        The longest histories are always among them.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    FileExistsError
        If ``output`` is a file or a non-empty folder that is not a bundle.
    ValueError
        If the ONNX tower differs from the TorchRec tower by more than the tolerance.
    NotImplementedError
        If the user tower reads a feature the bundle cannot reproduce.
    """
    from recx.training import TwoTowerRecommender

    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}.")
    if isinstance(check_users, bool) or not isinstance(check_users, int) or check_users <= 0:
        raise ValueError(f"check_users must be a positive integer, got {check_users!r}.")
    target = Path(output)
    _check_target(target)
    recommender = source if isinstance(source, TwoTowerRecommender) else TwoTowerRecommender.load(source)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        manifest = _write_contents(recommender, staging, tolerance, check_users)
        manifest["files"] = describe_files(staging)
        write_json_atomic(staging / MANIFEST_FILE, manifest)
        # mkdtemp makes an owner-only folder; a bundle is meant to be read by a serving account too.
        for folder in (staging, *(path for path in staging.rglob("*") if path.is_dir())):
            os.chmod(folder, 0o777 & ~current_umask())
        _swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("wrote serving bundle %s: %d users, %d items, ONNX difference %.2g", target, manifest["n_users"], manifest["n_items"], manifest["user_tower"]["check"]["max_abs_difference"])
    return target


def _check_target(target: Path) -> None:
    """Reject an output that would overwrite something other than a bundle."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"bundle output {target} exists and is not a folder. Choose another --output.")
    if target.is_dir() and any(target.iterdir()) and not is_bundle(target):
        raise FileExistsError(f"bundle output folder {target} is not empty and contains no recx serving bundle. Choose an empty or new folder for --output.")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished bundle to ``target``, moving an existing one aside first and deleting it after."""
    if not target.exists():
        os.replace(staging, target)
        return
    # os.replace cannot overwrite a non-empty folder, so the old bundle moves aside first.
    previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    previous.rmdir()
    os.replace(target, previous)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(previous, target)
        raise
    shutil.rmtree(previous)


def _write_contents(recommender: Any, folder: Path, tolerance: float, check_users: int) -> dict[str, Any]:
    """Write every bundle file except the manifest and return the manifest without its "files" entry."""
    from recx.serving import onnx_tower

    model = recommender._require_model()
    history = recommender._require_fitted()
    config = model.config
    index = recommender.index
    # Built first, because it rejects towers with features the bundle cannot reproduce.
    tower = onnx_tower.PaddedUserTower(model.user_tower)

    # Step 1: the index, id maps and titles, in the forms the retriever reads.
    index.save(folder / INDEX_FOLDER)
    history.items.save(folder / ITEM_IDS_FILE)
    history.users.save(folder / USER_IDS_FILE)
    titles = history.item_titles()
    if titles is not None:
        write_json_atomic(folder / ITEM_TITLES_FILE, [str(title) for title in titles.tolist()])

    # Step 2: embeddings from the TorchRec towers, and each user's history as CSR rows.
    user_embeddings = np.ascontiguousarray(recommender.user_embeddings(), dtype=np.float32)
    item_embeddings = np.ascontiguousarray(recommender.item_embeddings(), dtype=np.float32)
    indptr = history.matrix.indptr.astype(np.int64)
    indices = history.matrix.indices.astype(np.int64)
    _save_npy(folder / USER_EMBEDDINGS_FILE, user_embeddings)
    _save_npy(folder / ITEM_EMBEDDINGS_FILE, item_embeddings)
    with atomic_path(folder / USER_HISTORY_FILE) as temporary:
        with open(temporary, "wb") as stream:
            np.savez(stream, indptr=indptr, indices=indices)

    # Step 3: the user tower in ONNX, checked against the TorchRec tower on real users.
    payload = onnx_tower.export_onnx(tower)
    with atomic_path(folder / USER_TOWER_FILE) as temporary:
        temporary.write_bytes(payload)
    absolute_tolerance = tolerance / config.temperature
    checked = _choose_check_users(indptr, check_users)
    difference = _onnx_difference(payload, tower, recommender.features, checked, user_embeddings)
    if difference["max_abs_difference"] > absolute_tolerance:
        raise ValueError(
            f"the ONNX user tower differs from the TorchRec user tower by {difference['max_abs_difference']:.3g} on user index {difference['worst_user']} "
            f"(tolerance {absolute_tolerance:.3g}, that is {tolerance:g} / temperature {config.temperature:g}). No bundle was written. "
            f"Check that the tower contains only the operations PaddedUserTower reproduces (pooled embedding bags, MLP, L2 normalisation)."
        )

    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "recx_version": recx.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.to_dict(),
        "metric": index.metric,
        "dimension": int(item_embeddings.shape[1]),
        "index_kind": index.kind,
        "n_users": int(history.n_users),
        "n_items": int(history.n_items),
        "has_titles": titles is not None,
        "user_tower": {
            "file": USER_TOWER_FILE,
            "opset": onnx_tower.ONNX_OPSET,
            "inputs": tower.input_specs(),
            "outputs": onnx_tower.output_specs(config.output_dim),
            "check": {
                "users": int(len(checked)),
                "max_abs_difference": difference["max_abs_difference"],
                "tolerance": absolute_tolerance,
            },
        },
    }


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, array, allow_pickle=False)


def _choose_check_users(indptr: np.ndarray, limit: int) -> np.ndarray:
    """Return up to ``limit`` user indices: the longest histories, one empty one if any, and a seeded sample of the rest."""
    n_users = len(indptr) - 1
    if n_users <= limit:
        return np.arange(n_users, dtype=np.int64)
    lengths = np.diff(indptr)
    # Long histories stress the padded pooling most, so a quarter of the check goes to them.
    chosen = set(np.argsort(-lengths, kind="stable")[: max(1, limit // 4)].tolist())
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        chosen.add(int(empty[0]))
    rest = np.setdiff1d(np.arange(n_users), np.fromiter(chosen, dtype=np.int64))
    generator = np.random.default_rng(0)
    chosen.update(generator.choice(rest, size=min(len(rest), limit - len(chosen)), replace=False).tolist())
    return np.sort(np.fromiter(chosen, dtype=np.int64))


def _onnx_difference(payload: bytes, tower: Any, features: Any, users: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Run the exported ONNX tower with onnxruntime on ``users`` and compare with their TorchRec embeddings.

    The ONNX inputs are built from the same TorchRec input (``features.user_features``)
    that produced ``expected``, so both towers see the same bags.
    """
    import onnxruntime

    from recx.serving import onnx_tower

    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    worst_difference, worst_user = 0.0, -1
    for start in range(0, len(users), _CHECK_BATCH):
        batch = users[start : start + _CHECK_BATCH]
        feeds = onnx_tower.padded_inputs(tower, features.user_features(batch))
        embeddings = session.run([EMBEDDING_OUTPUT], feeds)[0]
        per_user = np.abs(embeddings - expected[batch]).max(axis=1)
        # A NaN difference must fail the check, and NaN compares false with everything.
        per_user = np.where(np.isfinite(per_user), per_user, np.inf)
        if per_user.max() > worst_difference:
            worst_difference, worst_user = float(per_user.max()), int(batch[int(np.argmax(per_user))])
    return {"max_abs_difference": worst_difference, "worst_user": worst_user}
