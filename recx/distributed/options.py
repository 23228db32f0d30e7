"""Options of sharded training, importable without torch (the command line reads them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Sharding types a user can choose, mapped to TorchRec's names (None lets the planner choose).
SHARDING_TYPES: dict[str, str | None] = {
    "auto": None,
    "table-wise": "table_wise",
    "column-wise": "column_wise",
    "row-wise": "row_wise",
    "data-parallel": "data_parallel",
}

#: Optimizers of the fused (non-data-parallel) tables. "same" follows TrainConfig.optimizer.
EMBEDDING_OPTIMIZERS: tuple[str, ...] = ("same", "adagrad", "rowwise-adagrad", "sgd", "adam")

#: Optimizers that FBGEMM's fused kernels implement, per device type (fbgemm-gpu 1.8).
FUSED_OPTIMIZERS_BY_DEVICE: dict[str, tuple[str, ...]] = {
    "cpu": ("adagrad", "rowwise-adagrad", "sgd"),
    "cuda": ("adagrad", "rowwise-adagrad", "sgd", "adam"),
}


@dataclass
class ShardingConfig:
    """Sharding type and table optimizer of a sharded run.

    Attributes
    ----------
    sharding : {"auto", "table-wise", "column-wise", "row-wise", "data-parallel"}, default="auto"
        How every embedding table is sharded; "auto" lets TorchRec's planner choose per table.
    embedding_optimizer : {"same", "adagrad", "rowwise-adagrad", "sgd", "adam"}, default="same"
        Fused optimizer of the sharded tables; "same" uses
        ``TrainConfig.optimizer``. Data-parallel tables always use ``TrainConfig.optimizer``.
    """

    sharding: str = "auto"
    embedding_optimizer: str = "same"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid option."""
        if self.sharding not in SHARDING_TYPES:
            raise ValueError(f"invalid sharding {self.sharding!r}: expected one of {list(SHARDING_TYPES)}.")
        if self.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
            raise ValueError(f"invalid embedding optimizer {self.embedding_optimizer!r}: expected one of {list(EMBEDDING_OPTIMIZERS)}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-ready dict."""
        return asdict(self)


def resolve_embedding_optimizer(optimizer: str, momentum: float, sharding: ShardingConfig, device_type: str) -> str:
    """Return the fused optimizer of the sharded tables, or raise naming the alternatives.

    Parameters
    ----------
    optimizer, momentum
        ``TrainConfig.optimizer`` and ``TrainConfig.momentum``.
    sharding : ShardingConfig
    device_type : {"cpu", "cuda"}

    Raises
    ------
    ValueError
        If FBGEMM has no fused kernel of that optimizer on this device, or if
        "same" resolves to SGD with momentum (the fused SGD has none).
    """
    name = optimizer if sharding.embedding_optimizer == "same" else sharding.embedding_optimizer
    supported = FUSED_OPTIMIZERS_BY_DEVICE.get(device_type, FUSED_OPTIMIZERS_BY_DEVICE["cpu"])
    if name not in supported:
        raise ValueError(
            f"sharded embedding tables cannot use the {name!r} optimizer on {device_type}: FBGEMM's fused {device_type} kernels implement {list(supported)}. "
            f"Pass --embedding-optimizer rowwise-adagrad (or adagrad) to update the tables with it while the dense layers keep {optimizer!r}, "
            f"or --sharding data-parallel to replicate the tables and update them with {optimizer!r}."
        )
    if name == "sgd" and sharding.embedding_optimizer == "same" and momentum:
        raise ValueError(
            f"sharded embedding tables update with FBGEMM's fused SGD, which has no momentum, but momentum is {momentum}. "
            f"Set momentum to 0, pass --embedding-optimizer sgd to accept SGD without momentum for the tables, or choose --embedding-optimizer adagrad."
        )
    return name
