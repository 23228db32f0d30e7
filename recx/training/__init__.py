"""Training: the loop, its options, checkpoints and the user-facing two-tower recommender."""

from recx.training.checkpoint import CHECKPOINT_FORMAT_VERSION, load_model, save_model
from recx.training.config import OPTIMIZERS, TrainConfig
from recx.training.recommender import TwoTowerRecommender
from recx.training.trainer import EpochRecord, Trainer, TrainingHistory, resolve_device, seed_everything

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "OPTIMIZERS",
    "EpochRecord",
    "Trainer",
    "TrainConfig",
    "TrainingHistory",
    "TwoTowerRecommender",
    "load_model",
    "resolve_device",
    "save_model",
    "seed_everything",
]
