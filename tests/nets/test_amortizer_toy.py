"""DAMC's amortizer learns a long-run posterior on a 2-D toy (device: CPU).

The DAMC paper's sanity check, scaled to a CPU test (Yu et al., NeurIPS 2023, arXiv 2310.03218;
the official repository's ``workspace/toy_example``): a fixed random MLP likelihood
``x = G(z) + 0.25 eps`` on a 2-D latent with a standard normal prior and no EBM, posterior
Langevin chains started from the EMA amortizer's samples, and the amortizer fitted to the chains'
outputs (the DAMC distillation step). Its conditional samples, without any Langevin after them,
must then match long-run Langevin from noise for the same observations.

The observations are 8-dimensional (the official toy's are 2-D) so that ``G`` is injective and
each posterior has one mode: 300 Langevin steps from noise then sample it, and the reference the
amortizer is measured against is the posterior, not a chain's bias between modes. The amortizer
is measured with 100 ancestral steps and trained with chain starts of 10: with fewer steps its
"large"-variance sampler is measurably too wide even with an exact denoiser
(``tests/samplers/test_diffusion_schedule.py``), which the chains after it correct.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lebm.nets import LatentDiffusionAmortizer, MLPEmbedding
from lebm.samplers import Langevin
from lebm.samplers.initializers import AveragedStart

SIGMA = 0.25
X_DIM = 8
STEP_SIZE = 0.15  # the official toy's 0.1 mixes too slowly along these posteriors' long axes for a short test


def random_likelihood() -> nn.Module:
    """``G``: a fixed random tanh MLP ``2 -> 32 -> 32 -> 8`` (weights ``N(0, 1/fan_in)``, biases ``N(0, 0.1^2)``)."""
    stream = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, X_DIM))
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, layer.in_features**-0.5, generator=stream)
                layer.bias.normal_(0.0, 0.1, generator=stream)
    return net.requires_grad_(False)


G = random_likelihood()


def observations(n: int, stream: torch.Generator) -> Tensor:
    """``x = G(z) + 0.25 eps`` ``(n, 8)``, ``z`` from a mixture of two Gaussians at ``(+-1.5, 0)``, std 0.3."""
    side = torch.randint(0, 2, (n,), generator=stream) * 2.0 - 1.0
    z = torch.stack([1.5 * side, torch.zeros(n)], 1) + 0.3 * torch.randn(n, 2, generator=stream)
    return G(z) + SIGMA * torch.randn(n, X_DIM, generator=stream)


def likelihood_energy(z: Tensor, x: Tensor) -> Tensor:
    """``||x - G(z)||^2 / (2 sigma^2)`` ``(B,)``; the N(0, I) prior is the chain's reference term."""
    return (x - G(z)).square().sum(1) / (2 * SIGMA**2)


def posterior_chain(n_steps: int) -> Langevin:
    return Langevin(n_steps=n_steps, step_size=STEP_SIZE)


def reconstruction_error(x: Tensor, z: Tensor) -> float:
    """The mean of ``||x - G(z)||^2``."""
    return (x - G(z)).square().sum(1).mean().item()


def energy_distance(a: Tensor, b: Tensor, groups: int) -> float:
    """The mean over ``groups`` consecutive blocks of rows of the (unbiased) energy distance between
    the blocks of ``a`` and ``b``: ``2 E|a - b| - E|a - a'| - E|b - b'|``."""
    a, b = a.view(groups, -1, a.shape[1]), b.view(groups, -1, b.shape[1])
    m = a.shape[1]

    def within(s: Tensor) -> Tensor:
        return torch.cdist(s, s).sum((1, 2)) / (m * (m - 1))

    return (2 * torch.cdist(a, b).mean((1, 2)) - within(a) - within(b)).mean().item()


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_amortizer_learns_the_long_run_posterior(one_thread: object) -> None:
    """250 DAMC iterations (batch 256, 10 posterior Langevin steps from the EMA amortizer's
    10-step samples, 2 amortizer steps on their outputs): the online amortizer's samples then have
    the long-run chains' reconstruction error within 10 % and lie 20x closer to them than at the start.

    Ten steps are too few to reach the posterior from a poor start: only the iteration (chains from
    the current amortizer, the amortizer fitted to them) gets there, so an amortizer whose EMA copy
    never moves fails the distance bound."""
    torch.manual_seed(0)
    stream = torch.Generator().manual_seed(1)
    groups, per_group = 8, 128
    x_eval = observations(groups, stream).repeat_interleave(per_group, 0)  # 8 observations, 128 samples each
    reference = posterior_chain(300)(
        likelihood_energy,
        torch.randn(len(x_eval), 2, generator=stream),
        inputs=(x_eval,),
        reference_precision=1.0,
        generator=stream,
    )
    q = LatentDiffusionAmortizer(
        2,
        MLPEmbedding(X_DIM, hidden=64, embed_dim=32, depth=2),
        32,
        nf=1,
        time_dim=32,
        null_hidden=32,
        sampling_steps=10,
    )
    q_ema = AveragedStart(q)
    optimizer = torch.optim.AdamW(q.parameters(), lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-2, foreach=True)
    chain = posterior_chain(10)

    def evaluate() -> tuple[float, float]:
        """The online amortizer's conditional samples (100 ancestral steps, no Langevin): their
        reconstruction error and their energy distance to the long-run chains, per observation."""
        z = q.sample(x=x_eval, generator=torch.Generator().manual_seed(2), steps=100)
        return reconstruction_error(x_eval, z), energy_distance(z, reference, groups)

    _, distance_before = evaluate()
    iterations = 250
    # the learning rate falls linearly to a tenth, so that the last iterate is not the noisiest
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - 0.9 * i / iterations)
    for _ in range(iterations):
        x = observations(256, stream)
        z0 = q_ema.start(context=x, generator=stream)
        z_pos = chain(likelihood_energy, z0, inputs=(x,), reference_precision=1.0, generator=stream)
        conditional = torch.rand(len(x), generator=stream) >= 0.1  # p_mask = 0.1, as the official toy
        for _ in range(2):
            loss = q.loss(x, z_pos, conditional, generator=stream)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        q_ema.update(q, 0.1)
        schedule.step()
    error_after, distance_after = evaluate()
    error_long_run = reconstruction_error(x_eval, reference)

    assert abs(error_after / error_long_run - 1) < 0.1, (error_after, error_long_run)
    assert distance_after < 0.05 * distance_before, (distance_before, distance_after)
    assert distance_after < 0.08, distance_after
