"""Non-neural baselines that follow the :class:`~recx.recommender.Recommender` contract."""

from recx.baselines.popularity import MostPopular

__all__ = ["MostPopular"]
