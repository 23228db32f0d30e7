"""In-batch softmax over the global batch: every rank's users score the items of all ranks.

Each rank has ``b`` examples of a global batch of ``B = b * world_size``.
Gathering the item embeddings of all ranks gives every user the same ``B``
in-batch candidates it would have in one process with batch size ``B``. Each
rank's loss is the mean over its own users. With gradients flowing back
through the gather, and DistributedDataParallel averaging the dense
gradients (TorchRec divides the table gradients by ``world_size`` the same
way), one step equals one single-process step on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recx.distributed.context import DistributedContext
from recx.losses import append_negative_logits


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns each rank the summed gradient of its own rows.

    Every rank's loss depends on every rank's rows, so the gradient of a
    rank's rows is the sum of the gradients all ranks computed for them. The
    backward pass sums with an all-reduce, which every backend (gloo
    included) implements; a reduce-scatter would send less data.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        summed = gradient.contiguous().clone()
        dist.all_reduce(summed)
        return summed[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None, None


def gather_rows(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Concatenate every rank's ``(b, ...)`` tensor in rank order; gradients flow back to each rank's rows."""
    if context.world_size == 1:
        return tensor
    return _GatherRows.apply(tensor, context.rank, context.world_size)


@torch.no_grad()
def gather_values(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Concatenate every rank's ``(b, ...)`` tensor in rank order, without gradients."""
    if context.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def global_batch_softmax_loss(
    user_embeddings: torch.Tensor,
    item_embeddings: torch.Tensor,
    item_ids: torch.Tensor,
    context: DistributedContext,
    *,
    item_log_q: torch.Tensor | None = None,
    negative_embeddings: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    negative_log_q: float | None = None,
) -> torch.Tensor:
    """Softmax of this rank's users over the items of the global batch (and shared uniform negatives).

    The rules are those of :func:`recx.losses.sampled_softmax_loss`, which
    this equals in one process: logQ correction, copies of a user's positive
    elsewhere in the batch masked, uniform negatives with a constant
    correction and masked where they equal the positive.

    Parameters
    ----------
    user_embeddings, item_embeddings : torch.Tensor of shape (b, O)
        This rank's examples; row ``i`` of the items is user ``i``'s positive.
    item_ids : torch.Tensor of shape (b,), int64
    context : DistributedContext
    item_log_q : torch.Tensor of shape (b,) or None
    negative_embeddings : torch.Tensor of shape (N, O) or None
        Uniform negatives shared by the global batch (the same on every rank).
    negative_ids : torch.Tensor of shape (N,), int64, or None
    negative_log_q : float or None

    Returns
    -------
    torch.Tensor
        Scalar mean cross-entropy over this rank's ``b`` users.
    """
    if user_embeddings.shape != item_embeddings.shape:
        raise ValueError(f"user and item embeddings must have the same shape, got {tuple(user_embeddings.shape)} and {tuple(item_embeddings.shape)}.")
    local = user_embeddings.shape[0]
    all_items = gather_rows(item_embeddings, context)
    all_ids = gather_values(item_ids, context)
    logits = user_embeddings @ all_items.T
    if item_log_q is not None:
        logits = logits - gather_values(item_log_q, context).unsqueeze(0)

    # The positive of local user i sits at column rank * b + i of the global batch.
    rows = torch.arange(local, device=logits.device)
    targets = rows + context.rank * local
    accidental = item_ids.unsqueeze(1) == all_ids.unsqueeze(0)
    accidental[rows, targets] = False
    logits = logits.masked_fill(accidental, float("-inf"))

    logits = append_negative_logits(logits, user_embeddings, item_ids, negative_embeddings, negative_ids, negative_log_q)
    return F.cross_entropy(logits, targets)
