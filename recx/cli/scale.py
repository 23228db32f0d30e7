"""Command-line pieces for data and training at scale: `recx train --nproc`, `recx synth` and `recx ingest`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recx.cli.arguments import positive_int
from recx.distributed.options import EMBEDDING_OPTIMIZERS, SHARDING_TYPES

logger = logging.getLogger("recx.cli")


def add_sharding_options(parser: argparse.ArgumentParser) -> None:
    """Add the sharded-training options of `recx train`."""
    group = parser.add_argument_group("sharded training")
    group.add_argument(
        "--nproc",
        type=positive_int,
        help="train with this many processes per machine, started by torchrun, with the embedding tables sharded by TorchRec (default: one process, no sharding)",
    )
    group.add_argument("--nnodes", type=positive_int, default=1, help="machines taking part, each running the same command (default 1)")
    group.add_argument("--rdzv-endpoint", help="HOST:PORT of the rendezvous that every machine reaches; needed with --nnodes above 1")
    group.add_argument("--sharding", choices=list(SHARDING_TYPES), default="auto", help="how the embedding tables are split over processes (default auto: TorchRec's planner chooses)")
    group.add_argument(
        "--embedding-optimizer",
        choices=list(EMBEDDING_OPTIMIZERS),
        default="same",
        help="optimizer of the sharded tables, run inside FBGEMM's backward (default same as --optimizer; on CPU FBGEMM has adagrad, rowwise-adagrad and sgd)",
    )


def run_sharded_train(args: argparse.Namespace, settings: Any, output: Path) -> int:
    """Run `recx train` through torchrun when --nproc is given; return the exit status."""
    from recx.distributed.launch import launch_train_run
    from recx.distributed.options import ShardingConfig, resolve_embedding_optimizer
    from recx.pipeline import _check_output_folder

    if getattr(args, "resume", False):
        raise ValueError("--resume is not available with --nproc: sharded training does not write resumable checkpoints yet. Drop --resume or --nproc.")
    if settings.transfer:
        raise ValueError(f"sharded training does not support the [transfer] settings {sorted(settings.transfer)}. Train without --nproc, or drop them.")
    sharding = ShardingConfig(sharding=args.sharding, embedding_optimizer=args.embedding_optimizer)
    training = settings.training_config()
    processes = args.nproc * args.nnodes
    if training.batch_size % processes:
        raise ValueError(
            f"batch size {training.batch_size} is not a multiple of the {processes} processes: each process takes an equal part of every batch. "
            f"Pass a --batch-size divisible by {processes}."
        )
    if sharding.sharding != "data-parallel":
        # Checked before any process starts; the workers check again on their device.
        import torch

        device_type = "cuda" if training.device != "cpu" and torch.cuda.is_available() else "cpu"
        resolve_embedding_optimizer(training.optimizer, training.momentum, sharding, device_type)
    # Checked here as well as in the workers, so the error comes before any process starts.
    _check_output_folder(Path(output))
    logger.info("sharded training: %d processes x %d machines, sharding %s", args.nproc, args.nnodes, args.sharding)
    launch_train_run(
        settings,
        output,
        nproc_per_node=args.nproc,
        sharding=sharding,
        nnodes=args.nnodes,
        rdzv_endpoint=args.rdzv_endpoint,
        verbose=bool(getattr(args, "verbose", False)),
        quiet=bool(getattr(args, "quiet", False)),
    )
    return 0


def add_synth_parser(commands: argparse._SubParsersAction, add_logging_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `recx synth`."""
    parser = commands.add_parser(
        "synth",
        help="write a synthetic interaction log with power-law popularity and clustered tastes",
        description=(
            "Write a seeded synthetic log (user_id, item_id, timestamp) to a Parquet file, one row group per 4096 users. "
            "Item popularity and user activity follow Zipf laws; users draw mostly from their taste cluster. "
            "The same options and seed always give the same file."
        ),
    )
    parser.add_argument("--output", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--users", type=positive_int, default=200_000, help="number of users (default 200000)")
    parser.add_argument("--items", type=positive_int, default=1_000_000, help="number of items (default 1000000)")
    parser.add_argument("--interactions", type=positive_int, default=20_000_000, help="number of distinct (user, item) rows (default 20000000)")
    parser.add_argument("--item-exponent", type=float, default=1.0, help="Zipf exponent of item popularity (default 1.0)")
    parser.add_argument("--user-exponent", type=float, default=1.0, help="Zipf exponent of user activity (default 1.0)")
    parser.add_argument("--clusters", type=positive_int, default=64, help="taste clusters (default 64)")
    parser.add_argument("--cluster-affinity", type=float, default=0.8, help="share of each user's interactions drawn from their cluster (default 0.8)")
    parser.add_argument("--min-user-items", type=positive_int, default=5, help="minimum number of interactions per user (default 5)")
    parser.add_argument("--max-user-items", type=positive_int, help="maximum number of interactions per user (default items / 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_logging_options(parser)
    parser.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from recx.data.synthetic import SyntheticConfig, write_synthetic_parquet

    config = SyntheticConfig(
        n_users=args.users,
        n_items=args.items,
        n_interactions=args.interactions,
        item_exponent=args.item_exponent,
        user_exponent=args.user_exponent,
        n_clusters=args.clusters,
        cluster_affinity=args.cluster_affinity,
        min_user_items=args.min_user_items,
        max_user_items=args.max_user_items,
        seed=args.seed,
    )
    summary = write_synthetic_parquet(config, args.output)
    print(f"Wrote {summary.rows} interactions of {config.n_users} users and {config.n_items} items to {summary.path} ({summary.seconds:.1f} s)")
    return 0


def add_ingest_parser(commands: argparse._SubParsersAction, add_logging_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `recx ingest`."""
    parser = commands.add_parser(
        "ingest",
        help="convert a CSV or Parquet log, read in chunks, into a memory-mapped CSR store",
        description=(
            "Read an interaction log chunk by chunk and write a store folder: id maps and the user x item CSR matrix as "
            ".npy arrays that load memory-mapped. Memory stays near one chunk whatever the file size. "
            "The result equals what --dataset csv/parquet loads in memory with the same options."
        ),
    )
    parser.add_argument("path", type=Path, help="a .csv/.tsv (optionally compressed) or .parquet interaction log")
    parser.add_argument("--output", type=Path, required=True, help="store folder to write")
    parser.add_argument("--format", choices=("csv", "tsv", "parquet"), help="reader to use (default: by file extension)")
    parser.add_argument("--user-col", default="user_id", help="user id column (default user_id)")
    parser.add_argument("--item-col", default="item_id", help="item id column (default item_id)")
    parser.add_argument("--weight-col", help="weight or rating column (default: every row weighs 1)")
    parser.add_argument("--timestamp-col", help="timestamp column (seconds since the epoch, or dates)")
    parser.add_argument("--sep", help="field separator of a CSV file (default: tab for .tsv, comma otherwise)")
    parser.add_argument("--min-rating", type=float, help="drop rows whose weight is below this value")
    parser.add_argument("--duplicates", choices=("sum", "max", "first", "last", "error"), default="sum", help="how repeated (user, item) rows merge (default sum)")
    parser.add_argument("--id-dtype", choices=("auto", "int", "str"), default="auto", help="how ids are typed (default auto: integers when every id is one)")
    parser.add_argument("--chunk-rows", type=positive_int, default=1_000_000, help="rows read at a time; memory grows with it (default 1000000)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store at --output")
    add_logging_options(parser)
    parser.set_defaults(handler=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:
    from recx.data.streaming import ingest

    store = ingest(
        args.path,
        args.output,
        format=args.format,
        user_col=args.user_col,
        item_col=args.item_col,
        weight_col=args.weight_col,
        timestamp_col=args.timestamp_col,
        sep=args.sep,
        id_dtype=args.id_dtype,
        min_weight=args.min_rating,
        duplicates=args.duplicates,
        chunk_rows=args.chunk_rows,
        overwrite=args.overwrite,
    )
    print(f"Wrote {store.folder}/: {store.n_users} users, {store.n_items} items, {store.nnz} interactions")
    return 0
