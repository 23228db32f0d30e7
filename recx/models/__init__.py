"""Two-tower retrieval models over TorchRec embedding tables."""

from recx.models.config import ACTIVATIONS, TwoTowerConfig
from recx.models.features import FeatureBuilder
from recx.models.towers import ITEM_GENRES, ITEM_ID, USER_HISTORY, USER_ID, MLP, ItemTower, UserTower
from recx.models.two_tower import TwoTowerModel

__all__ = [
    "ACTIVATIONS",
    "ITEM_GENRES",
    "ITEM_ID",
    "MLP",
    "USER_HISTORY",
    "USER_ID",
    "FeatureBuilder",
    "ItemTower",
    "TwoTowerConfig",
    "TwoTowerModel",
    "UserTower",
]
