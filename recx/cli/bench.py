"""The `recx bench` command: datasets x models, tuned on validation, scored once on test."""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("recx.cli")


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as ml-100k,amazon-beauty, got {text!r}")
    return names


def add_bench_parser(commands: argparse._SubParsersAction, add_logging_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `recx bench` on the command's subparsers; ``add_logging_options`` adds the shared -v and -q flags."""
    from recx.bench.specs import DATASETS, DEFAULT_CONFIGS, DEFAULT_DATA_ROOT, MODELS, QUICK_DATASETS

    parser = commands.add_parser(
        "bench",
        help="benchmark the baselines and the two-tower model, each tuned on validation",
        description=(
            "Split each dataset once, tune every model on its validation part, refit the chosen configuration on "
            "train + validation and score it once on test. Writes OUTPUT/results.json, results.md, ndcg.png and "
            "validation.png, and rewrites the `recx bench` section of docs/benchmarks.md."
        ),
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bench"), help="folder for results.json, results.md and the plots (default benchmarks/results/bench)")
    parser.add_argument("--quick", action="store_true", help=f"small grids and at most 5 two-tower epochs, on {', '.join(QUICK_DATASETS)} unless --datasets is given; a few minutes on 2 cores")
    parser.add_argument("--datasets", type=_name_list, help=f"comma-separated datasets (default all: {', '.join(DATASETS)})")
    parser.add_argument("--models", type=_name_list, help=f"comma-separated models (default all: {', '.join(MODELS)})")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding ml-100k/ and s3rec-sequential/ (default shared/data next to the repository); absent datasets are skipped")
    parser.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS, help="folder of the two-tower configs <dataset>.toml (default benchmarks/configs)")
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"), help="benchmarks page whose `recx bench` section is rewritten (default docs/benchmarks.md)")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", dest="write_docs", action="store_true", default=None, help="rewrite the docs section (the default for full runs)")
    docs.add_argument("--no-docs", dest="write_docs", action="store_false", help="leave the docs page alone (the default for --quick)")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed runs of each evaluation in the speed comparison; the fastest counts (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_logging_options(parser)
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the benchmark described by the parsed arguments, write its outputs and print the report."""
    from recx.bench import BenchOptions, run_bench, write_docs_section, write_outputs
    from recx.bench.specs import REPOSITORY

    if args.speed_repeats < 1:
        raise ValueError(f"--speed-repeats must be a positive integer, got {args.speed_repeats}.")
    options = BenchOptions(
        datasets=args.datasets,
        models=args.models,
        quick=args.quick,
        data_root=args.data_root,
        configs=args.configs,
        show_progress=not (args.no_progress or args.quiet),
        speed_repeats=args.speed_repeats,
    )
    results = run_bench(options)
    results["command"] = "recx bench" + "".join(f" {shlex.quote(part)}" for part in (argv if argv is not None else _command_words(args)))
    output = args.output.resolve()
    report = write_outputs(results, output)
    write_docs = (not args.quick) if args.write_docs is None else args.write_docs
    if write_docs:
        write_docs_section(results, report, output, args.docs.resolve(), REPOSITORY)
        logger.info("rewrote the recx bench section of %s", args.docs)
    print(report)
    print(f"Wrote {output}/ (results.json, results.md, ndcg.png, validation.png)")
    return 0


def _command_words(args: argparse.Namespace) -> list[str]:
    """Rebuild the options that change what runs, for the command line recorded in the results."""
    words: list[str] = []
    if args.quick:
        words.append("--quick")
    if args.datasets:
        words += ["--datasets", ",".join(args.datasets)]
    if args.models:
        words += ["--models", ",".join(args.models)]
    words += ["--output", str(args.output)]
    return words
