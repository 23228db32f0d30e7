"""How the embedding tables are split over the ranks: the TorchRec sharding plan and the fused table optimizer.

Sharding types (TorchRec's names in brackets):

- ``table-wise`` (``table_wise``): each table lives whole on one rank.
- ``column-wise`` (``column_wise``): each table's columns are split over ranks.
- ``row-wise`` (``row_wise``): each table's rows are split over ranks.
- ``data-parallel`` (``data_parallel``): every rank has a full copy, and
  gradients are averaged like those of the dense layers.
- ``auto``: TorchRec's planner chooses per table.

The planner of TorchRec 1.8 offers row-wise sharding only on CUDA. On CPU,
recx builds a row-wise plan directly with ``construct_module_sharding_plan``
(the planner is skipped), which TorchRec's CPU kernels run.

Tables that are not data-parallel are updated inside FBGEMM's backward pass
(a fused optimizer), only on the rows a batch touches. FBGEMM's CPU kernels
implement Adagrad, row-wise Adagrad and SGD without momentum. Its CUDA
kernels also implement Adam. The dense layers and data-parallel tables use
the torch optimizer of :class:`~recx.training.TrainConfig`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec import EmbeddingBagCollection
from torchrec import optim as torchrec_optim
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise
from torchrec.distributed.types import ShardingPlan

from recx.distributed.context import DistributedContext
from recx.distributed.options import SHARDING_TYPES, ShardingConfig, resolve_embedding_optimizer
from recx.training.config import TrainConfig

logger = logging.getLogger(__name__)

_FUSED_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adagrad": torchrec_optim.Adagrad,
    "rowwise-adagrad": torchrec_optim.RowWiseAdagrad,
    "sgd": torchrec_optim.SGD,
    "adam": torchrec_optim.Adam,
}


def embedding_collections(module: nn.Module) -> dict[str, EmbeddingBagCollection]:
    """Return every EmbeddingBagCollection of ``module`` by its qualified name."""
    return {name: child for name, child in module.named_modules() if isinstance(child, EmbeddingBagCollection)}


def fused_optimizer_arguments(name: str, training: TrainConfig) -> dict[str, Any]:
    """Return FBGEMM keyword arguments that make the fused update match torch's optimizer of the same name.

    ``eps`` follows torch's defaults (1e-10 for Adagrad, 1e-8 for Adam), not
    FBGEMM's, so that one step of a sharded table equals one step of the
    single-process model.
    """
    arguments: dict[str, Any] = {"lr": training.learning_rate}
    if name in ("adagrad", "rowwise-adagrad"):
        arguments["eps"] = 1e-10
    if name == "adam":
        arguments.update(eps=1e-8, beta1=0.9, beta2=0.999)
    if training.weight_decay:
        from fbgemm_gpu.split_embedding_configs import WeightDecayMode

        # Coupled L2 decay as in torch's optimizers, applied to the rows a batch touches.
        arguments.update(weight_decay=training.weight_decay, weight_decay_mode=WeightDecayMode.L2)
    return arguments


def build_plan(module: nn.Module, sharding: ShardingConfig, context: DistributedContext, sharders: list[EmbeddingBagCollectionSharder]) -> ShardingPlan:
    """Return the sharding plan of every table of ``module``; a collective call on all ranks."""
    collections = embedding_collections(module)
    if not collections:
        raise ValueError(f"{type(module).__name__} has no EmbeddingBagCollection to shard.")
    sharding_type = SHARDING_TYPES[sharding.sharding]
    device_type = context.device.type

    if sharding_type == "row_wise" and device_type == "cpu":
        # TorchRec's planner offers row-wise only on CUDA, but its CPU kernels
        # run a row-wise plan: build it directly, rows split evenly over ranks.
        plan = ShardingPlan(
            {
                path: construct_module_sharding_plan(
                    collection,
                    {config.name: row_wise() for config in collection.embedding_bag_configs()},
                    local_size=context.local_world_size,
                    world_size=context.world_size,
                    device_type=device_type,
                )
                for path, collection in collections.items()
            }
        )
        logger.info("row-wise plan built without the planner (the planner offers row-wise only on CUDA)")
        return plan

    constraints = None
    if sharding_type is not None:
        constraints = {}
        for collection in collections.values():
            for config in collection.embedding_bag_configs():
                # A column-wise shard has at least dim / world_size columns,
                # so each table is split over every rank when its width allows.
                min_partition = max(4, config.embedding_dim // context.world_size) if sharding_type == "column_wise" else None
                constraints[config.name] = ParameterConstraints(sharding_types=[sharding_type], min_partition=min_partition)
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=context.world_size, local_world_size=context.local_world_size, compute_device=device_type),
        constraints=constraints,
    )
    try:
        return planner.collective_plan(module, sharders, dist.GroupMember.WORLD)
    except RuntimeError as error:
        raise RuntimeError(f"TorchRec's planner found no {sharding.sharding} plan for the embedding tables on {device_type}: {error}") from error


def shard_model(module: nn.Module, training: TrainConfig, sharding: ShardingConfig, context: DistributedContext) -> tuple[DistributedModelParallel, dict[str, str], str | None]:
    """Shard ``module``'s tables over the process group and wrap its dense layers for data parallelism.

    The fused optimizer of the non-data-parallel tables is attached before
    sharding, as TorchRec requires. The sharded tables start from fresh
    values: load the intended weights afterwards with
    :func:`recx.distributed.state.load_full_state_dict`.

    Returns
    -------
    model : DistributedModelParallel
    table_sharding : dict of str to str
        TorchRec sharding type of each table, as planned.
    embedding_optimizer : str or None
        The fused optimizer of the sharded tables; None when every table is data-parallel.
    """
    sharders = [EmbeddingBagCollectionSharder()]
    plan = build_plan(module, sharding, context, sharders)
    table_sharding: dict[str, str] = {}
    fused: list[torch.nn.Parameter] = []
    for path, collection in embedding_collections(module).items():
        module_plan = plan.plan.get(path, {})
        for config in collection.embedding_bag_configs():
            sharding_type = module_plan[config.name].sharding_type if config.name in module_plan else "data_parallel"
            table_sharding[config.name] = sharding_type
            if sharding_type != "data_parallel":
                fused.append(collection.embedding_bags[config.name].weight)

    embedding_optimizer = None
    if fused:
        embedding_optimizer = resolve_embedding_optimizer(training.optimizer, training.momentum, sharding, context.device.type)
        _apply_optimizer_in_backward(_FUSED_CLASSES[embedding_optimizer], fused, fused_optimizer_arguments(embedding_optimizer, training))
    if context.is_main:
        logger.info("sharding plan over %d ranks: %s; fused table optimizer %s", context.world_size, table_sharding, embedding_optimizer)
        logger.debug("%s", plan)
    # One process has no gradients to average: DistributedDataParallel would only add its hooks' cost.
    model = DistributedModelParallel(module, device=context.device, plan=plan, sharders=sharders, init_data_parallel=context.world_size > 1)
    return model, table_sharding, embedding_optimizer
