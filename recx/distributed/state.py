"""Move weights between a sharded model and full tensors: gather to rank 0, scatter from a full state dict.

A sharded model's ``state_dict`` holds, for each sharded table, a
``ShardedTensor`` whose local shards are views of this rank's part of the
table. Dense layers and data-parallel tables are plain tensors, identical on
every rank. Gathering assembles full tensors with the names of the unsharded
model, so a checkpoint written from them loads into a single-process
:class:`~recx.models.TwoTowerModel`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

from recx.distributed.context import DistributedContext


@contextlib.contextmanager
def _sharded_tensor_warnings_ignored() -> Iterator[None]:
    # torch 2.13 warns on every ShardedTensor call that the type is deprecated,
    # but TorchRec 1.8's state dicts are made of it: nothing a caller can change.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
        yield


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


@torch.no_grad()
@_sharded_tensor_warnings_ignored()
def gather_full_state_dict(module: nn.Module, context: DistributedContext, *, prefix: str = "") -> dict[str, torch.Tensor] | None:
    """Assemble every tensor of ``module.state_dict()`` on rank 0, as full CPU tensors.

    A collective call: every rank must call it. Keys starting with
    ``prefix`` lose it. Returns the state dict on rank 0 and None elsewhere.
    """
    state: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        name = _strip(key, prefix)
        if isinstance(value, ShardedTensor):
            shards = value.local_shards()
            # gather() needs the output on the device of the shards.
            device = shards[0].tensor.device if shards else context.device
            out = torch.empty(value.size(), dtype=value.dtype, device=device) if context.is_main else None
            value.gather(dst=0, out=out)
            if out is not None:
                state[name] = out.cpu()
        elif isinstance(value, DTensor):
            full = value.full_tensor()
            if context.is_main:
                state[name] = full.cpu()
        elif context.is_main:
            state[name] = value.detach().cpu().clone()
    return state if context.is_main else None


@torch.no_grad()
@_sharded_tensor_warnings_ignored()
def load_full_state_dict(module: nn.Module, full_state: dict[str, torch.Tensor], *, prefix: str = "") -> None:
    """Copy full tensors into this rank's shards and replicas of ``module``.

    Every rank passes the same ``full_state`` (for example the weights of a
    single-process model built with the same seed, or a loaded checkpoint),
    keyed like the unsharded model. Each rank copies only the rows and
    columns its shards hold.

    Raises
    ------
    KeyError
        If ``full_state`` lacks a tensor of the module.
    ValueError
        If a tensor's shape differs from the module's.
    """
    for key, value in module.state_dict().items():
        name = _strip(key, prefix)
        if name not in full_state:
            raise KeyError(f"the full state dict has no tensor {name!r}, which the sharded model needs. It contains {sorted(full_state)[:5]}...")
        source = full_state[name]
        if tuple(source.shape) != tuple(value.shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(source.shape)} in the full state dict, but {tuple(value.shape)} in the sharded model.")
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                row, column = shard.metadata.shard_offsets
                rows, columns = shard.metadata.shard_sizes
                shard.tensor.copy_(source[row : row + rows, column : column + columns])
        elif isinstance(value, DTensor):
            raise NotImplementedError(f"tensor {name!r} is a DTensor; recx loads only ShardedTensor and plain tensors into sharded models.")
        else:
            value.copy_(source)
