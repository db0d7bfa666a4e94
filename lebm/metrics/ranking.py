"""Ranking metrics of an anomaly or out-of-distribution score."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


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


def trapezoid_auprc(scores: np.ndarray, targets: np.ndarray) -> float:
    """The area under the precision-recall curve by the trapezoid rule, ``auc(recall, precision)``:
    the reading of the code the LEBM papers' anomaly protocol cites (MEG, BiGAN).

    ``scores`` (N,), higher = more anomalous; ``targets`` (N,) 0/1 with anomalies as the positive
    class. The trapezoid interpolates linearly between the curve's points, where the average
    precision of :func:`ranking_metrics` takes steps. On thousands of distinct scores the two
    agree to about 1e-3; tied scores (a saturated energy, rounded values) open a gap in the
    trapezoid's favour (0.57 against 0.63 on 3,000 scores rounded to integers). NaN for one-class
    ``targets``.
    """
    if one_class(targets):
        return float("nan")
    precision, recall, _ = precision_recall_curve(targets, scores)
    return float(auc(recall, precision))
