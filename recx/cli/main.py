"""The `recx` command line: train, evaluate, recommend, datasets, export, serve, bench.

Each command turns arguments into library calls; the work itself lives in
:mod:`recx.pipeline` and the modules it uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recx.cli.arguments import positive_int
from recx.cli.scale import add_ingest_parser, add_sharding_options, add_synth_parser, run_sharded_train

logger = logging.getLogger("recx.cli")

PROTOCOLS = ("temporal", "leave-one-out", "random", "time-cut")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,20, got {text!r}") from error
    return values


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only, and hide progress bars")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a two-tower model, index it and score it against MostPopular",
        description=(
            "Train a two-tower model on a dataset split, build its item index, and score it and a MostPopular "
            "baseline on the test split. Writes OUTPUT/{run.json,metrics.json,model/,history/,index/}. "
            "Options override the same keys of --config."
        ),
    )
    parser.add_argument("--config", type=Path, help="TOML file with [data], [split], [model] and [training] tables and a top-level k list")
    parser.add_argument("--output", type=Path, help="run folder to write (default: runs/train-<UTC time>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output from its last finished epoch; give the same options as the first run (only --epochs may differ)",
    )

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="movielens-latest-small (embedded, the default), movielens-100k, movielens, csv or parquet")
    data.add_argument("--data-path", help="folder of a MovieLens release, or a CSV/TSV/Parquet file")
    data.add_argument("--user-col", help="user id column of a CSV/Parquet file (default user_id)")
    data.add_argument("--item-col", help="item id column of a CSV/Parquet file (default item_id)")
    data.add_argument("--weight-col", help="weight or rating column of a CSV/Parquet file (default: every row weighs 1)")
    data.add_argument("--timestamp-col", help="timestamp column of a CSV/Parquet file, needed by temporal splits")
    data.add_argument("--sep", help="field separator of a CSV file (default: tab for .tsv, comma otherwise)")
    data.add_argument("--min-rating", type=float, help="drop interactions whose rating or weight is below this value")

    split = parser.add_argument_group("split")
    split.add_argument("--split", choices=PROTOCOLS, help="split protocol (default temporal: the last fraction of each user's interactions by time)")
    split.add_argument("--test-fraction", type=float, help="share of each user's interactions held out for test (default 0.2)")
    split.add_argument("--validation-fraction", type=float, help="share of train held out for early stopping (default 0.1; 0 disables)")
    split.add_argument("--seed", type=int, help="seed of the random split, model initialisation and sampling (default 0)")
    split.add_argument("--train-fraction", type=float, help="keep this share of each user's training interactions, drawn with --seed (default 1)")

    model = parser.add_argument_group("model")
    model.add_argument("--embedding-dim", type=positive_int, help="width of the embedding tables (default 64)")
    model.add_argument("--hidden-dims", type=_int_list, help="hidden layer widths of each tower, comma-separated (default 128; empty string for none)")
    model.add_argument("--output-dim", type=positive_int, help="dimension of the user and item embeddings (default 64)")
    model.add_argument("--activation", choices=("relu", "gelu", "tanh", "sigmoid"), help="activation between MLP layers (default relu)")
    model.add_argument("--temperature", type=float, help="softmax temperature (default 0.1)")
    model.add_argument("--dropout", type=float, help="dropout after each hidden layer (default 0)")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, help="maximum number of epochs (default 20)")
    training.add_argument("--batch-size", type=positive_int, help="positive examples per step (default 1024)")
    training.add_argument("--learning-rate", type=float, help="optimiser learning rate (default 0.003)")
    training.add_argument("--optimizer", choices=("adam", "adagrad", "sgd"), help="optimiser (default adam)")
    training.add_argument("--loss", choices=("softmax", "bpr", "bce"), help="training loss (default softmax with logQ correction)")
    training.add_argument("--negatives", type=int, help="uniformly sampled negatives (softmax: per batch, default 0; bpr/bce: per positive, default 4)")
    training.add_argument("--max-history", type=positive_int, help="about how many history items each training example samples (default 10)")
    training.add_argument("--patience", type=int, help="epochs without validation gain before stopping (default 3; 0 disables)")
    training.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto: CUDA when present)")
    training.add_argument("--no-progress", action="store_true", help="hide progress bars")

    transfer = parser.add_argument_group("transfer", "start from a pretrained network (see docs/transfer.md)")
    transfer.add_argument(
        "--init",
        action="append",
        metavar="SOURCE",
        help="'text' (sentence encoder over item titles and genres), a recx run folder, or an .npz/.safetensors vector file; repeat to combine",
    )
    transfer.add_argument("--align", help="how a run or vector file matches items: 'title' (normalised title and year, default for runs) or 'id'")
    transfer.add_argument("--encoder", help="folder of a sentence-transformers model for --init text (default: the packaged all-MiniLM-L6-v2)")
    transfer.add_argument("--content-weight", type=float, help="with --init text: weight of the loss that trains items read from text alone, for items without interactions (default 0; 1 when new items matter)")
    transfer.add_argument("--freeze", type=_name_list, help="parameter groups that start frozen, comma-separated, or 'pretrained'")
    transfer.add_argument("--unfreeze-epoch", type=positive_int, help="first epoch in which the frozen groups train (default: never)")
    transfer.add_argument("--pretrained-lr-scale", type=float, help="factor on the learning rate of pretrained groups (default 1)")
    transfer.add_argument("--l2-sp", type=float, help="strength of the pull toward the pretrained weights (default 0)")

    parser.add_argument("-k", "--k", dest="cutoffs", type=_int_list, help="metric cut-offs, comma-separated (default 10,20)")
    add_sharding_options(parser)
    _add_logging_options(parser)
    parser.set_defaults(handler=_run_train)


def _settings_from_args(args: argparse.Namespace) -> Any:
    from recx.pipeline import RunSettings

    settings = RunSettings.from_toml(args.config) if args.config else RunSettings()
    payload = settings.to_dict()
    overrides = {
        "data": {
            "dataset": args.dataset,
            "path": args.data_path,
            "user_col": args.user_col,
            "item_col": args.item_col,
            "weight_col": args.weight_col,
            "timestamp_col": args.timestamp_col,
            "sep": args.sep,
            "min_rating": args.min_rating,
        },
        "split": {
            "protocol": args.split,
            "test_fraction": args.test_fraction,
            "validation_fraction": args.validation_fraction,
            "seed": args.seed,
            "train_fraction": args.train_fraction,
        },
        "model": {
            "embedding_dim": args.embedding_dim,
            "hidden_dims": args.hidden_dims,
            "output_dim": args.output_dim,
            "activation": args.activation,
            "temperature": args.temperature,
            "dropout": args.dropout,
        },
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "optimizer": args.optimizer,
            "loss": args.loss,
            "negatives": args.negatives,
            "max_history": args.max_history,
            "patience": args.patience,
            "device": args.device,
            "seed": args.seed,
        },
    }
    payload["transfer"].update(
        {
            key: value
            for key, value in {
                "init": args.init,
                "align": args.align,
                "encoder": args.encoder,
                "content_weight": args.content_weight,
                "freeze": args.freeze,
                "unfreeze_epoch": args.unfreeze_epoch,
                "pretrained_lr_scale": args.pretrained_lr_scale,
                "l2_sp": args.l2_sp,
            }.items()
            if value is not None
        }
    )
    # A new dataset name starts from that dataset's defaults, not the config's path.
    if args.dataset and args.dataset != payload["data"].get("dataset"):
        payload["data"] = {"dataset": args.dataset}
    for table, values in overrides.items():
        payload[table].update({key: value for key, value in values.items() if value is not None})
    if args.no_progress or args.quiet:
        payload["training"]["show_progress"] = False
    if args.cutoffs is not None:
        payload["k"] = args.cutoffs
    return RunSettings.from_dict(payload, source="command line")


def _run_train(args: argparse.Namespace) -> int:
    from recx.evaluation import format_metrics_table
    from recx.pipeline import train_run

    settings = _settings_from_args(args)
    if args.resume and args.output is None:
        raise ValueError("--resume needs --output: pass the run folder of the interrupted run, for example --output runs/first --resume.")
    output = args.output or Path("runs") / datetime.now(timezone.utc).strftime("train-%Y%m%d-%H%M%S")
    if args.nproc:
        return run_sharded_train(args, settings, output)
    dataset = settings.data.get("dataset", "movielens-latest-small")
    logger.info("training on %s%s, writing %s", dataset, f" ({settings.data['path']})" if settings.data.get("path") else " (embedded copy)" if dataset == "movielens-latest-small" else "", output)
    result = train_run(settings, output, resume=args.resume)
    print(format_metrics_table(result.metrics))
    print(f"\nWrote {result.folder}/ (metrics.json, run.json, recommender.json, model/, index/, history/)")
    return 0


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="score a saved run again on its test split", description="Rebuild a run's split from run.json and score its model and MostPopular on the test split.")
    parser.add_argument("run", nargs="?", type=Path, help="run folder (default: the latest under runs/)")
    parser.add_argument("--output", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run the model (default cpu)")
    _add_logging_options(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from recx._io import write_json_atomic
    from recx.evaluation import format_metrics_table
    from recx.pipeline import evaluate_run, latest_run

    folder = args.run or latest_run()
    metrics = evaluate_run(folder, device=args.device)
    print(format_metrics_table(metrics))
    if args.output:
        write_json_atomic(args.output, metrics)
        print(f"\nWrote {args.output}")
    return 0


def _add_recommend_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recommend", help="print a user's top items from a saved run", description="Print the top-k items for a user of a saved run, excluding items the user already has.")
    parser.add_argument("--run", type=Path, help="run folder (default: the latest under runs/)")
    parser.add_argument("--user", required=True, help="external user id, as in the input data")
    parser.add_argument("-k", "--k", type=int, default=10, help="number of items (default 10)")
    parser.add_argument("--include-seen", action="store_true", help="do not exclude the user's known items")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_logging_options(parser)
    parser.set_defaults(handler=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    from recx.pipeline import latest_run
    from recx.training import TwoTowerRecommender

    if args.k <= 0:
        raise ValueError(f"k must be a positive integer, got {args.k}. Pass -k 10 for ten items.")
    folder = args.run or latest_run()
    recommender = TwoTowerRecommender.load(folder)
    history = recommender.train
    assert history is not None
    if args.user not in history.users and history.users.kind == "str":
        raise KeyError(f"unknown user id {args.user!r}: run {folder} has no such user. Known user ids are like {history.users.ids[:3].tolist()}.")
    item_ids, scores = recommender.recommend(args.user, args.k, filter_seen=not args.include_seen)
    titles = history.item_titles()
    rows = []
    for rank, (item_id, score) in enumerate(zip(item_ids.tolist(), scores.tolist()), start=1):
        title = None if titles is None else str(titles[history.items.to_index([item_id])[0]])
        rows.append({"rank": rank, "item_id": item_id, "score": round(float(score), 4), "title": title})
    if args.json:
        user_id = int(args.user) if history.users.kind == "int" else args.user
        print(json.dumps({"user_id": user_id, "items": rows}, ensure_ascii=False, indent=2))
        return 0
    print(f"Top {len(rows)} items for user {args.user} ({folder}):")
    for row in rows:
        title = f"  {row['title']}" if row["title"] else ""
        print(f"{row['rank']:>4}  {row['item_id']!s:>10}  {row['score']:>8.4f}{title}")
    return 0


def _add_datasets_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("datasets", help="list the dataset names --dataset accepts")
    _add_logging_options(parser)
    parser.set_defaults(handler=_run_datasets)


def _run_datasets(args: argparse.Namespace) -> int:
    from recx.data import DATASETS

    width = max(len(name) for name in DATASETS)
    for name, description in DATASETS.items():
        print(f"{name:<{width}}  {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `recx` command."""
    from recx import __version__
    from recx.cli.bench import add_bench_parser
    from recx.cli.serving import add_serving_parsers

    parser = argparse.ArgumentParser(prog="recx", description="Two-tower retrieval on implicit feedback: train, index, evaluate and recommend.")
    parser.add_argument("--version", action="version", version=f"recx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_recommend_parser(commands)
    _add_datasets_parser(commands)
    add_serving_parsers(commands, _add_logging_options)
    add_bench_parser(commands, _add_logging_options)
    add_synth_parser(commands, _add_logging_options)
    add_ingest_parser(commands, _add_logging_options)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    # TorchRec calls torch.fx.is_fx_tracing, which logs a deprecation notice
    # meant for torch developers, not about the user's run.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    package = logging.getLogger("recx")
    package.handlers[:] = [handler]
    package.setLevel(level)
    package.propagate = False


# Library messages name Python arguments; on the command line the flag is the fix.
_FLAG_HINTS: tuple[tuple[str, str], ...] = (
    ("user_col=<name>", "--user-col NAME"),
    ("item_col=<name>", "--item-col NAME"),
    ("weight_col=<name>", "--weight-col NAME"),
    ("timestamp_col=<name>", "--timestamp-col NAME"),
    ("pass path=", "pass --data-path"),
    ("timestamp_col=", "--timestamp-col "),
    ("random_split", "--split random"),
)


def _as_command_line_message(message: str) -> str:
    """Rewrite Python-argument hints in a library error as command-line flags."""
    for python_hint, flag_hint in _FLAG_HINTS:
        message = message.replace(python_hint, flag_hint)
    return message


def main(argv: list[str] | None = None) -> int:
    """Run the `recx` command and return its exit status.

    Errors the user can fix (bad values, missing files, unknown ids) print
    one line ``recx COMMAND: error: ...`` and exit with status 2, without a
    traceback. With ``--verbose`` the traceback is logged as well.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.handler(args))
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, FloatingPointError) as error:
        if getattr(args, "verbose", False):
            logger.exception("command failed")
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"recx {args.command}: error: {_as_command_line_message(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
