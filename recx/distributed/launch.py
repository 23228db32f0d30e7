"""Start the worker processes of a sharded run with torchrun (``python -m torch.distributed.run``).

One machine: ``--standalone`` rendezvous on a free local port. Several
machines: the same command on each, with ``nnodes`` and a rendezvous
endpoint ``HOST:PORT`` that every machine reaches (c10d rendezvous, hosted
by the process on HOST). torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the
rest for every worker, which :func:`recx.distributed.init_distributed` reads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from recx._io import write_json_atomic

logger = logging.getLogger(__name__)

#: Module that every worker process runs.
WORKER_MODULE = "recx.distributed.worker"


def torchrun_command(worker_arguments: list[str], *, nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None, rdzv_id: str = "recx") -> list[str]:
    """Return the command line that starts ``nproc_per_node`` workers on this machine.

    Raises
    ------
    ValueError
        If a count is below 1, or ``nnodes > 1`` comes without a rendezvous endpoint.
    """
    if not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc_per_node!r}.")
    if not isinstance(nnodes, int) or nnodes < 1:
        raise ValueError(f"nnodes must be a positive integer, got {nnodes!r}.")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1 and rdzv_endpoint is None:
        command.append("--standalone")
    else:
        if rdzv_endpoint is None or ":" not in rdzv_endpoint:
            raise ValueError(f"training on {nnodes} machines needs a rendezvous endpoint HOST:PORT that every machine reaches, got {rdzv_endpoint!r}. Pass --rdzv-endpoint.")
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    return [*command, "-m", WORKER_MODULE, *worker_arguments]


def run_workers(worker_arguments: list[str], *, nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None, environment: dict[str, str] | None = None) -> None:
    """Run the workers through torchrun and wait for them.

    Raises
    ------
    RuntimeError
        If torchrun exits with a non-zero status (a worker failed; its
        message is in the output above).
    """
    command = torchrun_command(worker_arguments, nproc_per_node=nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)
    env = dict(os.environ if environment is None else environment)
    # torchrun sets OMP_NUM_THREADS=1 when it is unset; keep the caller's choice otherwise.
    logger.info("starting %d worker processes: %s", nproc_per_node, " ".join(command))
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"sharded training failed: torchrun exited with status {completed.returncode}. The failing worker's message is printed above.")


def launch_train_run(
    settings: Any,
    output: str | os.PathLike[str],
    *,
    nproc_per_node: int,
    sharding: Any,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    verbose: bool = False,
    quiet: bool = False,
) -> Path:
    """Run `recx train` sharded over ``nproc_per_node * nnodes`` processes and return the run folder.

    ``settings`` is a :class:`recx.pipeline.RunSettings` and ``sharding`` a
    :class:`recx.distributed.ShardingConfig`; both are passed to the workers
    as a JSON file.
    """
    with tempfile.TemporaryDirectory(prefix="recx-job-") as folder:
        job = Path(folder) / "job.json"
        write_json_atomic(job, {"settings": settings.to_dict(), "sharding": sharding.to_dict(), "output": str(Path(output).resolve())})
        arguments = ["train", str(job)]
        if verbose:
            arguments.append("--verbose")
        if quiet:
            arguments.append("--quiet")
        run_workers(arguments, nproc_per_node=nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)
    return Path(output)
