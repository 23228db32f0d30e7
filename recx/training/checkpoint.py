"""Model checkpoints: safetensors weights plus a JSON config, written atomically."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import recx
from recx._io import atomic_path, read_json, write_json_atomic
from recx.models.config import TwoTowerConfig
from recx.models.two_tower import TwoTowerModel

#: Version of the checkpoint layout; loading refuses any other.
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(directory: str | os.PathLike[str], model: TwoTowerModel, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``directory`` as ``model.safetensors`` and ``config.json``.

    Each file is written to a temporary name and renamed, weights first, so
    a crash leaves either the previous checkpoint or the new one. The config
    records the weights' sha256, so a config paired with other weights (for
    example after a crash between the two renames) is detected at load time.

    Returns the checkpoint folder.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors rejects tensors that share memory or are not contiguous.
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary))
        checksum = _sha256(temporary)
    config = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "recx_version": recx.__version__,
        "model_type": "two_tower",
        "model": model.config.to_dict(),
        "weights_sha256": checksum,
        "tensors": {name: list(tensor.shape) for name, tensor in tensors.items()},
        "extra": extra or {},
    }
    write_json_atomic(folder / CONFIG_FILE, config)
    return folder


def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint folder."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {folder} is not a folder. Pass the folder that save_model or `recx train` wrote.")
    config = read_json(folder / CONFIG_FILE, what="checkpoint config")
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"unsupported checkpoint format version {version!r} in {folder / CONFIG_FILE}: this recx ({recx.__version__}) "
            f"reads version {CHECKPOINT_FORMAT_VERSION}. Load it with the recx version that wrote it ({config.get('recx_version', 'unknown') if isinstance(config, dict) else 'unknown'}) or retrain."
        )
    if config.get("model_type") != "two_tower":
        raise ValueError(f"unknown model type {config.get('model_type')!r} in {folder / CONFIG_FILE}: expected 'two_tower'.")
    return config


def load_model(directory: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> TwoTowerModel:
    """Rebuild a :class:`TwoTowerModel` from a checkpoint folder.

    Raises
    ------
    FileNotFoundError
        If the folder, its config or its weights are missing.
    ValueError
        On an unknown format version, weights that do not match the config's
        checksum, or tensors whose names or shapes differ from the model the
        config describes.
    """
    folder = Path(directory)
    config = read_checkpoint_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {weights} does not exist.")
    if _sha256(weights) != config.get("weights_sha256"):
        raise ValueError(f"checkpoint weights {weights} do not match the checksum in {folder / CONFIG_FILE}: the file is corrupt or from another checkpoint. Save the model again.")

    model = TwoTowerModel(TwoTowerConfig.from_dict(config["model"]), device=torch.device(device))
    try:
        tensors = load_file(str(weights), device=str(device))
    except SafetensorError as error:
        raise ValueError(f"checkpoint weights {weights} could not be read ({error}).") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint {folder} does not match its config: missing tensors {missing}, unexpected tensors {unexpected}.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, but the config describes {tuple(expected[name].shape)}. "
                f"The weights and config.json come from different models."
            )
    model.load_state_dict(tensors)
    return model
