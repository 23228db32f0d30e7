"""recx: two-tower retrieval on implicit feedback.

The package is organised one concept a module:

- :mod:`recx.data`: id maps, the :class:`~recx.data.Interactions` container,
  dataset readers and split protocols.
- :mod:`recx.models`: user and item towers over TorchRec embedding tables.
- :mod:`recx.losses`: sampled softmax with logQ correction, BPR, BCE.
- :mod:`recx.training`: the training loop, checkpoints, early stopping and
  :class:`~recx.training.TwoTowerRecommender`.
- :mod:`recx.index`: FAISS item indexes that return external ids.
- :mod:`recx.evaluation`: full-ranking metrics and the evaluation protocol.
- :mod:`recx.baselines`: non-neural baselines under the same contract.
- :mod:`recx.pipeline`: the end-to-end job behind ``recx train``.

The names below are importable from ``recx`` directly. They load on first
use, so ``import recx`` (and ``recx --version``) does not import torch.
"""

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# Library code logs through "recx.*" loggers and never configures handlers:
# the application (or the `recx` command line) decides where messages go.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS: dict[str, str] = {
    "IdMap": "recx.data",
    "Interactions": "recx.data",
    "Split": "recx.data",
    "load_dataset": "recx.data",
    "split_interactions": "recx.data",
    "Recommender": "recx.recommender",
    "TwoTowerConfig": "recx.models",
    "TwoTowerModel": "recx.models",
    "TrainConfig": "recx.training",
    "TwoTowerRecommender": "recx.training",
    "ItemIndex": "recx.index",
    "evaluate": "recx.evaluation",
    "format_metrics_table": "recx.evaluation",
    "MostPopular": "recx.baselines",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
