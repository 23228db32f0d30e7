"""The user tower as a plain-torch module, exported to ONNX for serving.

The trained :class:`~recx.models.towers.UserTower` reads TorchRec
``KeyedJaggedTensor`` inputs, which neither ONNX nor a serving process
without TorchRec can use. :class:`PaddedUserTower` computes the same
function from the same weights on a padded batch instead:

- ``history`` (B, L) int64: item indices of each user's history, padded
  with any valid index (0) beyond the user's length;
- ``history_mask`` (B, L) float32: 1 for real entries, 0 for padding;
- ``user_index`` (B,) int64: user indices, only when the model reads user ids.

The output ``user_embedding`` (B, O) float32 has norm ``1 / temperature``,
like the TorchRec tower. This module imports torch and is used only when
exporting; the serving side runs the ONNX file with onnxruntime.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recx.models.towers import USER_HISTORY, USER_ID, UserTower

#: ONNX names of the tower's inputs and output.
HISTORY_INPUT = "history"
MASK_INPUT = "history_mask"
USER_INPUT = "user_index"
EMBEDDING_OUTPUT = "user_embedding"

#: ONNX operator set of the exported graph; onnxruntime 1.32 runs it.
ONNX_OPSET = 17


class PaddedUserTower(nn.Module):
    """User tower over padded history batches, with the weights of a trained :class:`UserTower`.

    Mean pooling is a masked sum divided by the number of real entries, which
    is what TorchRec's mean-pooled ``EmbeddingBagCollection`` computes. An
    empty history (all-zero mask) pools to zeros, as an empty TorchRec bag does.

    Parameters
    ----------
    tower : UserTower
        The trained tower; its tables and MLP are copied, not shared.
    """

    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        bags = tower.embeddings.embedding_bags
        self.feature_names = list(tower.feature_names)
        self.uses_user_id = USER_ID in self.feature_names
        self.uses_history = USER_HISTORY in self.feature_names
        # Table names equal feature names (see recx.models.towers.UserTower).
        self.user_table = nn.Parameter(bags[USER_ID].weight.detach().clone().cpu(), requires_grad=False) if self.uses_user_id else None
        self.history_table = nn.Parameter(bags[USER_HISTORY].weight.detach().clone().cpu(), requires_grad=False) if self.uses_history else None
        self.mlp = copy.deepcopy(tower.mlp).cpu().eval()
        self.inverse_temperature = float(tower.inverse_temperature)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Embed users; ``inputs`` are the tensors named by :func:`input_names`, in that order."""
        named = dict(zip(input_names(self), inputs))
        pooled: list[torch.Tensor] = []
        for name in self.feature_names:
            if name == USER_ID:
                pooled.append(F.embedding(named[USER_INPUT], self.user_table))
            else:
                mask = named[MASK_INPUT]
                rows = F.embedding(named[HISTORY_INPUT], self.history_table)
                summed = (rows * mask.unsqueeze(-1)).sum(dim=1)
                counts = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
                pooled.append(summed / counts)
        hidden = self.mlp(torch.cat(pooled, dim=1))
        return F.normalize(hidden, dim=1) * self.inverse_temperature


def input_names(tower: PaddedUserTower) -> list[str]:
    """Return the ONNX input names ``tower`` takes, in call order."""
    names = []
    if tower.uses_history:
        names += [HISTORY_INPUT, MASK_INPUT]
    if tower.uses_user_id:
        names.append(USER_INPUT)
    return names


def input_specs(tower: PaddedUserTower) -> list[dict[str, Any]]:
    """Describe the ONNX inputs for the bundle manifest: name, dtype and shape (symbolic axes as strings)."""
    specs = []
    if tower.uses_history:
        specs.append({"name": HISTORY_INPUT, "dtype": "int64", "shape": ["batch", "history_length"]})
        specs.append({"name": MASK_INPUT, "dtype": "float32", "shape": ["batch", "history_length"]})
    if tower.uses_user_id:
        specs.append({"name": USER_INPUT, "dtype": "int64", "shape": ["batch"]})
    return specs


def output_specs(output_dim: int) -> list[dict[str, Any]]:
    """Describe the ONNX output for the bundle manifest."""
    return [{"name": EMBEDDING_OUTPUT, "dtype": "float32", "shape": ["batch", output_dim]}]


def pad_histories(indptr: np.ndarray, indices: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Build padded ``history`` and ``history_mask`` arrays for CSR rows ``users``.

    Returns
    -------
    history : np.ndarray of shape (B, L), int64
        ``L`` is the longest history of the batch, at least 1 so that the
        ONNX graph never sees a zero-length axis.
    mask : np.ndarray of shape (B, L), float32
    """
    lengths = (indptr[users + 1] - indptr[users]).astype(np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    history = np.zeros((len(users), width), dtype=np.int64)
    mask = np.zeros((len(users), width), dtype=np.float32)
    for row, (user, length) in enumerate(zip(users.tolist(), lengths.tolist())):
        start = int(indptr[user])
        history[row, :length] = indices[start : start + length]
        mask[row, :length] = 1.0
    return history, mask


def export_onnx(tower: PaddedUserTower) -> bytes:
    """Export ``tower`` to ONNX with dynamic batch and history length axes and return the file's bytes.

    Uses torch's TorchScript-based exporter (``dynamo=False``), which needs
    no onnxscript.
    """
    names = input_names(tower)
    example: list[torch.Tensor] = []
    dynamic_axes: dict[str, dict[int, str]] = {EMBEDDING_OUTPUT: {0: "batch"}}
    if tower.uses_history:
        # Two rows of different lengths, so that tracing sees a real mask.
        example += [torch.tensor([[0, 0, 0], [0, 0, 0]], dtype=torch.int64), torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.float32)]
        dynamic_axes[HISTORY_INPUT] = {0: "batch", 1: "history_length"}
        dynamic_axes[MASK_INPUT] = {0: "batch", 1: "history_length"}
    if tower.uses_user_id:
        example.append(torch.tensor([0, 0], dtype=torch.int64))
        dynamic_axes[USER_INPUT] = {0: "batch"}
    buffer = io.BytesIO()
    tower.eval()
    with torch.no_grad():
        torch.onnx.export(
            tower,
            tuple(example),
            buffer,
            input_names=names,
            output_names=[EMBEDDING_OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()
