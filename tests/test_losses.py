"""Known-answer tests of the training losses."""

from __future__ import annotations

import math
import re

import pytest
import torch

from recx.losses import bce_loss, bpr_loss, sampled_softmax_loss, uniform_log_q


def _cross_entropy(row: list[float], target: int) -> float:
    finite = [value for value in row if value != float("-inf")]
    return -row[target] + math.log(sum(math.exp(value) for value in finite))


def test_softmax_matches_hand_computed_value() -> None:
    """Two users, two items: the loss is the mean row-wise cross-entropy of U @ V.T."""
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    # Logits: [[0.5, 1.0], [1.0, -2.0]], positives on the diagonal.
    expected = (_cross_entropy([0.5, 1.0], 0) + _cross_entropy([1.0, -2.0], 1)) / 2
    loss = sampled_softmax_loss(users, items, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_softmax_subtracts_log_q_per_column() -> None:
    """logQ correction subtracts log q of the column's item from every row."""
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    log_q = torch.tensor([math.log(0.5), math.log(2.0)])
    rows = [[0.5 - log_q[0].item(), 1.0 - log_q[1].item()], [1.0 - log_q[0].item(), -2.0 - log_q[1].item()]]
    expected = (_cross_entropy(rows[0], 0) + _cross_entropy(rows[1], 1)) / 2
    loss = sampled_softmax_loss(users, items, torch.tensor([0, 1]), item_log_q=log_q)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_softmax_masks_accidental_hits() -> None:
    """A second copy of the positive item in the batch is not a negative."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # Both rows have item 7 as positive: each row's other column is masked, so only the diagonal remains.
    loss = sampled_softmax_loss(users, items, torch.tensor([7, 7]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_softmax_with_uniform_negatives() -> None:
    """Uniform negatives add columns corrected by a constant log q; a negative equal to the positive is masked."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    log_q = math.log(2 / 10)
    # Row 0: in-batch [1, 0]; negatives (ids 1 and 5) [0 - log_q, 1 - log_q] but id 1 is not row 0's positive (0).
    # Row 1: in-batch [0, 1]; negatives [1 - log_q, 0 - log_q], id 1 equals row 1's positive and is masked.
    row0 = [1.0, 0.0, 0.0 - log_q, 1.0 - log_q]
    row1 = [0.0, 1.0, float("-inf"), 0.0 - log_q]
    expected = (_cross_entropy(row0, 0) + _cross_entropy(row1, 1)) / 2
    loss = sampled_softmax_loss(
        users, items, torch.tensor([0, 1]), negative_embeddings=negatives, negative_ids=torch.tensor([1, 5]), negative_log_q=log_q
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_log_q_value() -> None:
    """Each of 1000 items is expected 0.1 times among 100 uniform draws."""
    assert uniform_log_q(100, 1000) == pytest.approx(math.log(0.1))


def test_bpr_known_value() -> None:
    """BPR is the mean of -log sigmoid(positive - negative)."""
    positive = torch.tensor([2.0, 0.0])
    negative = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    differences = [1.0, -1.0, 0.0, 1.0]
    expected = sum(math.log(1 + math.exp(-d)) for d in differences) / 4
    assert bpr_loss(positive, negative).item() == pytest.approx(expected, rel=1e-6)


def test_bce_known_value() -> None:
    """BCE averages the positive and the negative terms separately."""
    positive = torch.tensor([0.0, 1.0])
    negative = torch.tensor([[0.0], [-1.0]])
    positive_term = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    negative_term = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    assert bce_loss(positive, negative).item() == pytest.approx(positive_term + negative_term, rel=1e-6)


def test_pairwise_losses_reject_broadcastable_shapes() -> None:
    """A (B, 1) positive tensor would broadcast to (B, B) silently; it raises instead."""
    message = "expected positive scores of shape (B,) and negative scores of shape (B, M), got (3, 1) and (3, 2)."
    with pytest.raises(ValueError, match=re.escape(message)):
        bpr_loss(torch.zeros(3, 1), torch.zeros(3, 2))
