"""Full-ranking evaluation: top-k metrics and the protocol that applies them.

:func:`evaluate` ranks the whole catalogue for every user with test items,
excluding their training items, and averages the metrics of
:mod:`recx.evaluation.metrics` over those users.
"""

from recx.evaluation.evaluate import evaluate, format_metrics_table
from recx.evaluation.metrics import (
    CATALOGUE_METRICS,
    METRICS,
    PER_USER_METRICS,
    average_over_users,
    coverage_at_k,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "CATALOGUE_METRICS",
    "METRICS",
    "PER_USER_METRICS",
    "average_over_users",
    "coverage_at_k",
    "evaluate",
    "format_metrics_table",
    "hit_rate_at_k",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "per_user_metrics",
    "precision_at_k",
    "recall_at_k",
]
