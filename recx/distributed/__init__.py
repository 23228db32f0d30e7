"""Sharded training on TorchRec: process groups, sharding plans, the sharded trainer and the torchrun launcher.

Names are imported on first use, so reading the options (as the command line
does) does not import torch and TorchRec.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "EMBEDDING_OPTIMIZERS": "recx.distributed.options",
    "SHARDING_TYPES": "recx.distributed.options",
    "ShardingConfig": "recx.distributed.options",
    "DistributedContext": "recx.distributed.context",
    "close_distributed": "recx.distributed.context",
    "init_distributed": "recx.distributed.context",
    "init_single_process": "recx.distributed.context",
    "gather_full_state_dict": "recx.distributed.state",
    "load_full_state_dict": "recx.distributed.state",
    "ShardedTrainer": "recx.distributed.trainer",
    "StoreFeatureBuilder": "recx.distributed.features",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recx.distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
