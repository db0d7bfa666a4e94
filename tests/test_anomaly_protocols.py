"""experiments/anomaly_protocols.py: the papers' selection beside the honest one, and a reading
against chance. Device: CPU (no model: readings made up here, scores with known ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.scripts import load_script

protocols = load_script("experiments/anomaly_protocols.py")


def row(update: int, val: float, test: float) -> dict:
    return {"update": update, "val": {"score": {"auprc": val}}, "test": {"score": {"auprc": test, "auroc": 0.5}}}


def test_the_papers_best_of_n_is_chosen_on_test_and_the_honest_reading_on_validation() -> None:
    """Best of 3 test readings takes the highest test AUPRC; the honest number is the test reading
    at the checkpoint of the highest validation AUPRC; both name the update and N."""
    rows = [row(500, 0.30, 0.41), row(1000, 0.35, 0.33), row(1500, 0.20, 0.38)]
    for r in rows:
        r["test"]["score"]["auprc_minus_chance"] = r["test"]["score"]["auprc"] - 0.388
    chosen = protocols.selections(rows)
    assert (chosen["best_of_test"]["update"], chosen["best_of_test"]["test_auprc"]) == (500, 0.41)
    assert "best of 3 test readings" in chosen["best_of_test"]["how"]
    assert (chosen["validation_selected"]["update"], chosen["validation_selected"]["test_auprc"]) == (1000, 0.33)
    assert chosen["last"]["update"] == 1500


def test_damcs_rescoring_takes_the_checkpoint_its_training_time_evaluation_chose() -> None:
    """DAMC's code keeps the best checkpoint of its training-time evaluation and re-scores it: the
    re-scored readings are read at the checkpoint the other readings choose, not at their own best."""
    rescored = [row(500, 0.1, 0.9), row(1000, 0.1, 0.2)]
    training_time = [row(500, 0.1, 0.3), row(1000, 0.5, 0.6)]
    for r in rescored + training_time:
        r["test"]["score"]["auprc_minus_chance"] = 0.0
    chosen = protocols.selections(rescored, training_time)
    assert (chosen["best_of_test"]["update"], chosen["best_of_test"]["test_auprc"]) == (1000, 0.2)
    assert chosen["validation_selected"]["update"] == 1000


def test_a_reading_states_chance_and_each_terms_class_statistics() -> None:
    """The anomaly share is the chance AUPRC; a score ranking anomalies lowest reads below it, with
    AUROC 0, and each term's class means are those of its values."""
    targets = np.array([True, False, False, True, False])
    values = {
        "score": np.array([0.0, 5.0, 6.0, 1.0, 7.0]),
        "score_reconstruction_term": np.array([0.0, 5.0, 6.0, 1.0, 7.0]),
        "score_prior_term": np.array([4.0, 1.0, 2.0, 6.0, 3.0]),
    }
    reading = protocols.reading(values, targets)
    assert reading["n"] == 5 and reading["anomaly_rate"] == pytest.approx(0.4)
    assert reading["score"]["auroc"] == 0.0 and reading["score"]["auprc_minus_chance"] < 0
    assert reading["prior_term"]["auroc"] == 1.0
    assert reading["prior_term"]["anomaly_mean"] == pytest.approx(5.0)
    assert reading["prior_term"]["normal_mean"] == pytest.approx(2.0)


def test_the_anomaly_runner_refuses_a_zero_budget_before_training() -> None:
    """Device: CPU. ``--max-steps 0`` (and ``--val-every-steps 0``) used to read as "not given" and
    run the recipe's whole budget; now argparse refuses it in one line."""
    runner = load_script("experiments/mnist_anomaly_offline.py")
    with pytest.raises(Exception, match="whole number >= 1"):
        runner.positive_int("0")
    assert runner.positive_int("83") == 83
