"""The user tower as a plain-torch module, exported to ONNX for serving.

The trained :class:`~recx.models.towers.UserTower` reads TorchRec
``KeyedJaggedTensor`` inputs, which neither ONNX nor a serving process
without TorchRec can use. :class:`PaddedUserTower` computes the same
function from the same weights on padded batches instead. Its inputs, in
the order of the tower's features (``B`` users, ``L`` and ``R`` padded bag
lengths):

- ``user_index`` (B,) int64: user indices, when the model reads user ids;
- ``history`` (B, L) int64 and ``history_mask`` (B, L) float32: the items of
  each user's history bag, padded with index 0 where the mask is 0;
- ``recent`` (B, R) int64 and ``recent_mask`` (B, R) float32: the user's
  latest items, when the model has a recent-items bag.

The output ``user_embedding`` (B, O) float32 has norm ``1 / temperature``,
like the TorchRec tower. This module imports torch and is used only when
exporting; the serving side runs the ONNX file with onnxruntime.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor, PoolingType

from recx.models.towers import UserTower
from recx.serving.bundle import EMBEDDING_OUTPUT, FEATURE_INPUTS

__all__ = ["ONNX_OPSET", "PaddedUserTower", "export_onnx", "padded_inputs"]

#: ONNX operator set of the exported graph; onnxruntime 1.32 runs it.
ONNX_OPSET = 17


class PaddedUserTower(nn.Module):
    """User tower over padded batches, with the weights of a trained :class:`UserTower`.

    A mean-pooled bag is a masked sum divided by the number of real entries,
    which is what TorchRec's mean-pooled ``EmbeddingBagCollection`` computes.
    An empty bag (all-zero mask) pools to zeros, as an empty TorchRec bag does.

    Parameters
    ----------
    tower : UserTower
        The trained tower; its tables and MLP are copied, not shared.

    Attributes
    ----------
    input_names : list of str
        ONNX input names, in call order.

    Raises
    ------
    NotImplementedError
        If the tower reads a feature that :data:`recx.serving.bundle.FEATURE_INPUTS` does not list.
    """

    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        unsupported = [name for name in tower.feature_names if name not in FEATURE_INPUTS]
        if unsupported:
            raise NotImplementedError(f"the user tower reads features {unsupported}, which the serving bundle cannot reproduce; it supports {list(FEATURE_INPUTS)}. Export a model trained without them.")
        pooling = {feature: config.pooling for config in tower.embeddings.embedding_bag_configs() for feature in config.feature_names}
        tables = {feature: config.name for config in tower.embeddings.embedding_bag_configs() for feature in config.feature_names}
        bags = tower.embeddings.embedding_bags

        self.feature_names = list(tower.feature_names)
        self.input_names: list[str] = []
        self._is_mean: list[bool] = []
        for position, feature in enumerate(self.feature_names):
            index_input, mask_input = FEATURE_INPUTS[feature]
            self.input_names += [index_input] if mask_input is None else [index_input, mask_input]
            self._is_mean.append(pooling[feature] == PoolingType.MEAN)
            self.register_buffer(f"table_{position}", bags[tables[feature]].weight.detach().clone().cpu())
        self.mlp = copy.deepcopy(tower.mlp).cpu().eval()
        self.inverse_temperature = float(tower.inverse_temperature)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Embed users; ``inputs`` are the tensors named by :attr:`input_names`, in that order."""
        named = dict(zip(self.input_names, inputs))
        pooled: list[torch.Tensor] = []
        for position, feature in enumerate(self.feature_names):
            table = getattr(self, f"table_{position}")
            index_input, mask_input = FEATURE_INPUTS[feature]
            if mask_input is None:
                # One id per user: the sum over a bag of one row is that row.
                pooled.append(F.embedding(named[index_input], table))
                continue
            mask = named[mask_input]
            summed = (F.embedding(named[index_input], table) * mask.unsqueeze(-1)).sum(dim=1)
            pooled.append(summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0) if self._is_mean[position] else summed)
        hidden = self.mlp(torch.cat(pooled, dim=1))
        return F.normalize(hidden, dim=1) * self.inverse_temperature

    def input_specs(self) -> list[dict[str, Any]]:
        """Describe the ONNX inputs for the bundle manifest: name, dtype and shape, with symbolic axes as strings."""
        specs = []
        for feature in self.feature_names:
            index_input, mask_input = FEATURE_INPUTS[feature]
            if mask_input is None:
                specs.append({"name": index_input, "dtype": "int64", "shape": ["batch"]})
            else:
                axis = f"{index_input}_length"
                specs.append({"name": index_input, "dtype": "int64", "shape": ["batch", axis]})
                specs.append({"name": mask_input, "dtype": "float32", "shape": ["batch", axis]})
        return specs


def output_specs(output_dim: int) -> list[dict[str, Any]]:
    """Describe the ONNX output for the bundle manifest."""
    return [{"name": EMBEDDING_OUTPUT, "dtype": "float32", "shape": ["batch", output_dim]}]


def padded_inputs(tower: PaddedUserTower, features: KeyedJaggedTensor) -> dict[str, np.ndarray]:
    """Turn the TorchRec input of a batch of users into the ONNX inputs of ``tower``.

    Bags are padded to the longest bag of the batch, and to at least 1, so
    that the ONNX graph never receives a zero-length axis.
    """
    jagged = features.to_dict()
    feeds: dict[str, np.ndarray] = {}
    for feature in tower.feature_names:
        index_input, mask_input = FEATURE_INPUTS[feature]
        values = jagged[feature].values().cpu().numpy().astype(np.int64)
        lengths = jagged[feature].lengths().cpu().numpy().astype(np.int64)
        if mask_input is None:
            feeds[index_input] = values
            continue
        width = max(int(lengths.max(initial=0)), 1)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        columns = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        indices = np.zeros((len(lengths), width), dtype=np.int64)
        mask = np.zeros((len(lengths), width), dtype=np.float32)
        indices[rows, columns] = values
        mask[rows, columns] = 1.0
        feeds[index_input] = indices
        feeds[mask_input] = mask
    return feeds


def export_onnx(tower: PaddedUserTower) -> bytes:
    """Export ``tower`` to ONNX with dynamic batch and bag length axes and return the file's bytes.

    Uses torch's TorchScript-based exporter (``dynamo=False``), which needs
    no onnxscript.
    """
    example: list[torch.Tensor] = []
    dynamic_axes: dict[str, dict[int, str]] = {EMBEDDING_OUTPUT: {0: "batch"}}
    for spec in tower.input_specs():
        dynamic_axes[spec["name"]] = {axis: name for axis, name in enumerate(spec["shape"])}
        if spec["shape"] == ["batch"]:
            example.append(torch.tensor([0, 0], dtype=torch.int64))
        elif spec["dtype"] == "int64":
            example.append(torch.zeros((2, 3), dtype=torch.int64))
        else:
            # Two rows of different lengths, so that the traced graph depends on the mask.
            example.append(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    buffer = io.BytesIO()
    tower.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 flags the TorchScript-based exporter as legacy; the dynamo exporter needs onnxscript, which recx does not install.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            tower,
            tuple(example),
            buffer,
            input_names=tower.input_names,
            output_names=[EMBEDDING_OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()
