"""The two readings of AUPRC (device: CPU): average precision and the trapezoid rule, on curves whose
areas are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lebm.metrics import ranking_metrics, trapezoid_auprc


def test_both_readings_on_a_curve_worked_out_by_hand() -> None:
    """Scores 4 > 3 > 2 > 1 on labels 1, 0, 1, 0. The curve's points (recall, precision): (0, 1),
    (0.5, 1), (0.5, 0.5), (1, 2/3). Average precision: 0.5 x 1 + 0.5 x 2/3 = 5/6. Trapezoid: 0.5 x 1
    + 0 + 0.5 x (0.5 + 2/3) / 2 = 19/24."""
    scores, targets = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.0, 0.0, 1.0, 0.0])
    average_precision, auroc = ranking_metrics(scores, targets)
    assert average_precision == pytest.approx(5 / 6)
    assert trapezoid_auprc(scores, targets) == pytest.approx(19 / 24)
    assert auroc == pytest.approx(0.75)


def test_a_perfect_ranking_reads_one_and_one_class_reads_nan() -> None:
    scores, targets = np.array([0.9, 0.8, 0.1, 0.2]), np.array([1.0, 1.0, 0.0, 0.0])
    assert trapezoid_auprc(scores, targets) == pytest.approx(1.0)
    assert math.isnan(trapezoid_auprc(scores, np.zeros(4)))


def test_anomalies_are_the_positive_class() -> None:
    """Reversing the scores (normal digits scored high) must lower the area: the trapezoid reads
    the anomalies' precision, not the normal digits'."""
    rng = np.random.default_rng(0)
    targets = (rng.random(500) < 0.35).astype(float)
    scores = rng.normal(size=500) + 1.5 * targets
    assert trapezoid_auprc(scores, targets) > 0.7 > 0.4 > trapezoid_auprc(-scores, targets)
