"""The two-tower retrieval model."""

from __future__ import annotations

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from recx.models.config import TwoTowerConfig
from recx.models.towers import ItemTower, UserTower


class TwoTowerModel(nn.Module):
    """A user tower and an item tower whose inner product scores a pair.

    ``score(user, item) = <user_tower(user), item_tower(item)>``, which
    equals ``cos(u, v) / temperature`` because the user tower's output has
    norm ``1 / temperature`` and the item tower's output has norm 1. The same
    inner product is what an inner-product FAISS index serves.

    Parameters
    ----------
    config : TwoTowerConfig
        Table sizes, widths and options.
    device : torch.device or None
        Where parameters are created (CPU when None).
    """

    def __init__(self, config: TwoTowerConfig, device: torch.device | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.user_tower = UserTower(config, device)
        self.item_tower = ItemTower(config, device)

    def forward(self, user_features: KeyedJaggedTensor, item_features: KeyedJaggedTensor) -> torch.Tensor:
        """Return the (B, B) matrix of scores between every user and every item of a batch."""
        return self.user_tower(user_features) @ self.item_tower(item_features).T
