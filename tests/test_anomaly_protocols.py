"""experiments/anomaly_protocols.py: the papers' selection beside the honest one, and a reading
against chance. Device: CPU (no model: readings made up here, scores with known ranks)."""

from __future__ import annotations

import argparse
import contextlib
import copy

import numpy as np
import pytest
import torch

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
    script = load_script("experiments/script.py")
    for text in ("inf", "nan", "-1", "0"):  # a sigma, a step size, a rate: finite and > 0
        with pytest.raises(Exception, match="must be a finite number > 0|must be a number > 0"):
            script.positive_float(text)
    assert script.positive_float("0.1") == 0.1


def test_chance_is_the_splits_anomaly_share_not_a_half() -> None:
    """CPU. "AUPRC minus chance" subtracts the split's anomaly rate (0.4 here), not 0.5."""
    targets = np.array([True, False, False, True, False])
    values = {name: np.array([5.0, 1.0, 2.0, 3.0, 4.0]) for name in protocols.TERMS}
    reading = protocols.reading(values, targets)
    assert reading["score"]["auprc_minus_chance"] == pytest.approx(reading["score"]["auprc"] - 0.4, abs=1e-4)


def test_damcs_official_sigma_is_0_1_for_held_out_1_and_1_for_the_other_digits() -> None:
    """CPU. The README's command scores held-out 1 with the chain's likelihood at sigma 0.1, every
    other digit at the default 1.0."""
    assert protocols.damc_official_sigma(1) == 0.1
    assert {protocols.damc_official_sigma(digit) for digit in (4, 5, 7, 9)} == {1.0}


class OfficialModel:
    """What the official protocol reads of a DAMC model: its ``infer`` call and the sigma in force."""

    evaluation_sampler = object()

    def __init__(self) -> None:
        self.sigma = 1.0
        self.seen: dict = {}
        owner = self

        class Decoder:
            @contextlib.contextmanager
            def observation_noise(self, sigma: float):
                owner.sigma, trained = sigma, owner.sigma
                yield
                owner.sigma = trained

        self.decoder = Decoder()

    def infer(self, x, *, start, sampler, generator):
        self.seen = {"start": start, "sampler": sampler, "sigma": self.sigma}
        return x


def test_the_official_refinement_is_5_noise_free_steps_of_0_1_from_the_amortizer_at_the_digits_sigma() -> None:
    """CPU. DAMC's ``eval_anomaly_det.py``: ``Q(x)`` refined by 5 Langevin steps of size 0.1 with no
    noise, the likelihood at :func:`damc_official_sigma` during the chain and the trained one after."""
    model = OfficialModel()
    protocols.damc_official_latents(model, torch.zeros(2, 3), 1, torch.Generator())
    sampler = model.seen["sampler"]
    assert model.seen["start"] == "amortizer" and model.seen["sigma"] == 0.1 and model.sigma == 1.0
    assert (sampler.n_steps, sampler.step_size, sampler.noise) == (5, 0.1, 0.0)


class TermsModel:
    """``anomaly_terms`` that scores each example by its first pixel."""

    device = torch.device("cpu")

    def anomaly_terms(self, x, z, samples):
        return {name: x[:, 0] for name in protocols.TERMS}


def test_the_held_out_digit_is_the_positive_class() -> None:
    """CPU. In ``split_terms`` the anomalies (the targets 1) are the held-out digit's examples."""
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    loader = [(x, torch.tensor([4, 7, 4, 1]))]
    values, targets = protocols.split_terms(TermsModel(), loader, 4, lambda m, x, d, g: x, seed=0)
    assert targets.tolist() == [True, False, True, False]
    assert values["score"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_the_honest_value_is_the_test_reading_at_the_checkpoint_the_chooser_picks() -> None:
    """CPU. ``value`` is the test split's AUPRC (never the validation reading it was selected on) at
    the checkpoint of the best validation AUPRC; for DAMC's official protocol the checkpoint the
    recipe's readings choose (``selected_by``), not the official readings' own best."""

    def full(update: int, val: float, test: float) -> dict:
        reading = {"auprc": None, "auroc": 0.6, "auprc_minus_chance": None}
        split = {"anomaly_rate": 0.3, "score": dict(reading)}
        r = {"update": update, "val": copy.deepcopy(split), "test": copy.deepcopy(split)}
        r["val"]["score"].update(auprc=val, auprc_minus_chance=val - 0.3)
        r["test"]["score"].update(auprc=test, auprc_minus_chance=test - 0.3)
        return r

    config = {
        "model": {"class_path": "lebm.models.DAMC", "init_args": {"decoder": {"init_args": {"net": {"init_args": {}}}}}}
    }
    config["data"] = {"init_args": {"batch_size": 100, "anomaly_classes": [4], "val_fraction": 0.2, "pool": "full"}}
    args = argparse.Namespace(experiment="x", last_k=2, run="runs/x", max_examples=None)
    no_model = {"test": {"auprc": 0.35, "best": "untrained_level", "auroc": 0.5}}
    rows = [full(50, 0.50, 0.20), full(100, 0.40, 0.90)]
    record = protocols.protocol_record(config, config["data"], "recipe", rows, args, no_model)
    assert record["value"] == 0.20 and record["validation_selected"]["update"] == 50  # not 0.50, the validation's
    recipe_readings = [full(50, 0.10, 0.20), full(100, 0.60, 0.30)]
    official = protocols.protocol_record(config, config["data"], "damc_official", rows, args, no_model, recipe_readings)
    assert official["value"] == 0.90 and official["validation_selected"]["update"] == 100  # the recipe chose 100
    both = {"recipe": recipe_readings, "damc_official": rows}  # as main() scores them, the recipe's first
    recipe, official = protocols.protocol_records(config, config["data"], both, args, no_model)
    assert official["protocol"] == "damc_official" and official["validation_selected"]["update"] == 100
    assert official["best_of_test"]["update"] == 100 and recipe["validation_selected"]["update"] == 100
    (alone,) = protocols.protocol_records(config, config["data"], {"damc_official": rows}, args, no_model)
    assert alone["validation_selected"]["update"] == 50  # no recipe readings: its own


def test_the_last_k_mean_reads_the_last_readings_and_the_margin_the_test_splits_no_model_score() -> None:
    """The last-k mean averages the k readings of the last updates (not the first), naming them; a
    record's margin over the no-model score subtracts the test split's baseline, not validation's."""
    rows = [row(100, 0.2, 0.10), row(200, 0.3, 0.20), row(300, 0.9, 0.60), row(400, 0.1, 0.80)]
    for r in rows:
        r["test"]["score"]["auprc_minus_chance"] = 0.0
        r["test"]["anomaly_rate"] = 0.34
    last = protocols.selections(rows, last_k=2)["last_mean"]
    assert last["updates"] == [300, 400] and last["test_auprc"] == pytest.approx(0.70)
    config = {
        "model": {
            "class_path": "lebm.models.LatentEBM",
            "init_args": {"decoder": {"init_args": {"net": {"init_args": {"ngf": 8}}}}},
        },
        "data": {"init_args": {"batch_size": 10}},
        "seed_everything": 1,
    }
    data = {"init_args": {"anomaly_classes": [4], "val_fraction": 0.2, "pool": "full"}}
    args = argparse.Namespace(last_k=2, experiment="mnist_anomaly_selections", run="runs/x", max_examples=None)
    no_model = {"val": {"auprc": 0.95}, "test": {"auprc": 0.25}}
    record = protocols.protocol_record(config, data, "recipe", rows, args, no_model)
    assert record["value"] == 0.60 and record["auprc_minus_no_model"] == pytest.approx(0.60 - 0.25)
