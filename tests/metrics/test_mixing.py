"""Rank-normalised split R-hat and bulk ESS (``lebm.metrics.mixing``) on draws whose answer is known.

Device: CPU. The draws come from torch's global RNG (seeded per test by conftest, ``LEBM_TEST_SEED``
reruns them on other draws): the tolerances hold for any seed, set by the spread of the estimators
over seeds, not by one draw.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lebm.metrics import bulk_ess, split_rhat
from lebm.metrics.mixing import autocorrelation, ess, rank_normalize, rhat, split_chains


def normal(m: int, t: int) -> np.ndarray:
    return torch.randn(m, t, dtype=torch.float64).numpy()


def ar1(m: int, t: int, rho: float) -> np.ndarray:
    """``m`` stationary AR(1) chains ``x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t`` of unit variance."""
    noise = normal(m, t)
    x = np.empty_like(noise)
    x[:, 0] = noise[:, 0]
    for step in range(1, t):
        x[:, step] = rho * x[:, step - 1] + math.sqrt(1 - rho**2) * noise[:, step]
    return x


def test_chains_started_from_the_target_give_rhat_near_one_and_ess_near_the_number_of_draws() -> None:
    draws = normal(8, 500)
    assert abs(split_rhat(draws) - 1.0) < 0.01
    assert 0.85 < bulk_ess(draws) / draws.size < 1.15


def test_the_ess_of_autocorrelated_chains_is_the_ar1_value() -> None:
    """AR(1) with rho = 0.9: the integrated autocorrelation time is (1 + rho) / (1 - rho) = 19, so
    ESS = M T (1 - rho) / (1 + rho); an ESS that ignored autocorrelation would report M T."""
    rho = 0.9
    draws = ar1(8, 2000, rho)
    expected = draws.size * (1 - rho) / (1 + rho)
    assert bulk_ess(draws) == pytest.approx(expected, rel=0.25)
    assert abs(split_rhat(draws) - 1.0) < 0.02  # slow mixing, but the chains agree


def test_chains_stuck_in_different_modes_give_a_large_rhat_and_a_small_ess() -> None:
    draws = normal(8, 500)
    draws[:4] += 2.0  # half the chains in a mode at +2, half at -2
    draws[4:] -= 2.0
    assert split_rhat(draws) > 1.5
    assert bulk_ess(draws) < 0.05 * draws.size


def test_a_trend_within_each_chain_is_seen_only_by_splitting_the_chains() -> None:
    """Every chain drifts alike from -2 to 2: whole chains agree (classic R-hat about 1), but their
    halves do not."""
    draws = normal(8, 500) + np.linspace(-2.0, 2.0, 500)
    assert rhat(draws) < 1.01
    assert split_rhat(draws) > 1.1


def test_chains_that_agree_in_location_but_not_in_scale_are_flagged_by_the_folded_rhat() -> None:
    draws = normal(8, 500)
    draws[:4] *= 3.0
    assert split_rhat(draws, folded=False) < 1.02
    assert split_rhat(draws) > 1.1


def test_ranks_make_the_diagnostics_blind_to_monotone_transformations_and_heavy_tails() -> None:
    draws = normal(8, 400)
    draws[:4] += 0.3  # some disagreement, so the values are not all near 1
    assert split_rhat(np.exp(3 * draws)) == pytest.approx(split_rhat(draws), abs=1e-12)
    assert bulk_ess(np.exp(3 * draws)) == pytest.approx(bulk_ess(draws), abs=1e-9)
    cauchy = torch.distributions.Cauchy(0.0, 1.0).sample((8, 500)).double().numpy()  # infinite variance
    assert abs(split_rhat(cauchy) - 1.0) < 0.01
    assert 0.85 < bulk_ess(cauchy) / cauchy.size < 1.15


def test_rank_normalisation_uses_the_normal_quantiles_of_the_pooled_ranks_with_averaged_ties() -> None:
    draws = np.array([[3.0, 1.0], [2.0, 2.0]])  # ranks 4, 1, 2.5, 2.5 of S = 4
    ranks = np.array([[4.0, 1.0], [2.5, 2.5]])
    expected = torch.special.ndtri(torch.from_numpy((ranks - 0.375) / 4.25)).numpy()
    np.testing.assert_allclose(rank_normalize(draws), expected, atol=1e-12)


def test_split_chains_cuts_each_chain_in_halves_and_drops_the_middle_draw_of_an_odd_length() -> None:
    draws = np.arange(10.0).reshape(2, 5)
    np.testing.assert_array_equal(split_chains(draws), [[0, 1], [5, 6], [3, 4], [8, 9]])


def test_the_fft_autocorrelation_equals_the_direct_sum() -> None:
    x = ar1(3, 64, 0.5)
    centred = x - x.mean(1, keepdims=True)
    direct = np.stack([[(c[: len(c) - t] * c[t:]).sum() / len(c) for t in range(len(c))] for c in centred]) / (
        centred**2
    ).mean(1, keepdims=True)
    np.testing.assert_allclose(autocorrelation(x), direct, atol=1e-10)


def test_torch_and_numpy_inputs_agree_and_degenerate_draws_give_nan() -> None:
    draws = torch.randn(4, 100, dtype=torch.float64)
    assert split_rhat(draws) == split_rhat(draws.numpy())
    assert bulk_ess(draws.float()) == pytest.approx(bulk_ess(draws.float().double().numpy()))
    constant = np.ones((4, 100))
    assert math.isnan(split_rhat(constant)) and math.isnan(bulk_ess(constant)) and math.isnan(ess(constant))
    broken = normal(4, 100)
    broken[1, 7] = np.nan
    assert math.isnan(split_rhat(broken)) and math.isnan(bulk_ess(broken))
    with pytest.raises(ValueError, match="T >= 4"):
        split_rhat(np.zeros((4, 3)))
