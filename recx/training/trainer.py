"""The training loop of the two-tower model."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from recx.data.interactions import Interactions
from recx.losses import bce_loss, bpr_loss, sampled_softmax_loss, uniform_log_q
from recx.models.features import FeatureBuilder
from recx.models.two_tower import TwoTowerModel
from recx.training.config import TrainConfig
from recx.training.resume import RESUMABLE_CHANGES, EpochCheckpoints, TrainingState, interactions_digest, restore_generator, restore_optimizer

logger = logging.getLogger(__name__)


class TrainingPolicy(Protocol):
    """Hooks through which a fine-tuning policy shapes training.

    :class:`recx.transfer.FineTuning` implements them: which parameters
    train at which epoch, at which learning rate, and a penalty added to the
    loss (for example L2 toward pretrained weights).
    """

    def parameter_groups(self, model: TwoTowerModel, learning_rate: float) -> list[dict[str, object]]:
        """Return the optimiser's parameter groups, each with its ``lr``."""
        ...

    def begin_epoch(self, model: TwoTowerModel, epoch: int) -> None:
        """Freeze or unfreeze parameters before epoch ``epoch`` (1-based)."""
        ...

    def penalty(self, model: TwoTowerModel) -> torch.Tensor | float:
        """Return a term added to each step's loss (0.0 for none)."""
        ...


def resolve_device(name: str) -> torch.device:
    """Map "auto", "cpu" or "cuda" to a torch device, checking that CUDA exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available to torch. Use --device cpu or auto.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so that CPU training repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EpochRecord:
    """Mean loss, validation metric and wall time of one epoch."""

    epoch: int
    loss: float
    seconds: float
    validation: float | None = None


@dataclass
class TrainingHistory:
    """Per-epoch records and the epoch whose weights were kept."""

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_validation: float | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, object]:
        """Return the history as a JSON-ready dict."""
        return {
            "epochs": [vars(record) for record in self.epochs],
            "best_epoch": self.best_epoch,
            "best_validation": self.best_validation,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainingHistory:
        """Rebuild a history written by :meth:`to_dict`."""
        return cls(
            epochs=[EpochRecord(**record) for record in payload["epochs"]],
            best_epoch=payload["best_epoch"],
            best_validation=payload["best_validation"],
            stopped_early=bool(payload["stopped_early"]),
        )


class Trainer:
    """Fit a :class:`TwoTowerModel` on training interactions.

    Every stored (user, item) entry of the training matrix is one positive
    example per epoch. The user tower reads the user's history without the
    target item. The loss contrasts the target with in-batch items (softmax)
    or with uniformly sampled items (BPR, BCE).

    Parameters
    ----------
    model : TwoTowerModel
    features : FeatureBuilder
        Builds the tower inputs from the same training interactions.
    config : TrainConfig
    validate : callable or None
        Returns the validation metric (higher is better) of the current
        weights; called after every epoch. With it, the best epoch's weights
        are restored at the end and training stops after ``config.patience``
        epochs without improvement.
    """

    def __init__(
        self,
        model: TwoTowerModel,
        features: FeatureBuilder,
        config: TrainConfig,
        *,
        validate: Callable[[], float] | None = None,
        policy: TrainingPolicy | None = None,
    ) -> None:
        self.model = model
        self.features = features
        self.config = config
        self.validate = validate
        self.policy = policy
        self.device = next(model.parameters()).device
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        parameters: list[torch.Tensor] | list[dict[str, object]] = list(self.model.parameters())
        if self.policy is not None:
            parameters = self.policy.parameter_groups(self.model, self.config.learning_rate)
        options = self.config
        if options.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
        if options.optimizer == "adagrad":
            return torch.optim.Adagrad(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
        return torch.optim.SGD(parameters, lr=options.learning_rate, momentum=options.momentum, weight_decay=options.weight_decay)

    def fit(
        self,
        train: Interactions,
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        fingerprint: dict[str, Any] | None = None,
    ) -> TrainingHistory:
        """Train for up to ``config.epochs`` epochs and return the history.

        Parameters
        ----------
        train : Interactions
        checkpoint_dir : path-like or None
            Folder of epoch checkpoints (see :mod:`recx.training.resume`).
            After every epoch the whole training state is written there
            atomically, so a killed run can resume from its last epoch.
        resume : bool, default=False
            Continue from the checkpoint in ``checkpoint_dir``; with the same
            settings and data, the result equals that of an uninterrupted run.
            Without a checkpoint there, training starts at epoch 1. When
            False, a checkpoint already in ``checkpoint_dir`` is removed first.
        fingerprint : dict or None
            Further JSON-ready facts that a resumed run must share with the
            interrupted one, for example a digest of the validation data.

        Raises
        ------
        FloatingPointError
            If the loss becomes NaN or infinite; the weights of the best epoch
            so far (or the initial weights) are restored first, and the last
            epoch checkpoint on disk is left as it was.
        ValueError
            If ``resume`` is set without ``checkpoint_dir``, or the checkpoint
            is damaged or was written with other settings or data.
        """
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir: pass the folder in which the interrupted run wrote its checkpoints.")
        options = self.config
        generator = np.random.default_rng(options.seed)
        entry_users = np.repeat(np.arange(train.n_users, dtype=np.int64), np.diff(train.matrix.indptr))
        entry_items = train.matrix.indices.astype(np.int64)
        if len(entry_items) < 2:
            raise ValueError(f"training needs at least 2 interactions, got {len(entry_items)}.")

        # log q(item): expected count of each item in a batch drawn from the
        # training entries, floored at one occurrence in the whole data.
        counts = np.maximum(train.item_counts(), 1).astype(np.float64)
        batch_size = min(options.batch_size, len(entry_items))
        log_q = torch.from_numpy(np.log(counts / counts.sum() * batch_size).astype(np.float32)).to(self.device)

        history = TrainingHistory()
        best_state = copy.deepcopy(self.model.state_dict())
        epochs_without_gain = 0
        first_epoch = 1
        checkpoints = None if checkpoint_dir is None else EpochCheckpoints(checkpoint_dir, self._fingerprint(train, fingerprint))
        if checkpoints is not None and resume:
            state = self._restore(checkpoints)
            if state is not None:
                generator = restore_generator(state.generator_state, checkpoints.directory)
                history = TrainingHistory.from_dict(state.history)
                best_state = state.best_state
                epochs_without_gain = state.epochs_without_gain
                first_epoch = state.epoch + 1
        elif checkpoints is not None:
            checkpoints.clear()

        # A run that had already stopped early stays stopped.
        last_epoch = first_epoch - 1 if history.stopped_early else options.epochs
        for epoch in range(first_epoch, last_epoch + 1):
            started = time.perf_counter()
            if self.policy is not None:
                self.policy.begin_epoch(self.model, epoch)
            try:
                mean_loss = self._run_epoch(epoch, entry_users, entry_items, log_q, batch_size, generator, best_state)
            except FloatingPointError as error:
                saved_epoch = None if checkpoints is None else checkpoints.latest_epoch
                if saved_epoch is None:
                    raise
                raise FloatingPointError(f"{error} The checkpoint of epoch {saved_epoch} in {checkpoints.directory} is unchanged.") from error
            record = EpochRecord(epoch=epoch, loss=mean_loss, seconds=time.perf_counter() - started)

            if self.validate is not None:
                record.validation = float(self.validate())
                if history.best_validation is None or record.validation > history.best_validation:
                    history.best_validation = record.validation
                    history.best_epoch = epoch
                    best_state = copy.deepcopy(self.model.state_dict())
                    epochs_without_gain = 0
                else:
                    epochs_without_gain += 1
            else:
                history.best_epoch = epoch
                best_state = copy.deepcopy(self.model.state_dict())
            history.epochs.append(record)
            logger.info(
                "epoch %d/%d: loss %.4f%s (%.1f s)",
                epoch,
                options.epochs,
                mean_loss,
                "" if record.validation is None else f", validation ndcg@{options.eval_k} {record.validation:.4f}",
                record.seconds,
            )
            stop = self.validate is not None and options.patience and epochs_without_gain >= options.patience
            if stop:
                history.stopped_early = True
                logger.info("early stop: no validation gain for %d epochs; keeping epoch %d", options.patience, history.best_epoch)
            if checkpoints is not None:
                self._save_checkpoint(checkpoints, epoch, generator, history, best_state, epochs_without_gain)
            if stop:
                break

        self.model.load_state_dict(best_state)
        return history

    # ------------------------------------------------------------- checkpoints

    def _fingerprint(self, train: Interactions, extra: dict[str, Any] | None) -> dict[str, Any]:
        """Describe what must not change between an interrupted run and its resumption."""
        training = {key: value for key, value in self.config.to_dict().items() if key not in RESUMABLE_CHANGES}
        return {
            "model": self.model.config.to_dict(),
            "training": training,
            "data": {"train": interactions_digest(train), **(extra or {})},
            # NOTE: only the policy's class is compared; other settings of the same policy class are not detected.
            "policy": None if self.policy is None else type(self.policy).__qualname__,
        }

    def _restore(self, checkpoints: EpochCheckpoints) -> TrainingState | None:
        """Load the latest checkpoint into the model, optimiser and torch RNG; None when there is none."""
        state = checkpoints.load(device=self.device)
        if state is None:
            logger.warning("no checkpoint in %s to resume from; training starts at epoch 1", checkpoints.directory)
            return None
        if self.policy is not None:
            # Replays the policy's per-epoch changes (such as frozen parameters)
            # in order; the saved weights are loaded over any change to values.
            for epoch in range(1, state.epoch + 1):
                self.policy.begin_epoch(self.model, epoch)
        self.model.load_state_dict(state.model_state)
        restore_optimizer(self.optimizer, state.optimizer_state, checkpoints.directory)
        torch.set_rng_state(state.torch_rng_state)
        if state.cuda_rng_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state.cuda_rng_states)
        logger.info("resuming from the checkpoint of epoch %d in %s", state.epoch, checkpoints.directory)
        return state

    def _save_checkpoint(
        self,
        checkpoints: EpochCheckpoints,
        epoch: int,
        generator: np.random.Generator,
        history: TrainingHistory,
        best_state: dict[str, torch.Tensor],
        epochs_without_gain: int,
    ) -> None:
        model_state = self.model.state_dict()
        state = TrainingState(
            epoch=epoch,
            history=history.to_dict(),
            epochs_without_gain=epochs_without_gain,
            model_state=model_state,
            # The same object marks "best is this epoch", so the weights are stored once.
            best_state=model_state if history.best_epoch == epoch else best_state,
            optimizer_state=self.optimizer.state_dict(),
            generator_state=generator.bit_generator.state,
            torch_rng_state=torch.get_rng_state(),
            cuda_rng_states=torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            fingerprint=checkpoints.fingerprint,
        )
        checkpoints.save(state)

    def _run_epoch(
        self,
        epoch: int,
        entry_users: np.ndarray,
        entry_items: np.ndarray,
        log_q: torch.Tensor,
        batch_size: int,
        generator: np.random.Generator,
        best_state: dict[str, torch.Tensor],
    ) -> float:
        options = self.config
        self.model.train()
        order = generator.permutation(len(entry_items))
        # A final batch of one example has no in-batch negative; it is dropped.
        n_batches = max(1, len(order) // batch_size + (1 if len(order) % batch_size >= 2 else 0))
        total, steps = 0.0, 0
        progress = tqdm(range(n_batches), desc=f"epoch {epoch}", leave=False, disable=not options.show_progress, unit="batch")
        for step in progress:
            positions = order[step * batch_size : (step + 1) * batch_size]
            loss = self._loss(entry_users[positions], entry_items[positions], positions, log_q, generator)
            if self.policy is not None:
                loss = loss + self.policy.penalty(self.model)
            if not torch.isfinite(loss):
                self.model.load_state_dict(best_state)
                raise FloatingPointError(
                    f"training diverged: the loss is {loss.item()} at epoch {epoch}, step {step + 1}. "
                    f"The best weights so far were restored. Lower the learning rate (now {options.learning_rate})."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            steps += 1
            progress.set_postfix(loss=f"{total / steps:.4f}")
        progress.close()
        return total / max(steps, 1)

    def _content_softmax(
        self,
        user_embeddings: torch.Tensor,
        item_embeddings: torch.Tensor,
        item_input: object,
        item_ids: torch.Tensor,
        batch_log_q: torch.Tensor | None,
        content_weight: float,
        uniform: tuple[torch.Tensor | None, torch.Tensor | None, float | None],
    ) -> torch.Tensor:
        """Softmax over both views of each item: full (id and content) and content only.

        Items without training interactions are served from their content
        alone, while the others keep their id embedding. For the two kinds
        to compete on one scale, each loss scores its positive against both
        views of the other items: the full view's loss plus
        ``content_weight`` times the content view's loss. Uniform negatives,
        when configured, join both losses.
        """
        content_embeddings = self.model.item_tower(item_input, content_only=True)
        uniform_embeddings, uniform_ids, uniform_log_q = uniform

        def loss(positives: torch.Tensor, other_view: torch.Tensor) -> torch.Tensor:
            negatives, negative_ids, negative_log_q = other_view, item_ids, batch_log_q
            if uniform_embeddings is not None and uniform_ids is not None:
                negatives = torch.cat([negatives, uniform_embeddings])
                negative_ids = torch.cat([negative_ids, uniform_ids])
                if negative_log_q is not None and uniform_log_q is not None:
                    negative_log_q = torch.cat([negative_log_q, torch.full((len(uniform_ids),), uniform_log_q, device=negatives.device)])
            return sampled_softmax_loss(
                user_embeddings,
                positives,
                item_ids,
                item_log_q=batch_log_q,
                negative_embeddings=negatives,
                negative_ids=negative_ids,
                negative_log_q=negative_log_q,
            )

        return loss(item_embeddings, content_embeddings) + content_weight * loss(content_embeddings, item_embeddings)

    def _loss(
        self,
        users: np.ndarray,
        items: np.ndarray,
        positions: np.ndarray,
        log_q: torch.Tensor,
        generator: np.random.Generator,
    ) -> torch.Tensor:
        options = self.config
        n_items = self.model.config.n_items
        user_input = self.features.user_features(users, target_positions=positions, generator=generator).to(self.device)
        item_input = self.features.item_features(items).to(self.device)
        user_embeddings = self.model.user_tower(user_input)
        item_embeddings = self.model.item_tower(item_input)
        item_ids = torch.from_numpy(items).to(self.device)
        n_negatives = options.resolved_negatives

        if options.loss == "softmax":
            batch_log_q = log_q[item_ids] if options.logq_correction else None
            negative_embeddings = negative_ids = negative_log_q = None
            if n_negatives:
                sampled = generator.integers(0, n_items, size=n_negatives)
                negative_embeddings = self.model.item_tower(self.features.item_features(sampled).to(self.device))
                negative_ids = torch.from_numpy(sampled).to(self.device)
                negative_log_q = uniform_log_q(n_negatives, n_items) if options.logq_correction else None
            content_weight = self.model.config.content_weight
            if not (content_weight and self.model.config.text_dim):
                return sampled_softmax_loss(
                    user_embeddings,
                    item_embeddings,
                    item_ids,
                    item_log_q=batch_log_q,
                    negative_embeddings=negative_embeddings,
                    negative_ids=negative_ids,
                    negative_log_q=negative_log_q,
                )
            return self._content_softmax(user_embeddings, item_embeddings, item_input, item_ids, batch_log_q, content_weight, (negative_embeddings, negative_ids, negative_log_q))

        # BPR and BCE: score each positive against its own uniform negatives.
        sampled = generator.integers(0, n_items, size=(len(items), n_negatives))
        negative_embeddings = self.model.item_tower(self.features.item_features(sampled.reshape(-1)).to(self.device))
        negative_embeddings = negative_embeddings.view(len(items), n_negatives, -1)
        positive_scores = (user_embeddings * item_embeddings).sum(dim=1)
        negative_scores = torch.einsum("bd,bnd->bn", user_embeddings, negative_embeddings)
        if options.loss == "bpr":
            return bpr_loss(positive_scores, negative_scores)
        return bce_loss(positive_scores, negative_scores)


def count_parameters(model: torch.nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
