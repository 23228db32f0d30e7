"""Epoch checkpoints from which an interrupted training run continues exactly.

:class:`EpochCheckpoints` writes, after every finished epoch, everything the
training loop needs to go on as if it had never stopped: the model weights,
the optimiser state, the best weights so far, the training history, the
epochs without validation gain, and the state of the numpy ``Generator``
and of torch's random number generators. A folder looks like this::

    CHECKPOINT/
      latest.json              {"format_version", "epoch", "folder"}: the complete epoch folder to resume from
      epoch-0003/
        state.safetensors      tensors: "model.*" weights, "best.*" best weights (absent when the best epoch
                               is this one), "optimizer.<param>.<key>" optimiser buffers, "rng.torch",
                               "rng.cuda.<device>" random number generator states
        state.json             epoch, history, epochs without gain, numpy Generator state, optimiser settings,
                               fingerprint of the model, options and data, sha256 of state.safetensors

Crash safety. Each file is written to a temporary name, flushed and renamed
(:func:`recx._io.atomic_path`). An epoch folder is complete before
``latest.json`` is replaced to name it, and older epoch folders are removed
only after that. A process killed at any moment therefore leaves
``latest.json`` naming a complete folder, or no ``latest.json`` at all
before the first epoch ends. Loading checks the format version, the sha256
of the tensors, and that every name ``latest.json`` gives stays inside the
checkpoint folder. Nothing is unpickled: tensors are safetensors and the
rest is JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import recx
from recx._io import atomic_path, read_json, write_json_atomic
from recx.data.interactions import Interactions

logger = logging.getLogger(__name__)

__all__ = [
    "RESUMABLE_CHANGES",
    "TRAINING_STATE_FORMAT_VERSION",
    "EpochCheckpoints",
    "TrainingState",
    "interactions_digest",
    "read_training_state",
    "restore_generator",
    "restore_optimizer",
]

#: Version of the epoch checkpoint layout; loading rejects any other.
TRAINING_STATE_FORMAT_VERSION = 1

LATEST_FILE = "latest.json"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"

#: Training options that may differ between the interrupted run and its
#: resumption: neither changes what an epoch computes.
RESUMABLE_CHANGES: tuple[str, ...] = ("epochs", "show_progress")

_EPOCH_FOLDER = re.compile(r"epoch-(\d{4,})")

# A reader may find the folder latest.json named already replaced by a newer
# epoch; it reads latest.json again this many times before giving up.
_READ_ATTEMPTS = 3


@dataclass
class TrainingState:
    """The state of a training run after a finished epoch.

    Attributes
    ----------
    epoch : int
        The last finished epoch (1-based).
    history : dict
        :meth:`TrainingHistory.to_dict` of the epochs so far.
    epochs_without_gain : int
        Epochs since the validation metric last improved.
    model_state : dict of str to torch.Tensor
        The model weights after ``epoch``.
    best_state : dict of str to torch.Tensor
        The weights of the best epoch so far. When that epoch is ``epoch``,
        pass the ``model_state`` object itself, and the weights are stored once.
    optimizer_state : dict
        ``torch.optim.Optimizer.state_dict()`` after ``epoch``.
    generator_state : dict
        ``numpy.random.Generator.bit_generator.state`` after ``epoch``.
    torch_rng_state : torch.Tensor
        ``torch.get_rng_state()``, uint8.
    cuda_rng_states : list of torch.Tensor
        ``torch.cuda.get_rng_state_all()`` when training ran on CUDA, else empty.
        NOTE: exact resumption is tested on CPU only; no GPU run has checked it.
    fingerprint : dict
        What the run was started with (model settings, training options
        without :data:`RESUMABLE_CHANGES`, data digests); resuming requires
        the same fingerprint.
    """

    epoch: int
    history: dict[str, Any]
    epochs_without_gain: int
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    generator_state: dict[str, Any]
    torch_rng_state: torch.Tensor
    cuda_rng_states: list[torch.Tensor]
    fingerprint: dict[str, Any]


def interactions_digest(interactions: Interactions | None) -> str | None:
    """Return the sha256 of an interaction matrix's entries and timestamps (None for None).

    Two runs see the same training data exactly when their digests match.
    """
    if interactions is None:
        return None
    matrix = interactions.matrix
    digest = hashlib.sha256()
    digest.update(np.asarray(matrix.shape, dtype=np.int64).tobytes())
    for array in (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data.astype(np.float32)):
        digest.update(np.ascontiguousarray(array).tobytes())
    if interactions.timestamps is not None:
        digest.update(np.ascontiguousarray(interactions.timestamps, dtype=np.float64).tobytes())
    return digest.hexdigest()


class EpochCheckpoints:
    """Write and restore the per-epoch training state in one checkpoint folder.

    Parameters
    ----------
    directory : path-like
        The checkpoint folder; created on the first save.
    fingerprint : dict
        JSON-ready description of the run (see :attr:`TrainingState.fingerprint`).
        :meth:`load` rejects a checkpoint written with another one.
    """

    def __init__(self, directory: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        # A JSON round trip turns tuples into lists, as they will be when read back.
        self.fingerprint = json.loads(json.dumps(fingerprint))

    # ---------------------------------------------------------------- writing

    def save(self, state: TrainingState) -> Path:
        """Write ``state`` as a new epoch folder, then point ``latest.json`` at it and remove older folders.

        Returns the epoch folder.
        """
        folder = self.directory / f"epoch-{state.epoch:04d}"
        # A folder of this epoch can only be the leftover of a killed save: latest.json never named it.
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

        # Step 1: tensors, then the JSON that records their checksum.
        tensors, optimizer_json = _tensors_of(state)
        with atomic_path(folder / STATE_TENSORS_FILE) as temporary:
            save_file(tensors, str(temporary))
            checksum = _sha256(temporary)
        payload = {
            "format_version": TRAINING_STATE_FORMAT_VERSION,
            "recx_version": recx.__version__,
            "epoch": state.epoch,
            "tensors_sha256": checksum,
            "fingerprint": state.fingerprint,
            "history": state.history,
            "epochs_without_gain": state.epochs_without_gain,
            "best_is_current": state.best_state is state.model_state,
            "generator_state": state.generator_state,
            "optimizer": optimizer_json,
            "cuda_devices": len(state.cuda_rng_states),
        }
        write_json_atomic(folder / STATE_FILE, payload)
        _fsync_folder(folder)

        # Step 2: the commit point. Until this rename, latest.json names the previous epoch.
        write_json_atomic(self.directory / LATEST_FILE, {"format_version": TRAINING_STATE_FORMAT_VERSION, "epoch": state.epoch, "folder": folder.name})
        _fsync_folder(self.directory)

        # Step 3: older epochs are no longer needed.
        for other in self._epoch_folders():
            if other != folder:
                shutil.rmtree(other, ignore_errors=True)
        logger.debug("wrote training checkpoint of epoch %d to %s", state.epoch, folder)
        return folder

    def clear(self) -> None:
        """Remove ``latest.json`` and every epoch folder, so that a new run starts from epoch 1."""
        latest = self.directory / LATEST_FILE
        if latest.exists():
            latest.unlink()
        for folder in self._epoch_folders():
            shutil.rmtree(folder, ignore_errors=True)

    def _epoch_folders(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if path.is_dir() and _EPOCH_FOLDER.fullmatch(path.name))

    # ---------------------------------------------------------------- reading

    def load(self, *, device: torch.device | str = "cpu") -> TrainingState | None:
        """Read the latest complete state, or return None when the folder holds no checkpoint.

        Raises
        ------
        ValueError
            If the checkpoint is damaged (see :func:`read_training_state`) or
            was written by a run with another fingerprint.
        """
        state = read_training_state(self.directory, device=device)
        if state is None:
            return None
        _check_fingerprint(state.fingerprint, self.fingerprint, self.directory)
        return state

    @property
    def latest_epoch(self) -> int | None:
        """The epoch ``latest.json`` names, or None without a checkpoint or when it cannot be read."""
        try:
            pointer = read_json(self.directory / LATEST_FILE, what="checkpoint pointer")
        except (FileNotFoundError, ValueError):
            return None
        epoch = pointer.get("epoch") if isinstance(pointer, dict) else None
        return epoch if isinstance(epoch, int) else None


def read_training_state(directory: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> TrainingState | None:
    """Read the state ``latest.json`` names in a checkpoint folder; None when there is no ``latest.json``.

    Raises
    ------
    ValueError
        If ``latest.json`` or ``state.json`` is not valid JSON of a known
        format version, names a folder outside the checkpoint folder, or the
        tensors do not match the checksum or the recorded layout.
    FileNotFoundError
        If the folder ``latest.json`` names, or one of its files, is missing.
    """
    root = Path(directory)
    latest = root / LATEST_FILE
    for attempt in range(_READ_ATTEMPTS):
        if not latest.is_file():
            return None
        pointer = read_json(latest, what="checkpoint pointer")
        folder = _epoch_folder_of(pointer, root)
        try:
            return _read_epoch_folder(folder, device)
        except FileNotFoundError:
            # A training process may have moved latest.json on and removed this folder meanwhile.
            if attempt + 1 == _READ_ATTEMPTS or read_json(latest, what="checkpoint pointer") == pointer:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


def _epoch_folder_of(pointer: Any, root: Path) -> Path:
    """Return the epoch folder a ``latest.json`` payload names, rejecting anything but ``epoch-NNNN`` inside ``root``."""
    where = root / LATEST_FILE
    if not isinstance(pointer, dict) or pointer.get("format_version") != TRAINING_STATE_FORMAT_VERSION:
        version = pointer.get("format_version") if isinstance(pointer, dict) else None
        raise ValueError(
            f"unsupported checkpoint format version {version!r} in {where}: this recx ({recx.__version__}) reads version "
            f"{TRAINING_STATE_FORMAT_VERSION}. Resume with the recx version that wrote it, or start the run again without resuming."
        )
    name = pointer.get("folder")
    # Only a plain epoch-NNNN name is accepted, so the pointer cannot lead out of the checkpoint folder.
    if not isinstance(name, str) or not _EPOCH_FOLDER.fullmatch(name):
        raise ValueError(f"invalid checkpoint pointer {where}: folder {name!r} is not an epoch folder name such as 'epoch-0003'. Delete {root} and start the run again.")
    folder = root / name
    if folder.is_symlink():
        raise ValueError(f"invalid checkpoint {folder}: the epoch folder is a symbolic link; checkpoints are read only from real folders inside {root}.")
    return folder


def _read_epoch_folder(folder: Path, device: torch.device | str) -> TrainingState:
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder} is named by {folder.parent / LATEST_FILE} but does not exist. Delete {folder.parent} and start the run again.")
    payload = read_json(folder / STATE_FILE, what="training checkpoint state")
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != TRAINING_STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format version {version!r} in {folder / STATE_FILE}: this recx ({recx.__version__}) reads version {TRAINING_STATE_FORMAT_VERSION}.")
    tensors_path = folder / STATE_TENSORS_FILE
    if not tensors_path.is_file():
        raise FileNotFoundError(f"checkpoint tensors not found: {tensors_path} does not exist. Delete {folder.parent} and start the run again.")
    if _sha256(tensors_path) != payload.get("tensors_sha256"):
        raise ValueError(f"checkpoint tensors {tensors_path} do not match the checksum in {folder / STATE_FILE}: the file is corrupt or from another checkpoint. Delete {folder.parent} and start the run again.")
    try:
        tensors = load_file(str(tensors_path), device=str(device))
    except SafetensorError as error:
        raise ValueError(f"checkpoint tensors {tensors_path} could not be read ({error}).") from error

    try:
        return _state_from(payload, tensors)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"invalid training checkpoint {folder}: {error}. Delete {folder.parent} and start the run again.") from error


# ------------------------------------------------------------------ (de)serialisation


def _tensors_of(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a state into the safetensors dict and the optimiser's JSON part."""
    tensors: dict[str, torch.Tensor] = {}

    def put(name: str, tensor: torch.Tensor) -> None:
        # safetensors rejects tensors that share memory or are not contiguous.
        tensors[name] = tensor.detach().to("cpu").contiguous().clone()

    for name, tensor in state.model_state.items():
        put(f"model.{name}", tensor)
    if state.best_state is not state.model_state:
        for name, tensor in state.best_state.items():
            put(f"best.{name}", tensor)

    optimizer_json: dict[str, Any] = {"param_groups": [], "state": {}}
    for group in state.optimizer_state["param_groups"]:
        optimizer_json["param_groups"].append({key: list(value) if isinstance(value, tuple) else value for key, value in group.items()})
    for parameter, values in state.optimizer_state["state"].items():
        scalars: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                put(f"optimizer.{parameter}.{key}", value)
            else:
                scalars[key] = value
        optimizer_json["state"][str(parameter)] = scalars

    put("rng.torch", state.torch_rng_state)
    for device, rng in enumerate(state.cuda_rng_states):
        put(f"rng.cuda.{device}", rng)
    return tensors, optimizer_json


def _state_from(payload: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainingState:
    """Rebuild a :class:`TrainingState` from ``state.json`` and the loaded tensors."""
    model_state = {name.removeprefix("model."): tensor for name, tensor in tensors.items() if name.startswith("model.")}
    best_state = model_state if payload["best_is_current"] else {name.removeprefix("best."): tensor for name, tensor in tensors.items() if name.startswith("best.")}
    if not model_state or set(best_state) != set(model_state):
        raise ValueError("the model or best weights are missing from the tensors file")

    optimizer_json = payload["optimizer"]
    optimizer_state: dict[int, dict[str, Any]] = {int(parameter): dict(scalars) for parameter, scalars in optimizer_json["state"].items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            parameter, key = name.removeprefix("optimizer.").split(".", 1)
            optimizer_state.setdefault(int(parameter), {})[key] = tensor

    epoch = payload["epoch"]
    if not isinstance(epoch, int) or epoch < 1:
        raise ValueError(f"epoch must be a positive integer, got {epoch!r}")
    return TrainingState(
        epoch=epoch,
        history=payload["history"],
        epochs_without_gain=int(payload["epochs_without_gain"]),
        model_state=model_state,
        best_state=best_state,
        optimizer_state={"state": optimizer_state, "param_groups": optimizer_json["param_groups"]},
        generator_state=payload["generator_state"],
        torch_rng_state=tensors["rng.torch"].to("cpu"),
        cuda_rng_states=[tensors[f"rng.cuda.{device}"].to("cpu") for device in range(int(payload["cuda_devices"]))],
        fingerprint=payload["fingerprint"],
    )


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], where: Path) -> None:
    """Load a saved optimiser state, turning JSON lists back into the tuples torch uses (``betas``)."""
    current_groups = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(current_groups) or any(len(old["params"]) != len(new["params"]) for old, new in zip(groups, current_groups)):
        raise ValueError(
            f"the optimiser in checkpoint {where} has parameter groups of sizes {[len(group['params']) for group in groups]}, "
            f"this run has {[len(group['params']) for group in current_groups]}. Resume with the same model and training policy."
        )
    restored_groups = []
    for group, current in zip(groups, current_groups):
        restored_groups.append({key: tuple(value) if isinstance(current.get(key), tuple) and isinstance(value, list) else value for key, value in group.items()})
    optimizer.load_state_dict({"state": saved["state"], "param_groups": restored_groups})


def restore_generator(state: dict[str, Any], where: Path) -> np.random.Generator:
    """Return a numpy Generator in the saved ``bit_generator.state``."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError(f"invalid training checkpoint {where}: the numpy generator state is not a PCG64 state. Delete {where} and start the run again.")
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    return generator


def _check_fingerprint(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raise ValueError naming every setting in which the checkpoint's run differs from this one."""
    differences = []
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section), current.get(section)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    differences.append(f"{section}.{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}")
        else:
            differences.append(f"{section}: checkpoint {old!r}, now {new!r}")
    if differences:
        shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
        raise ValueError(
            f"cannot resume from checkpoint {where}: it was written by a run with other settings or data ({shown}). "
            f"Resume with the settings of the interrupted run (only {list(RESUMABLE_CHANGES)} may change), or start a new run without resuming."
        )


# ------------------------------------------------------------------ files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames into it) to disk, where the platform allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        # Some file systems and platforms cannot fsync a folder; the renames are still atomic.
        pass
    finally:
        os.close(handle)
