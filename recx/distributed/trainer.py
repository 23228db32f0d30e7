"""Sharded training of the two-tower model: TorchRec tables split over ranks, dense layers data-parallel.

:class:`ShardedTrainer` trains the model :class:`recx.training.Trainer`
trains, on the same examples with the same losses, with four differences
that sharding brings:

- the model runs inside DistributedModelParallel: TorchRec shards the
  embedding tables by a plan (see :mod:`recx.distributed.sharding`) and
  DistributedDataParallel averages the dense gradients;
- each rank takes an equal slice of every global batch of
  ``TrainConfig.batch_size`` examples, and the softmax loss gathers the item
  embeddings of all ranks (:mod:`recx.distributed.loss`), so one step equals
  a single-process step on the global batch;
- sharded tables are updated by FBGEMM's fused optimizer, during the
  backward pass and only on the rows a batch touches;
- batches come from :class:`~recx.data.streaming.EntryBatches`, which reads
  an in-memory matrix or a memory-mapped :class:`~recx.data.streaming.CsrStore`.

It keeps Trainer's rules for everything else. Every stored entry is one
positive per epoch, and the target item is left out of its user's history
bag. The logQ correction uses training counts. Early stopping keeps the best
validation epoch, and a non-finite loss stops training with an error.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm.auto import tqdm

from recx.data.interactions import Interactions
from recx.data.streaming import DEFAULT_SHUFFLE_BUFFER, CsrStore, EntryBatch, EntryBatches
from recx.distributed.context import DistributedContext, broadcast_float, mean_across_ranks
from recx.distributed.loss import global_batch_softmax_loss
from recx.distributed.module import MODEL_PREFIX, TwoTowerForward
from recx.distributed.precision import autocast, to_device, use_bf16
from recx.distributed.options import ShardingConfig
from recx.distributed.sharding import shard_model
from recx.distributed.state import gather_full_state_dict, load_full_state_dict
from recx.losses import bce_loss, bpr_loss, uniform_log_q
from recx.models.features import FeatureBuilder
from recx.models.two_tower import TwoTowerModel
from recx.training.config import TrainConfig
from recx.training.trainer import EpochRecord, TrainingHistory

logger = logging.getLogger(__name__)


def _training_entries(train: Interactions | CsrStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (indptr, indices, item_counts) of the training matrix, memory-mapped for a store."""
    if isinstance(train, CsrStore):
        return train.indptr, train.indices, np.asarray(train.item_counts)
    return train.matrix.indptr.astype(np.int64), train.matrix.indices, train.item_counts()


class ShardedTrainer:
    """Fit a :class:`TwoTowerModel` with its embedding tables sharded over the process group.

    Every rank constructs the trainer with the same initial ``model`` (built
    with the same seed, or loaded from the same checkpoint). The trainer
    copies its weights into the shards and moves ``model`` to the meta
    device, so that no rank keeps a second full set of tables. On rank 0,
    :meth:`fit` and :meth:`sync_model` rebuild ``model`` on the CPU with the
    trained weights; on the other ranks it stays on the meta device.

    Parameters
    ----------
    model : TwoTowerModel
        Initial weights, identical on every rank, on the CPU. A model built
        on the meta device (``TwoTowerModel(config, device=torch.device("meta"))``)
        lets TorchRec initialise each rank's shards instead, so that no
        process ever holds the full tables.
    features : FeatureBuilder
        Tower inputs of the training data (a
        :class:`~recx.distributed.features.StoreFeatureBuilder` for a store).
    config : TrainConfig
        ``batch_size`` is the global batch and must be a multiple of the world size.
    context : DistributedContext
    sharding : ShardingConfig or None
        Sharding type and table optimizer; None uses the defaults.
    mixed_precision : bool or None, default=None
        bf16 autocast of the towers; None uses it on CUDA devices with bf16.
    shuffle_buffer : int, default=DEFAULT_SHUFFLE_BUFFER
        See :class:`~recx.data.streaming.EntryBatches`.

    Attributes
    ----------
    sharded : torchrec.distributed.DistributedModelParallel
    table_sharding : dict of str to str
        TorchRec's sharding type of each table.
    embedding_optimizer : str or None
        Fused optimizer of the sharded tables.
    """

    def __init__(
        self,
        model: TwoTowerModel,
        features: FeatureBuilder,
        config: TrainConfig,
        context: DistributedContext,
        *,
        sharding: ShardingConfig | None = None,
        mixed_precision: bool | None = None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    ) -> None:
        if config.batch_size % context.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not a multiple of the {context.world_size} processes: each process takes an equal part of every batch. "
                f"Use a batch size divisible by {context.world_size}."
            )
        self.model = model
        self.features = features
        self.config = config
        self.context = context
        self.sharding = sharding or ShardingConfig()
        self.shuffle_buffer = shuffle_buffer
        self.bf16 = use_bf16(context.device, mixed_precision)

        # The sharded copy starts on the meta device, so no rank allocates a
        # second set of full tables; DistributedModelParallel creates only
        # this rank's shards, and the initial weights are then copied in.
        module = TwoTowerForward(TwoTowerModel(model.config, device=torch.device("meta")))
        self.sharded, self.table_sharding, self.embedding_optimizer = shard_model(module, config, self.sharding, context)
        if any(parameter.is_meta for parameter in model.parameters()):
            # A model on the meta device has no weights to copy: the shards keep
            # TorchRec's initialisation (the distribution TwoTowerModel uses),
            # and DistributedDataParallel copies rank 0's dense layers to every rank.
            logger.info("the model is on the meta device: shards start from TorchRec's initialisation")
        else:
            initial = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
            load_full_state_dict(self.sharded, initial, prefix=MODEL_PREFIX)
            del initial
        # The shards now hold the weights: the full model moves to the meta
        # device to free its tables, and sync_model() rebuilds it on rank 0.
        self.model.to(torch.device("meta"))
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> CombinedOptimizer:
        """Combine the fused table optimizer with TrainConfig's torch optimizer for the dense layers."""
        options = self.config
        dense = dict(in_backward_optimizer_filter(self.sharded.named_parameters()))

        def make(parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
            if options.optimizer == "adam":
                return torch.optim.Adam(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
            if options.optimizer == "adagrad":
                return torch.optim.Adagrad(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
            return torch.optim.SGD(parameters, lr=options.learning_rate, momentum=options.momentum, weight_decay=options.weight_decay)

        return CombinedOptimizer([self.sharded.fused_optimizer, KeyedOptimizerWrapper(dense, make)])

    # ------------------------------------------------------------------ fit

    def prepare(self, train: Interactions | CsrStore) -> EntryBatches:
        """Set up training on ``train``: its batches, the logQ correction and the random streams.

        :meth:`fit` calls it; call it directly only to drive :meth:`train_step` yourself.
        """
        options = self.config
        context = self.context
        indptr, indices, item_counts = _training_entries(train)
        if len(item_counts) != self.model.config.n_items or len(indptr) != self.model.config.n_users + 1:
            raise ValueError(
                f"the model was built for {self.model.config.n_users} users x {self.model.config.n_items} items, "
                f"but the training data has {len(indptr) - 1} x {len(item_counts)}. Train on the data the model was built from."
            )
        batches = EntryBatches(indptr, indices, options.batch_size, seed=options.seed, shuffle_buffer=self.shuffle_buffer, rank=context.rank, world_size=context.world_size)

        # log q(item): expected count of each item in a global batch, as in Trainer.
        counts = np.maximum(item_counts, 1).astype(np.float64)
        self.log_q = torch.from_numpy(np.log(counts / counts.sum() * batches.batch_size).astype(np.float32)).to(context.device)
        # One stream shared by all ranks (for draws that must agree, such as
        # the softmax's shared negatives) and one per rank (history subsampling).
        self.shared_rng = np.random.default_rng([options.seed, 1])
        self.local_rng = np.random.default_rng([options.seed, 2, context.rank])
        return batches

    def fit(self, train: Interactions | CsrStore, *, validate: Callable[[TwoTowerModel], float] | None = None) -> TrainingHistory:
        """Train for up to ``config.epochs`` epochs; a collective call on every rank.

        Parameters
        ----------
        train : Interactions or CsrStore
            The training interactions the features were built from.
        validate : callable or None
            Called on rank 0 with :attr:`model` holding the current weights;
            returns the validation metric (higher is better). Its value
            drives early stopping on every rank, as in Trainer.

        Returns
        -------
        TrainingHistory
            The same on every rank. On rank 0, :attr:`model` then contains the
            weights of the best epoch (the last one without ``validate``).

        Raises
        ------
        FloatingPointError
            If the mean loss over ranks becomes NaN or infinite.
        """
        options = self.config
        context = self.context
        batches = self.prepare(train)

        history = TrainingHistory()
        best_state = None
        epochs_without_gain = 0
        for epoch in range(1, options.epochs + 1):
            started = time.perf_counter()
            mean_loss = self._run_epoch(epoch, batches, best_state)
            record = EpochRecord(epoch=epoch, loss=mean_loss, seconds=time.perf_counter() - started)
            if validate is not None:
                record.validation = self._validate(validate)
                if history.best_validation is None or record.validation > history.best_validation:
                    history.best_validation = record.validation
                    history.best_epoch = epoch
                    best_state = copy.deepcopy(self.sharded.state_dict())
                    epochs_without_gain = 0
                else:
                    epochs_without_gain += 1
            else:
                history.best_epoch = epoch
            history.epochs.append(record)
            if context.is_main:
                logger.info(
                    "epoch %d/%d: loss %.4f%s (%.1f s, %d ranks)",
                    epoch,
                    options.epochs,
                    mean_loss,
                    "" if record.validation is None else f", validation ndcg@{options.eval_k} {record.validation:.4f}",
                    record.seconds,
                    context.world_size,
                )
            if validate is not None and options.patience and epochs_without_gain >= options.patience:
                history.stopped_early = True
                if context.is_main:
                    logger.info("early stop: no validation gain for %d epochs; keeping epoch %d", options.patience, history.best_epoch)
                break

        if best_state is not None and history.best_epoch != history.epochs[-1].epoch:
            self.sharded.load_state_dict(best_state)
        self.sync_model()
        return history

    def _run_epoch(self, epoch: int, batches: EntryBatches, best_state: dict[str, object] | None) -> float:
        self.sharded.train()
        total, steps = 0.0, 0
        progress = tqdm(total=len(batches), desc=f"epoch {epoch}", leave=False, disable=not (self.config.show_progress and self.context.is_main), unit="batch")
        for step, batch in enumerate(batches.epoch(epoch), start=1):
            try:
                value = self.train_step(batch)
            except FloatingPointError as error:
                restored = "The best weights so far were restored." if best_state is not None else "The weights are those of the step before."
                if best_state is not None:
                    self.sharded.load_state_dict(best_state)
                raise FloatingPointError(f"training diverged: {error} at epoch {epoch}, step {step}. {restored} Lower the learning rate (now {self.config.learning_rate}).") from None
            total += value
            steps += 1
            progress.update()
            progress.set_postfix(loss=f"{total / steps:.4f}")
        progress.close()
        return total / max(steps, 1)

    def train_step(self, batch: EntryBatch) -> float:
        """Take one optimizer step on this rank's part of a global batch; a collective call.

        Returns the mean loss over ranks, which is the single-process loss of
        the global batch. Needs :meth:`prepare` first.

        Raises
        ------
        FloatingPointError
            If that loss is NaN or infinite; no step is taken then.
        """
        loss = self._loss(batch, self.log_q, self.shared_rng, self.local_rng)
        value = mean_across_ranks(loss.detach(), self.context)
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def _loss(self, batch: EntryBatch, log_q: torch.Tensor, shared_rng: np.random.Generator, local_rng: np.random.Generator) -> torch.Tensor:
        """Return this rank's loss on its part of a batch (mean over its examples)."""
        options = self.config
        device = self.context.device
        n_items = self.model.config.n_items
        size = len(batch.users)
        n_negatives = options.resolved_negatives
        user_input = self.features.user_features(batch.users, target_positions=batch.positions, generator=local_rng)
        if options.loss == "softmax":
            # Shared by the global batch, so every rank draws the same ones.
            negatives = shared_rng.integers(0, n_items, size=n_negatives)
        else:
            negatives = local_rng.integers(0, n_items, size=size * n_negatives)
        # Positives and negatives go through the item tower in one call: the
        # sharded tables then exchange one batch per step.
        item_input = self.features.item_features(np.concatenate([batch.items, negatives]))
        with autocast(device, self.bf16):
            user_embeddings, item_embeddings = self.sharded(to_device(user_input, device), to_device(item_input, device))
        user_embeddings, item_embeddings = user_embeddings.float(), item_embeddings.float()
        positive_embeddings, negative_embeddings = item_embeddings[:size], item_embeddings[size:]
        item_ids = torch.from_numpy(batch.items).to(device)

        if options.loss == "softmax":
            return global_batch_softmax_loss(
                user_embeddings,
                positive_embeddings,
                item_ids,
                self.context,
                item_log_q=log_q[item_ids] if options.logq_correction else None,
                negative_embeddings=negative_embeddings if n_negatives else None,
                negative_ids=torch.from_numpy(negatives).to(device) if n_negatives else None,
                negative_log_q=uniform_log_q(n_negatives, n_items) if (n_negatives and options.logq_correction) else None,
            )
        positive_scores = (user_embeddings * positive_embeddings).sum(dim=1)
        negative_scores = torch.einsum("bd,bnd->bn", user_embeddings, negative_embeddings.view(size, n_negatives, -1))
        if options.loss == "bpr":
            return bpr_loss(positive_scores, negative_scores)
        return bce_loss(positive_scores, negative_scores)

    # -------------------------------------------------------------- weights

    def sync_model(self) -> None:
        """Gather the sharded weights into :attr:`model` on rank 0; a collective call on every rank."""
        state = gather_full_state_dict(self.sharded, self.context, prefix=MODEL_PREFIX)
        if state is not None:
            if any(parameter.is_meta for parameter in self.model.parameters()):
                self.model.to_empty(device=torch.device("cpu"))
            self.model.load_state_dict(state)

    def _validate(self, validate: Callable[[TwoTowerModel], float]) -> float:
        """Run ``validate`` on rank 0 with the current weights and share its value with every rank."""
        self.sync_model()
        value: float | None = None
        failure: Exception | None = None
        if self.context.is_main:
            self.model.eval()
            try:
                value = float(validate(self.model))
            except Exception as error:  # re-raised below, once the other ranks have the failure value
                failure, value = error, math.nan
        shared = broadcast_float(value, self.context)
        if failure is not None:
            raise failure
        if math.isnan(shared):
            raise RuntimeError("validation failed on rank 0; its error message is in rank 0's output.")
        return shared
