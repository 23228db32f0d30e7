"""Fine-tuning policies: which parameters train, when, how fast, and how far from where they started.

Parameters are addressed by group. The groups of a two-tower model are its
embedding tables by name (``user_id``, ``user_history``, ``user_recent``,
``item_id``, ``item_genres``), its MLPs (``user_mlp``, ``item_mlp``) and
the projection of item text (``item_text``). The word ``pretrained`` stands
for every group an initialiser wrote.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from recx.models.two_tower import TwoTowerModel

logger = logging.getLogger(__name__)

#: Every parameter group name a two-tower model can have.
GROUPS: tuple[str, ...] = ("user_id", "user_history", "user_recent", "user_mlp", "item_id", "item_genres", "item_text", "item_mlp")

#: Stands for the groups that an initialiser wrote.
PRETRAINED = "pretrained"


def parameter_group(name: str) -> str:
    """Return the group of a parameter of :class:`TwoTowerModel` from its qualified name."""
    for tower in ("user_tower", "item_tower"):
        prefix = f"{tower}.embeddings.embedding_bags."
        if name.startswith(prefix):
            return name[len(prefix) :].split(".")[0]
    if name.startswith("user_tower.mlp."):
        return "user_mlp"
    if name.startswith("item_tower.mlp."):
        return "item_mlp"
    if name.startswith("item_tower.text_projection."):
        return "item_text"
    raise ValueError(f"parameter {name!r} belongs to no known group; the model has a layer this policy does not know.")


@dataclass
class FineTuning:
    """Fine-tuning policy of a pretrained two-tower model.

    Parameters
    ----------
    freeze : list of str, default=[]
        Groups (or ``"pretrained"``) that do not train at first.
    unfreeze_epoch : int or None, default=None
        First epoch (1-based) in which the frozen groups train; None keeps
        them frozen to the end.
    pretrained_lr_scale : float, default=1.0
        Factor on the learning rate of pretrained groups (below 1 moves
        them more slowly than the layers trained from scratch).
    learning_rates : dict of str to float, default={}
        Learning rate per group, overriding the scale.
    l2_sp : float, default=0.0
        Strength ``alpha`` of the penalty ``alpha * sum ||w - w0||^2`` over
        pretrained parameters, which pulls them toward their starting values
        ``w0`` (L2-SP, Li et al., 2018).

    Examples
    --------
    >>> policy = FineTuning(freeze=["pretrained"], unfreeze_epoch=3, pretrained_lr_scale=0.3)
    """

    freeze: list[str] = field(default_factory=list)
    unfreeze_epoch: int | None = None
    pretrained_lr_scale: float = 1.0
    learning_rates: dict[str, float] = field(default_factory=dict)
    l2_sp: float = 0.0

    def __post_init__(self) -> None:
        self.freeze = list(self.freeze)
        self.learning_rates = dict(self.learning_rates)
        self.validate()
        self._pretrained: set[str] = set()
        self._anchors: dict[str, torch.Tensor] = {}
        self._frozen_now: bool | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first invalid option."""
        known = (*GROUPS, PRETRAINED)
        for name in [*self.freeze, *self.learning_rates]:
            if name not in known:
                raise ValueError(f"unknown parameter group {name!r}: expected one of {list(known)}.")
        if self.unfreeze_epoch is not None and (not isinstance(self.unfreeze_epoch, int) or self.unfreeze_epoch < 1):
            raise ValueError(f"unfreeze_epoch must be a positive integer or None, got {self.unfreeze_epoch!r}.")
        if self.unfreeze_epoch is not None and not self.freeze:
            raise ValueError("unfreeze_epoch is set but freeze is empty: name the groups to freeze first.")
        if not self.pretrained_lr_scale > 0:
            raise ValueError(f"pretrained_lr_scale must be > 0, got {self.pretrained_lr_scale!r}. Freeze a group to stop it training.")
        for name, rate in self.learning_rates.items():
            if not isinstance(rate, (int, float)) or not rate > 0:
                raise ValueError(f"learning rate of group {name!r} must be > 0, got {rate!r}.")
        if not isinstance(self.l2_sp, (int, float)) or self.l2_sp < 0:
            raise ValueError(f"l2_sp must be >= 0, got {self.l2_sp!r}.")

    @property
    def is_default(self) -> bool:
        """True when the policy changes nothing (all groups train at one rate, no penalty)."""
        return not self.freeze and self.pretrained_lr_scale == 1.0 and not self.learning_rates and self.l2_sp == 0

    def bind(self, model: TwoTowerModel, pretrained: set[str]) -> None:
        """Record which groups are pretrained and their starting values (for L2-SP)."""
        self._pretrained = set(pretrained)
        self._frozen_now = None
        self._anchors = {}
        if self.l2_sp:
            for name, parameter in model.named_parameters():
                if parameter_group(name) in self._pretrained:
                    self._anchors[name] = parameter.detach().clone()
        frozen = self._frozen_groups()
        present = {parameter_group(name) for name, _ in model.named_parameters()}
        if self.freeze and not frozen & present:
            logger.warning("freeze=%s names no group of this model; nothing is frozen", self.freeze)
        if present and present <= frozen:
            raise ValueError(
                f"freeze={self.freeze} covers every parameter group of the model ({sorted(present)}), so nothing would train. "
                f"Freeze only some groups, for example the embedding tables {[name for name in sorted(present) if not name.endswith('_mlp')]}."
            )

    def _frozen_groups(self) -> set[str]:
        groups = set(self.freeze) - {PRETRAINED}
        if PRETRAINED in self.freeze:
            groups |= self._pretrained
        return groups

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-ready dict."""
        return {
            "freeze": self.freeze,
            "unfreeze_epoch": self.unfreeze_epoch,
            "pretrained_lr_scale": self.pretrained_lr_scale,
            "learning_rates": self.learning_rates,
            "l2_sp": self.l2_sp,
        }

    # ----------------------------------------------------------- trainer hooks

    def parameter_groups(self, model: TwoTowerModel, learning_rate: float) -> list[dict[str, object]]:
        """Return one optimiser parameter group per model group, each with its ``lr``."""
        by_group: dict[str, list[torch.nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            by_group.setdefault(parameter_group(name), []).append(parameter)
        groups = []
        for group, parameters in by_group.items():
            rate = learning_rate * (self.pretrained_lr_scale if group in self._pretrained else 1.0)
            rate = self.learning_rates.get(group, rate)
            groups.append({"params": parameters, "lr": rate, "name": group})
        return groups

    def begin_epoch(self, model: TwoTowerModel, epoch: int) -> None:
        """Freeze the chosen groups until ``unfreeze_epoch``, then let them train."""
        frozen_groups = self._frozen_groups()
        if not frozen_groups:
            return
        frozen = self.unfreeze_epoch is None or epoch < self.unfreeze_epoch
        if frozen == self._frozen_now:
            return
        for name, parameter in model.named_parameters():
            if parameter_group(name) in frozen_groups:
                parameter.requires_grad_(not frozen)
        self._frozen_now = frozen
        logger.info("epoch %d: groups %s %s", epoch, sorted(frozen_groups), "frozen" if frozen else "unfrozen")

    def penalty(self, model: TwoTowerModel) -> torch.Tensor | float:
        """Return ``l2_sp * sum ||w - w0||^2`` over the pretrained parameters that train."""
        if not self._anchors:
            return 0.0
        total = None
        for name, parameter in model.named_parameters():
            anchor = self._anchors.get(name)
            if anchor is None or not parameter.requires_grad:
                continue
            term = (parameter - anchor).pow(2).sum()
            total = term if total is None else total + term
        return 0.0 if total is None else self.l2_sp * total
