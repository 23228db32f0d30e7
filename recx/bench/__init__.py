"""The `recx bench` benchmark: baselines and the two-tower model, tuned on validation, scored once on test.

:func:`run_bench` runs the datasets and models of :mod:`recx.bench.specs`
and returns one JSON-ready record; :func:`write_outputs` writes it as
``results.json``, ``results.md`` and plots.
"""

from recx.bench.report import markdown_report, write_docs_section, write_outputs
from recx.bench.runner import BenchOptions, compare_evaluation_speed, run_bench, run_dataset, tune_and_test
from recx.bench.specs import DATASETS, MODELS, DatasetSpec

__all__ = [
    "DATASETS",
    "MODELS",
    "BenchOptions",
    "DatasetSpec",
    "compare_evaluation_speed",
    "markdown_report",
    "run_bench",
    "run_dataset",
    "tune_and_test",
    "write_docs_section",
    "write_outputs",
]
