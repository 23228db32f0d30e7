"""Training options, kept apart from the loop that reads them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from recx.losses import LOSSES

OPTIMIZERS: tuple[str, ...] = ("adam", "adagrad", "sgd")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Options of :class:`~recx.training.Trainer`.

    Attributes
    ----------
    epochs : int, default=20
        Passes over the training interactions (fewer with early stopping).
    batch_size : int, default=1024
        Positive (user, item) examples per step. With the softmax loss this
        is also the number of in-batch negatives.
    learning_rate : float, default=0.003
    optimizer : {"adam", "adagrad", "sgd"}, default="adam"
    momentum : float, default=0.9
        Momentum of SGD; ignored by the other optimisers.
    weight_decay : float, default=0.0
        L2 penalty applied by the optimiser to every parameter.
    loss : {"softmax", "bpr", "bce"}, default="softmax"
        In-batch sampled softmax, or a pairwise/pointwise loss on uniformly
        sampled negatives.
    logq_correction : bool, default=True
        Subtract log sampling probability from in-batch logits (softmax only).
    negatives : int or None, default=None
        Uniformly sampled negatives: shared by the whole batch for softmax
        (default 0), per positive for BPR and BCE (default 4).
    max_history : int or None, default=10
        About how many history items one training example samples from the
        user's bag (inference uses the whole bag). Small bags act as strong
        input dropout: on the MovieLens benchmarks 10 scored higher validation
        NDCG@20 than 20, 50 and 200.
    patience : int, default=3
        Epochs without a better validation metric before training stops;
        0 disables early stopping.
    eval_k : int, default=20
        Cut-off of the validation NDCG used for early stopping.
    seed : int, default=0
        Seeds model initialisation, shuffling and negative sampling.
    device : {"auto", "cpu", "cuda"}, default="auto"
        "auto" uses CUDA when a device is present.
    show_progress : bool, default=True
        Show a progress bar per epoch.
    """

    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 0.003
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    loss: str = "softmax"
    logq_correction: bool = True
    negatives: int | None = None
    max_history: int | None = 10
    patience: int = 3
    eval_k: int = 20
    seed: int = 0
    device: str = "auto"
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid option and how to fix it."""
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {self.batch_size!r}. In-batch negatives need at least two examples per batch.")
        if not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}. Values near 0.001 to 0.01 suit Adam.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"invalid optimizer {self.optimizer!r}: expected one of {list(OPTIMIZERS)}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"invalid loss {self.loss!r}: expected one of {list(LOSSES)}.")
        if self.negatives is not None and (not isinstance(self.negatives, int) or self.negatives < 0):
            raise ValueError(f"negatives must be a non-negative integer or None, got {self.negatives!r}.")
        if self.loss in ("bpr", "bce") and self.negatives == 0:
            raise ValueError(f"the {self.loss} loss needs sampled negatives: set negatives >= 1 (or leave it unset for 4).")
        if self.max_history is not None and (not isinstance(self.max_history, int) or self.max_history <= 0):
            raise ValueError(f"max_history must be a positive integer or None, got {self.max_history!r}.")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {self.patience!r}.")
        if not isinstance(self.eval_k, int) or self.eval_k <= 0:
            raise ValueError(f"eval_k must be a positive integer, got {self.eval_k!r}.")
        if self.device not in DEVICES:
            raise ValueError(f"invalid device {self.device!r}: expected one of {list(DEVICES)}.")

    @property
    def resolved_negatives(self) -> int:
        """Number of uniform negatives after applying the per-loss default."""
        if self.negatives is not None:
            return self.negatives
        return 0 if self.loss == "softmax" else 4

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainConfig:
        """Build options from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; valid settings are {sorted(known)}.")
        return cls(**payload)
