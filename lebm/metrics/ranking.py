"""Ranking metrics of an anomaly or out-of-distribution score."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def ranking_metrics(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """``(AUPRC, AUROC)`` of ``scores`` (N,) (higher = more anomalous) against 0/1 ``targets`` (N,).

    AUPRC is the average precision (step-wise area, scikit-learn's definition); both are NaN
    when only one class is present (:func:`one_class` tells a caller to warn).
    """
    if one_class(targets):
        return float("nan"), float("nan")
    return float(average_precision_score(targets, scores)), float(roc_auc_score(targets, scores))


def one_class(targets: np.ndarray) -> bool:
    """Whether the 0/1 ``targets`` (N,) hold only one class (ranking metrics are then undefined)."""
    return bool(targets.min() == targets.max())
