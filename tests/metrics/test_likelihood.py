"""The importance-sampled marginal likelihood against exact values on a model small enough to
integrate: a 1-d latent, so ``log p(x) = log ∫ p(x|z) p(z) dz`` and the prior's normaliser are
computed by quadrature on a fine grid."""

from __future__ import annotations

import math

import pytest
import torch

from lebm.metrics.likelihood import importance_sampled_log_likelihood, log_mean_exp, prior_log_normalizer
from tests.helpers.text_cases import (
    BOS,
    EOS,
    PAD,
    quadrature_log_likelihood,
    quadrature_log_normalizer,
    tiny_text_model,
)

SENTENCES = torch.tensor([[BOS, 4, 5, EOS, PAD], [BOS, 6, EOS, PAD, PAD], [BOS, 4, 4, 6, EOS]])


def test_log_mean_exp_matches_a_direct_computation_and_its_error_shrinks() -> None:
    weights = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    assert torch.allclose(log_mean_exp(weights).value, torch.log(weights.exp().mean(1)).double())
    huge = torch.tensor([[1000.0, 1000.0]])  # no overflow
    assert torch.allclose(log_mean_exp(huge).value, torch.tensor([1000.0], dtype=torch.float64))
    generator = torch.Generator().manual_seed(0)
    few = log_mean_exp(torch.randn(1, 100, generator=generator)).std_error
    many = log_mean_exp(torch.randn(1, 10000, generator=generator)).std_error
    assert float(many) < float(few) / 5


def test_the_prior_normaliser_matches_quadrature_within_its_error(one_thread: object) -> None:
    model = tiny_text_model()
    estimate = prior_log_normalizer(model.prior, 200_000, generator=torch.Generator().manual_seed(0))
    exact = quadrature_log_normalizer(model)
    assert abs(exact - 0.5 * math.log(2 * math.pi)) > 0.05  # the tilt matters: not the Gaussian's own
    assert abs(float(estimate.value) - exact) < 4 * float(estimate.std_error) + 1e-3
    gaussian = prior_log_normalizer(tiny_text_model(tilted=False).prior)
    assert float(gaussian.value) == pytest.approx(0.5 * math.log(2 * math.pi)) and float(gaussian.std_error) == 0


@pytest.mark.parametrize("proposal", ["posterior", "prior"])
def test_the_importance_sampled_likelihood_is_within_its_stated_error(proposal: str, one_thread: object) -> None:
    model = tiny_text_model()
    exact = quadrature_log_likelihood(model, SENTENCES)
    normaliser = prior_log_normalizer(model.prior, 200_000, generator=torch.Generator().manual_seed(1))
    estimate = importance_sampled_log_likelihood(
        model, SENTENCES, normaliser, n_samples=2000, proposal=proposal, chunk=500,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    error = (estimate.value - exact).abs()
    assert bool((estimate.std_error < 0.1).all()), estimate.std_error
    assert bool((error < 4 * estimate.std_error + 0.01).all()), (estimate.value, exact, estimate.std_error)


def test_a_proposal_that_ignores_its_density_is_caught() -> None:
    """Mutation guard: the estimate moves when the proposal's log-density is wrong, so the
    within-error test above is sensitive to it."""
    model = tiny_text_model()
    exact = quadrature_log_likelihood(model, SENTENCES[:1])
    normaliser = prior_log_normalizer(model.prior, 50_000, generator=torch.Generator().manual_seed(1))
    narrow = importance_sampled_log_likelihood(
        model, SENTENCES[:1], normaliser, n_samples=500, proposal="posterior", scale=0.3, prior_mixture=0.0,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    # a proposal narrower than the posterior is still consistent, only noisier: it must not beat the exact value
    assert float(narrow.value[0]) < float(exact[0]) + 4 * float(narrow.std_error[0]) + 0.01
