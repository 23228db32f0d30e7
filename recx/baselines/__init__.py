"""Non-neural baselines that follow the :class:`~recx.recommender.Recommender` contract."""

from recx.baselines.bpr import BPRMF
from recx.baselines.ease import EASE
from recx.baselines.ials import IALS
from recx.baselines.item_knn import ItemKNN
from recx.baselines.popularity import MostPopular

__all__ = ["BPRMF", "EASE", "IALS", "ItemKNN", "MostPopular"]
