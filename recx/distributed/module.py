"""The two-tower model behind a single forward call, as DistributedModelParallel needs it."""

from __future__ import annotations

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from recx.models.two_tower import TwoTowerModel

#: Prefix of the two-tower weights in the state dict of :class:`TwoTowerForward`.
MODEL_PREFIX = "model."


class TwoTowerForward(nn.Module):
    """Run both towers of a :class:`TwoTowerModel` in one ``forward``.

    DistributedModelParallel wraps the dense layers in DistributedDataParallel,
    which averages their gradients over ranks only for work done inside its
    ``forward``. :meth:`TwoTowerModel.forward` returns the score matrix, while
    the losses need the embeddings themselves, so this wrapper returns those.
    Its state dict contains the model's tensors under the ``model.`` prefix.
    """

    def __init__(self, model: TwoTowerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, user_features: KeyedJaggedTensor, item_features: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return user embeddings of shape (B_u, O) and item embeddings of shape (B_i, O)."""
        return self.model.user_tower(user_features), self.model.item_tower(item_features)
