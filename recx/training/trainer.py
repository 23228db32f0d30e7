"""The training loop of the two-tower model."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from recx.data.interactions import Interactions
from recx.losses import bce_loss, bpr_loss, sampled_softmax_loss, uniform_log_q
from recx.models.features import FeatureBuilder
from recx.models.two_tower import TwoTowerModel
from recx.training.config import TrainConfig

logger = logging.getLogger(__name__)


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
    ) -> None:
        self.model = model
        self.features = features
        self.config = config
        self.validate = validate
        self.device = next(model.parameters()).device
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        parameters = list(self.model.parameters())
        options = self.config
        if options.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
        if options.optimizer == "adagrad":
            return torch.optim.Adagrad(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)
        return torch.optim.SGD(parameters, lr=options.learning_rate, momentum=options.momentum, weight_decay=options.weight_decay)

    def fit(self, train: Interactions) -> TrainingHistory:
        """Train for up to ``config.epochs`` epochs and return the history.

        Raises
        ------
        FloatingPointError
            If the loss becomes NaN or infinite; the weights of the best epoch
            so far (or the initial weights) are restored first.
        """
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
        for epoch in range(1, options.epochs + 1):
            started = time.perf_counter()
            mean_loss = self._run_epoch(epoch, entry_users, entry_items, log_q, batch_size, generator, best_state)
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
            if self.validate is not None and options.patience and epochs_without_gain >= options.patience:
                history.stopped_early = True
                logger.info("early stop: no validation gain for %d epochs; keeping epoch %d", options.patience, history.best_epoch)
                break

        self.model.load_state_dict(best_state)
        return history

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
            negative_embeddings = negative_ids = None
            if n_negatives:
                sampled = generator.integers(0, n_items, size=n_negatives)
                negative_embeddings = self.model.item_tower(self.features.item_features(sampled).to(self.device))
                negative_ids = torch.from_numpy(sampled).to(self.device)
            return sampled_softmax_loss(
                user_embeddings,
                item_embeddings,
                item_ids,
                item_log_q=log_q[item_ids] if options.logq_correction else None,
                negative_embeddings=negative_embeddings,
                negative_ids=negative_ids,
                negative_log_q=uniform_log_q(n_negatives, n_items) if (n_negatives and options.logq_correction) else None,
            )

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
