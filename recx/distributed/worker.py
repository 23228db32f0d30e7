"""Entry point of each worker process of a sharded run: ``python -m recx.distributed.worker train JOB.json``.

torchrun starts one worker per process. Each joins the process group, runs
the job and leaves. Errors a user can fix print one line
``recx train: error (rank R): ...`` and exit with status 2; rank 0's log
goes to standard error, the other ranks log warnings only (all ranks with
``--verbose``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from recx._io import read_json

logger = logging.getLogger("recx.distributed.worker")


def _configure_logging(rank: int, verbose: bool, quiet: bool) -> None:
    if verbose:
        level = logging.DEBUG
    elif quiet or rank != 0:
        level = logging.WARNING
    else:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    package = logging.getLogger("recx")
    package.handlers[:] = [handler]
    package.setLevel(level)
    package.propagate = False
    # TorchRec 1.8 and torch 2.13 warn about their own internals on every run
    # (planner heuristics, ShardedTensor's deprecation): nothing a user can act on.
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\..*|torch\.distributed\..*")
    warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torchrec\..*")


def _run_train(job_file: Path) -> None:
    from recx.distributed.context import close_distributed, init_distributed
    from recx.distributed.run import train_run_sharded
    from recx.distributed.options import ShardingConfig
    from recx.evaluation import format_metrics_table
    from recx.pipeline import RunSettings

    job = read_json(job_file, what="sharded training job")
    settings = RunSettings.from_dict(job["settings"], source=str(job_file))
    sharding = ShardingConfig(**job["sharding"])
    context = init_distributed(settings.training_config().device)
    try:
        result = train_run_sharded(settings, job["output"], sharding, context)
    finally:
        close_distributed()
    if result is not None:
        print(format_metrics_table(result.metrics))
        print(f"\nWrote {result.folder}/ (metrics.json, run.json, recommender.json, model/, index/, history/)")


def main(argv: list[str] | None = None) -> int:
    """Run one worker's job and return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m recx.distributed.worker", description="One worker process of a sharded recx run; started by torchrun.")
    parser.add_argument("job", choices=("train",), help="what to run")
    parser.add_argument("job_file", type=Path, help="JSON file describing the job, written by the launcher")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages on every rank")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    _configure_logging(rank, args.verbose, args.quiet)
    try:
        _run_train(args.job_file)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, FloatingPointError, NotImplementedError) as error:
        if args.verbose:
            logger.exception("worker failed")
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"recx {args.job}: error (rank {rank}): {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
