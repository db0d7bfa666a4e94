"""Small text models whose marginal likelihood is computable exactly (1-d latent, quadrature)."""

from __future__ import annotations

import math

import torch

from lebm.models import GaussianPrior, LatentEBM, TiltedGaussianPrior
from lebm.nets import CategoricalDecoder, EnergyMLP, LSTMTextGenerator
from lebm.samplers import Langevin

PAD, BOS, EOS = 0, 1, 2
GRID = torch.linspace(-9.0, 9.0, 3601, dtype=torch.float64)


def tiny_text_model(tilted: bool = True) -> LatentEBM:
    torch.manual_seed(1)
    decoder = CategoricalDecoder(LSTMTextGenerator(7, 1, embed_dim=4, hidden_dim=8), max_length=4)
    with torch.no_grad():  # a decoder whose likelihood depends strongly on z
        decoder.net.latent_to_hidden.weight.mul_(6.0)
    if tilted:
        energy = EnergyMLP(1, hidden=8, depth=1)
        with torch.no_grad():
            for parameter in energy.parameters():
                parameter.mul_(2.0)
        prior = TiltedGaussianPrior(1, energy)
    else:
        prior = GaussianPrior(1)
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(30, 0.2)).eval()


def quadrature_log_normalizer(model: LatentEBM) -> float:
    with torch.no_grad():
        energy = model.prior.energy(GRID.float()[:, None]).double()
    return float(torch.logsumexp(-energy, 0) + math.log(GRID[1] - GRID[0]))


def quadrature_log_likelihood(model: LatentEBM, x: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(x)`` ``(B,)``."""
    z = GRID.float()[:, None]
    step = math.log(GRID[1] - GRID[0])
    log_z = quadrature_log_normalizer(model)
    with torch.no_grad():
        log_prior = -model.prior.energy(z).double() - log_z
        out = []
        for row in x:
            log_lik = -model.decoder.nll(row.expand(len(z), -1), z).double()
            out.append(torch.logsumexp(log_lik + log_prior, 0) + step)
    return torch.stack(out)
