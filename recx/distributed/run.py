"""The `recx train` job on every rank of a sharded run: the pipeline of :func:`recx.pipeline.train_run` with a :class:`ShardedTrainer`.

Every rank loads the data and computes the same split (both are
deterministic given the settings), builds the same initial model from the
seed, and trains its part of each batch. Rank 0 alone evaluates (on the
weights gathered from all ranks) and writes the run folder, which has the
layout of a single-process run plus a ``distributed`` entry in ``run.json``.
A sharded run's folder therefore loads with
:meth:`recx.training.TwoTowerRecommender.load` and scores again with
`recx evaluate`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from recx._io import write_json_atomic
from recx.data.interactions import merge_interactions
from recx.distributed.context import DistributedContext
from recx.distributed.options import ShardingConfig
from recx.distributed.trainer import ShardedTrainer
from recx.evaluation import evaluate
from recx.models.features import FeatureBuilder
from recx.models.two_tower import TwoTowerModel
from recx.pipeline import METRICS_FILE, RUN_FILE, RunResult, RunSettings, _check_output_folder, _run_record, load_data, make_split, score_models
from recx.training import TwoTowerRecommender, seed_everything

logger = logging.getLogger(__name__)


def train_run_sharded(settings: RunSettings, output: str | os.PathLike[str], sharding: ShardingConfig, context: DistributedContext) -> RunResult | None:
    """Run :func:`recx.pipeline.train_run` with sharded training; a collective call on every rank.

    Returns the result on rank 0 and None on the other ranks.
    """
    if settings.transfer:
        raise NotImplementedError(
            f"sharded training does not support the [transfer] settings {sorted(settings.transfer)} (pretrained initialisation and fine-tuning). "
            f"Train without --nproc, or drop the [transfer] table."
        )
    folder = Path(output)
    if context.is_main:
        _check_output_folder(folder)
    started = time.perf_counter()

    # Step 1: data and split, the same on every rank.
    interactions = load_data(settings)
    split = make_split(settings, interactions)
    train = split.train
    history = train if split.validation is None else merge_interactions(train, split.validation)

    # Step 2: the model TwoTowerRecommender.fit would build, from the same seed on every rank.
    training = settings.training_config()
    recommender = TwoTowerRecommender(training=training, **settings.model)
    seed_everything(training.seed)
    # NOTE: _model_config is TwoTowerRecommender's private rule for turning
    # its options and the data into a TwoTowerConfig. Reusing it keeps a
    # sharded run's model identical to a single-process run's.
    config = recommender._model_config(train.n_users, train.n_items, FeatureBuilder.vocabulary(train), has_timestamps=train.timestamps is not None)
    model = TwoTowerModel(config)
    features = FeatureBuilder(config, train, max_history=training.max_history)
    trainer = ShardedTrainer(model, features, training, context, sharding=sharding)

    # Step 3: train; rank 0 scores the validation part after every epoch.
    def attach(weights: TwoTowerModel, known: Any) -> None:
        recommender.model = weights
        recommender.features = FeatureBuilder(config, known, max_history=training.max_history) if known is not train else features
        recommender.train = known
        recommender._index = None

    validate = None
    if split.validation is not None:
        key = f"ndcg@{training.eval_k}"
        validation = split.validation

        def validate(weights: TwoTowerModel) -> float:
            attach(weights, train)
            return evaluate(recommender, train, validation, k=[training.eval_k], metrics=["ndcg"])[key]

    recommender.history = trainer.fit(train, validate=validate)
    if not context.is_main:
        return None

    # Step 4 (rank 0): score against MostPopular and write the run folder.
    model.eval()
    attach(model, history if split.validation is not None and split.validation.nnz else train)
    metrics = score_models(recommender, history, split.test, settings.k)
    recommender.save(folder)
    write_json_atomic(folder / METRICS_FILE, metrics)
    record = _run_record(settings, interactions, split, recommender, time.perf_counter() - started)
    record["distributed"] = {
        "world_size": context.world_size,
        "backend": context.backend,
        "device": str(context.device),
        "sharding": sharding.sharding,
        "table_sharding": trainer.table_sharding,
        "embedding_optimizer": trainer.embedding_optimizer,
    }
    write_json_atomic(folder / RUN_FILE, record)
    logger.info("sharded run over %d ranks written to %s", context.world_size, folder)
    return RunResult(recommender, metrics, folder)
