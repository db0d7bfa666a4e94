"""Convergence and mixing of MCMC chains: rank-normalised split R-hat and bulk effective sample size.

Both follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding,
and localization: an improved R-hat for assessing convergence of MCMC" (Bayesian Analysis 16(2)),
written here from the paper's definitions. The input is one scalar quantity traced along ``M``
chains of ``T`` draws each: an ``(M, T)`` array (NumPy or torch; computed in float64).

**Split chains.** Each chain is cut into its first and second half (the middle draw is dropped
when ``T`` is odd): ``2M`` chains of ``N = floor(T / 2)`` draws. A chain that drifts within
itself then has halves with different means, which R-hat sees.

**Rank normalisation.** The ``S = 2M N`` pooled draws are replaced by their ranks ``r`` (ties get
their average rank) and mapped to normal scores ``z = Phi^{-1}((r - 3/8) / (S + 1/4))``, so the
diagnostics work for heavy tails and do not depend on a monotone transformation of the quantity.

**R-hat** of chains ``theta_{n,m}`` (``N`` draws, ``M'`` chains), with chain means ``theta_.m``,
grand mean ``theta_..`` and within-chain variances ``s_m^2 = 1/(N-1) sum_n (theta_nm - theta_.m)^2``::

    B = N/(M'-1) sum_m (theta_.m - theta_..)^2          between-chain variance
    W = 1/M' sum_m s_m^2                                 within-chain variance
    var+ = (N-1)/N W + B/N
    R-hat = sqrt(var+ / W)

R-hat near 1 says the chains agree; the paper recommends trusting the draws only when it is below
1.01 (1.1 is the older, looser rule).

**Effective sample size** of ``M'`` chains of ``N`` draws::

    rho_t = 1 - (W - 1/M' sum_m s_m^2 rho_{t,m}) / var+        combined autocorrelation at lag t
    ESS   = M' N / tau,   tau = -1 + 2 sum_{k=0}^{K} P_k,   P_k = rho_{2k} + rho_{2k+1}

where ``rho_{t,m}`` is chain ``m``'s autocorrelation at lag ``t`` (by FFT), and Geyer's initial
monotone sequence truncates the sum: ``K`` is the last ``k`` before the first negative ``P_k``,
and each ``P_k`` is lowered to ``min(P_k, P_{k-1})``. Bulk ESS is this ESS of the rank-normalised
split chains: ``M N`` (roughly) for independent draws, ``M T (1 - rho) / (1 + rho)`` for AR(1)
draws of autocorrelation ``rho``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def as_draws(draws: Any) -> np.ndarray:
    """``draws`` as a float64 ``(M, T)`` NumPy array (a torch tensor is detached and copied to
    the host; a 1-D trace is one chain). Raises ``ValueError`` for other shapes or ``T < 4``."""
    if isinstance(draws, torch.Tensor):
        draws = draws.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(draws, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 4:
        raise ValueError(
            f"mixing diagnostics take an (M chains, T draws) array with M >= 1 and T >= 4, got shape {array.shape}"
        )
    return array


def split_chains(draws: Any) -> np.ndarray:
    """``(M, T)`` -> ``(2M, floor(T/2))``: the first halves of the chains, then their second halves
    (the middle draw of an odd ``T`` is dropped)."""
    array = as_draws(draws)
    half = array.shape[1] // 2
    return np.concatenate([array[:, :half], array[:, array.shape[1] - half :]], axis=0)


def rank_normalize(draws: Any) -> np.ndarray:
    """Normal scores ``Phi^{-1}((r - 3/8) / (S + 1/4))`` of the pooled ranks ``r`` (1..S, ties
    averaged) of the ``S = M T`` draws; the same shape ``(M, T)``."""
    array = np.asarray(draws, dtype=np.float64)
    flat = array.ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last copy of each distinct value
    average_rank = last - (counts - 1) / 2.0
    ranks = average_rank[inverse.ravel()]
    quantiles = (ranks - 0.375) / (flat.size + 0.25)
    scores = torch.special.ndtri(torch.from_numpy(quantiles)).numpy()
    return scores.reshape(array.shape)


def _between_within(chains: np.ndarray) -> tuple[float, float, float]:
    """``(B, W, var+)`` of ``(M', N)`` chains (see the module docstring)."""
    n = chains.shape[1]
    means = chains.mean(axis=1)
    within = float(chains.var(axis=1, ddof=1).mean())
    between = float(n * means.var(ddof=1)) if chains.shape[0] > 1 else 0.0
    return between, within, (n - 1) / n * within + between / n


def rhat(chains: Any) -> float:
    """Classic R-hat ``sqrt(var+ / W)`` of ``(M', N)`` chains as given (no splitting, no ranks).
    NaN when a draw is not finite or the chains do not vary."""
    array = np.asarray(chains, dtype=np.float64)
    if not np.isfinite(array).all():
        return math.nan
    _, within, var_plus = _between_within(array)
    if not within > 0:
        return math.nan
    return math.sqrt(var_plus / within)


def split_rhat(draws: Any, *, folded: bool = True) -> float:
    """Rank-normalised split R-hat of ``draws`` ``(M, T)`` (a float).

    ``rhat(rank_normalize(split_chains(draws)))``; with ``folded`` (the paper's recommendation)
    the larger of it and the same of the folded draws ``|theta - median(theta)|``, which sees
    chains that agree in location but not in scale. NaN when a draw is not finite or all are equal.
    """
    array = as_draws(draws)
    if not np.isfinite(array).all():
        return math.nan
    bulk = rhat(rank_normalize(split_chains(array)))
    if not folded:
        return bulk
    tail = rhat(rank_normalize(split_chains(np.abs(array - np.median(array)))))
    return max(bulk, tail) if not math.isnan(tail) else bulk


def autocorrelation(chains: np.ndarray) -> np.ndarray:
    """Autocorrelations ``rho_{t,m}`` ``(M', N)`` of each chain of ``(M', N)``, lags ``0..N-1``,
    by FFT of the centred chain zero-padded to at least ``2N`` (no circular wrap-around):
    ``gamma_t = 1/N sum_{n<N-t} (x_n - mean)(x_{n+t} - mean)``, ``rho_t = gamma_t / gamma_0``."""
    n = chains.shape[1]
    centred = chains - chains.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    autocovariance = np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n
    gamma0 = autocovariance[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gamma0 > 0, autocovariance / gamma0, 0.0)


def ess(chains: Any) -> float:
    """Effective sample size of ``(M', N)`` chains as given (no splitting, no ranks): ``M' N / tau``
    with Geyer's initial monotone sequence (module docstring). ``tau`` is kept above
    ``1 / log10(M' N)``, so antithetic chains report at most ``M' N log10(M' N)``. NaN when a draw
    is not finite or the chains do not vary."""
    array = np.asarray(chains, dtype=np.float64)
    if not np.isfinite(array).all():
        return math.nan
    m, n = array.shape
    _, within, var_plus = _between_within(array)
    if not within > 0:
        return math.nan
    variances = array.var(axis=1, ddof=1)  # s_m^2
    combined = 1.0 - (within - (variances[:, None] * autocorrelation(array)).mean(axis=0)) / var_plus  # rho_t
    pairs = combined[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)  # P_k = rho_2k + rho_2k+1
    total = 0.0
    previous = math.inf
    for pair in pairs:
        if pair < 0:
            break
        previous = min(previous, float(pair))  # initial monotone sequence
        total += previous
    tau = max(-1.0 + 2.0 * total, 1.0 / math.log10(m * n)) if m * n > 1 else 1.0
    return m * n / tau


def bulk_ess(draws: Any) -> float:
    """Bulk effective sample size of ``draws`` ``(M, T)``: ``ess(rank_normalize(split_chains(draws)))``,
    about ``M T`` for independent draws and less the more the chains are autocorrelated or
    disagree. NaN when a draw is not finite or all are equal."""
    array = as_draws(draws)
    if not np.isfinite(array).all():
        return math.nan
    return ess(rank_normalize(split_chains(array)))
