"""Training losses for retrieval: sampled softmax with logQ correction, BPR and BCE.

Shapes: ``B`` examples in a batch, ``N`` extra sampled negatives, ``O`` the
embedding dimension. Scores are inner products of user and item embeddings
(the towers already apply the temperature).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("softmax", "bpr", "bce")


def sampled_softmax_loss(
    user_embeddings: torch.Tensor,
    item_embeddings: torch.Tensor,
    item_ids: torch.Tensor,
    *,
    item_log_q: torch.Tensor | None = None,
    negative_embeddings: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    negative_log_q: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over in-batch (and optionally uniformly sampled) negatives.

    Row ``i`` of the logit matrix scores user ``i`` against every item of the
    batch; the item on the diagonal is its positive. In-batch negatives are
    drawn in proportion to popularity, so popular items are over-penalised.
    Subtracting ``log q(j)``, the log of item ``j``'s expected count among the
    candidates, corrects this sampling bias (Yi et al., "Sampling-Bias-Corrected
    Neural Modeling for Large Corpus Item Recommendations", RecSys 2019).
    Uniform negatives (mixed negative sampling, Yang et al., WWW 2020) add tail
    items, each with the constant correction ``negative_log_q``.

    Where the same item appears at several positions of the batch (or among
    the uniform negatives), the copies other than the positive are masked so
    the model is not pushed away from its own target.

    Parameters
    ----------
    user_embeddings : torch.Tensor of shape (B, O)
    item_embeddings : torch.Tensor of shape (B, O)
        Positive item of each user, row-aligned with ``user_embeddings``.
    item_ids : torch.Tensor of shape (B,), int64
        Item indices of the positives, used to mask accidental hits.
    item_log_q : torch.Tensor of shape (B,) or None
        ``log`` of each positive's expected count in a batch; None disables
        the correction.
    negative_embeddings : torch.Tensor of shape (N, O) or None
    negative_ids : torch.Tensor of shape (N,), int64, or None
    negative_log_q : float, torch.Tensor of shape (N,), or None
        ``log(N / n_items)`` for uniform negatives, or one correction per
        negative when the negatives are another view of the batch's items.

    Returns
    -------
    torch.Tensor
        Scalar mean cross-entropy.
    """
    if user_embeddings.shape != item_embeddings.shape:
        raise ValueError(f"user and item embeddings must have the same shape, got {tuple(user_embeddings.shape)} and {tuple(item_embeddings.shape)}.")
    logits = user_embeddings @ item_embeddings.T
    if item_log_q is not None:
        logits = logits - item_log_q.unsqueeze(0)
    batch = logits.shape[0]
    diagonal = torch.eye(batch, dtype=torch.bool, device=logits.device)
    accidental = (item_ids.unsqueeze(0) == item_ids.unsqueeze(1)) & ~diagonal
    logits = logits.masked_fill(accidental, float("-inf"))

    logits = append_negative_logits(logits, user_embeddings, item_ids, negative_embeddings, negative_ids, negative_log_q)

    targets = torch.arange(batch, device=logits.device)
    return F.cross_entropy(logits, targets)


def append_negative_logits(
    logits: torch.Tensor,
    user_embeddings: torch.Tensor,
    item_ids: torch.Tensor,
    negative_embeddings: torch.Tensor | None,
    negative_ids: torch.Tensor | None,
    negative_log_q: float | torch.Tensor | None,
) -> torch.Tensor:
    """Append the (B, N) logits of extra negatives to ``logits``, masking negatives equal to each row's positive."""
    if negative_embeddings is None:
        return logits
    if negative_ids is None:
        raise ValueError("negative_ids are required with negative_embeddings, to mask negatives equal to the positive.")
    negative_logits = user_embeddings @ negative_embeddings.T
    if negative_log_q is not None:
        negative_logits = negative_logits - negative_log_q
    negative_logits = negative_logits.masked_fill(item_ids.unsqueeze(1) == negative_ids.unsqueeze(0), float("-inf"))
    return torch.cat([logits, negative_logits], dim=1)


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: ``mean(-log sigmoid(s_pos - s_neg))``.

    Parameters
    ----------
    positive_scores : torch.Tensor of shape (B,)
    negative_scores : torch.Tensor of shape (B, M)
        ``M`` sampled negatives per positive.
    """
    _check_pairwise(positive_scores, negative_scores)
    return -F.logsigmoid(positive_scores.unsqueeze(1) - negative_scores).mean()


def bce_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with label 1 for positives and 0 for sampled negatives.

    The positive and negative terms are averaged separately and added, so
    the number of negatives per positive does not change the weight of the
    positives. Shapes as in :func:`bpr_loss`.
    """
    _check_pairwise(positive_scores, negative_scores)
    positive = F.binary_cross_entropy_with_logits(positive_scores, torch.ones_like(positive_scores))
    negative = F.binary_cross_entropy_with_logits(negative_scores, torch.zeros_like(negative_scores))
    return positive + negative


def uniform_log_q(n_negatives: int, n_items: int) -> float:
    """Return ``log`` of each item's expected count among ``n_negatives`` uniform draws."""
    return math.log(n_negatives / n_items)


def _check_pairwise(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> None:
    # (B,) against (B, M): a (B, 1) positive would broadcast silently to (B, B).
    if positive_scores.dim() != 1 or negative_scores.dim() != 2 or negative_scores.shape[0] != positive_scores.shape[0]:
        raise ValueError(
            f"expected positive scores of shape (B,) and negative scores of shape (B, M), "
            f"got {tuple(positive_scores.shape)} and {tuple(negative_scores.shape)}."
        )
