"""The logistic (NCE) loss recovers a known log density ratio and is numerically stable."""

from __future__ import annotations

import torch
from torch import nn

from lebm.estimators import nce_loss


class QuadraticLogit(nn.Module):
    """``h(z) = a ||z||^2 + b . z + c``: the family that contains the log-ratio of two Gaussians."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(dim))
        self.c = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.a * z.square().sum(1) + z @ self.b + self.c


def true_log_ratio(z: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    q = torch.distributions.Normal(mean, std).log_prob(z).sum(1)
    p = torch.distributions.Normal(torch.zeros_like(mean), 1.0).log_prob(z).sum(1)
    return q - p


def test_nce_recovers_the_log_ratio_of_two_gaussians() -> None:
    mean, std = torch.tensor([0.8, -0.5]), 0.7
    h = QuadraticLogit(2)
    opt = torch.optim.Adam(h.parameters(), lr=0.05)
    for _ in range(600):
        z_pos = mean + std * torch.randn(512, 2)
        z_neg = torch.randn(512, 2)
        opt.zero_grad()
        nce_loss(h, z_pos, z_neg).loss.backward()
        opt.step()
    grid = torch.randn(2000, 2) * 0.8 + mean / 2  # where both densities have mass
    error = (h(grid).detach() - true_log_ratio(grid, mean, std)).abs().mean()
    assert error < 0.15, float(error)


def test_loss_value_and_stability_at_extreme_logits() -> None:
    result = nce_loss(lambda z: z[:, 0], torch.full((4, 1), 2.0), torch.full((4, 1), -1.0))
    expected = torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log1p(torch.exp(torch.tensor(-1.0)))
    assert torch.isclose(result.loss, expected)
    huge = nce_loss(lambda z: z[:, 0], torch.full((2, 1), 1e4), torch.full((2, 1), -1e4))
    assert torch.isfinite(huge.loss) and huge.loss < 1e-6
    wrong = nce_loss(lambda z: z[:, 0], torch.full((2, 1), -1e4), torch.full((2, 1), 1e4))
    assert torch.isclose(wrong.loss, torch.tensor(2e4))
