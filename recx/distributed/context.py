"""The process group of a sharded run: who this process is and which device and backend it uses."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: Environment variables that torchrun sets for every worker process.
TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: How long a collective waits for the other ranks. Rank 0 evaluates the
#: model alone between epochs while the others wait, so this must cover one
#: evaluation of the validation users.
DEFAULT_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group.

    Attributes
    ----------
    rank, world_size : int
        Global rank and number of processes.
    local_rank, local_world_size : int
        Rank and number of processes on this machine.
    device : torch.device
        ``cuda:<local_rank>`` with NCCL when CUDA is present and allowed, else CPU with gloo.
    backend : str
        "nccl" or "gloo".
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes outputs."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as error:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer; it should be set by torchrun.") from error


def init_distributed(device: str = "auto", *, timeout: timedelta = DEFAULT_TIMEOUT) -> DistributedContext:
    """Join the process group that torchrun describes in the environment.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}, default="auto"
        "auto" uses the GPU ``LOCAL_RANK`` with NCCL when CUDA is present, and
        the CPU with gloo otherwise.
    timeout : datetime.timedelta
        Maximum wait of a collective for the other ranks.

    Raises
    ------
    RuntimeError
        If the torchrun variables are missing, or "cuda" is requested without CUDA.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"this process was not started by torchrun: environment variables {missing} are not set. "
            f"Launch sharded training with `recx train --nproc N`, or call init_single_process() for one process."
        )
    rank, world_size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    local_world_size = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else world_size
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"invalid device {device!r}: expected one of ['auto', 'cpu', 'cuda'].")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not use_cuda:
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available to torch. Use --device cpu or auto.")
    if use_cuda:
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
        backend = "nccl"
    else:
        torch_device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)
    context = DistributedContext(rank, world_size, local_rank, local_world_size, torch_device, backend)
    logger.debug("rank %d of %d (local %d of %d) on %s with %s", rank, world_size, local_rank, local_world_size, torch_device, backend)
    return context


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def init_single_process(device: str = "auto") -> DistributedContext:
    """Start a process group of one process on the loopback interface.

    TorchRec's sharded modules (and their fused optimizers) need a process
    group even on one device; this gives one without torchrun. It sets the
    torchrun variables of this process if they are not set already.
    """
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return init_distributed(device)


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_float(value: float | None, context: DistributedContext, *, source: int = 0) -> float:
    """Return rank ``source``'s ``value`` on every rank (others pass None)."""
    tensor = torch.tensor([0.0 if value is None else float(value)], dtype=torch.float64, device=_collective_device(context))
    if context.world_size > 1:
        dist.broadcast(tensor, src=source)
    return float(tensor.item())


def mean_across_ranks(value: torch.Tensor, context: DistributedContext) -> float:
    """Return the mean of a scalar tensor over all ranks."""
    if context.world_size == 1:
        return float(value.item())
    total = value.detach().to(device=_collective_device(context), dtype=torch.float64).reshape(1).clone()
    dist.all_reduce(total)
    return float(total.item()) / context.world_size


def _collective_device(context: DistributedContext) -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU tensors.
    return context.device if context.backend == "nccl" else torch.device("cpu")
