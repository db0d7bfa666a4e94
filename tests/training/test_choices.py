"""One check for a string option (``lebm.training.choices.check_choice``): one message that names the
option, the value, the accepted values and, for a near miss, a "did you mean"; every method's
string options go through it. Device: CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lebm.models import DualMCMC, JointHierarchicalEBM, MultiStageNCE, ProductOfRatiosPrior, TiltedGaussianPrior
from lebm.nets import EnergyMLP, MLPEncoder
from lebm.training.choices import check_choice
from lebm.training.recovery import RecoveryPolicy
from tests.models.cases import DATA, LATENT, toy_decoder


def test_an_accepted_value_is_returned() -> None:
    assert check_choice("model.init_args.mode", "b", ("a", "b")) == "b"
    assert check_choice("model.init_args.mode", "a", {"a": "the first", "b": "the second"}) == "a"


def test_the_message_names_the_option_the_value_the_choices_and_the_near_miss() -> None:
    with pytest.raises(ValueError) as error:
        check_choice("model.init_args.update_order", "ebm_frist", ("generator_first", "ebm_first"))
    assert str(error.value) == (
        "model.init_args.update_order must be one of 'generator_first', 'ebm_first'; "
        "got 'ebm_frist' (did you mean 'ebm_first'?)"
    )


def test_described_choices_are_described_and_a_far_value_gets_no_guess() -> None:
    with pytest.raises(ValueError) as error:
        check_choice("snapshot_device", "disk", {"same": "the model's device", "cpu": "host memory"})
    assert str(error.value) == (
        "snapshot_device must be one of 'same' (the model's device), 'cpu' (host memory); got 'disk'"
    )
    with pytest.raises(ValueError, match=r"got 3$"):  # not a string: no guess, no crash
        check_choice("mode", 3, ("a", "b"))


def dual_mcmc(**kwargs: Any) -> DualMCMC:
    return DualMCMC(toy_decoder(), EnergyMLP(DATA, hidden=8), MLPEncoder([DATA], LATENT, hidden=8), **kwargs)


def hierarchical(**kwargs: Any) -> JointHierarchicalEBM:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8))
    return JointHierarchicalEBM(toy_decoder(), prior, MLPEncoder([DATA], LATENT, hidden=8), **kwargs)


def multistage(**kwargs: Any) -> MultiStageNCE:
    return MultiStageNCE(toy_decoder(), ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=8), n_stages=2), **kwargs)


@pytest.mark.parametrize(
    ("build", "option", "given", "guess"),
    [
        (dual_mcmc, "ebm_negatives", "revised_agian", "revised_again"),
        (dual_mcmc, "generator_loss", "sse2", "sse"),
        (dual_mcmc, "evaluation_batchnorm", "runing", "running"),
        (hierarchical, "update_order", "ebm_frist", "ebm_first"),
        (multistage, "earlier_ratios", "finetun", "finetune"),
        (multistage, "decoder_training", "first-stage", "first_stage"),
        (multistage, "posterior_prior", "currnet", "current"),
        (multistage, "anomaly_score", "jiont", "joint"),
    ],
)
def test_every_methods_string_options_get_the_one_message(build: Any, option: str, given: str, guess: str) -> None:
    with pytest.raises(ValueError) as error:
        build(**{option: given})
    message = str(error.value)
    assert message.startswith(f"model.init_args.{option} must be one of ")
    assert f"got {given!r} (did you mean {guess!r}?)" in message


def test_the_posterior_start_and_the_recovery_snapshot_device_get_it_too() -> None:
    model = dual_mcmc()
    with pytest.raises(ValueError, match=r"posterior start must be one of 'noise' .*got 'means' \(did you mean 'mean'"):
        model.infer(torch.zeros(2, DATA), start="means")
    with pytest.raises(ValueError, match=r"snapshot_device must be one of 'same' .*got 'cpus' \(did you mean 'cpu'"):
        RecoveryPolicy(snapshot_device="cpus")
