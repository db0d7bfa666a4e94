"""The context chains run in, and the contract that makes a new sampler hard to get wrong.

- the train/eval mode of the modules a chain reads is stated and restored (BatchNorm changes the
  target otherwise);
- recurrent nets in eval mode can be differentiated (cuDNN refuses RNN backward in eval mode);
- a custom sampler implements ``run`` and asks the target for gradients: the reference term and
  the diagnostics come from the base, and mistakes get clear messages.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.samplers import ChainTarget, Langevin, Sampler, differentiable_recurrent_nets


class ModeSpy(nn.Module):
    """An energy through BatchNorm that records the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.modes: list[bool] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.norm.training)
        return self.norm(z).square().sum(1) / 2


@pytest.mark.parametrize("mode,expected", [("eval", False), ("train", True), (None, True)])
def test_the_chain_runs_its_modules_in_the_stated_mode_and_restores_it(mode, expected) -> None:
    energy = ModeSpy().train()
    Langevin(3, 0.1)(energy, torch.randn(8, 2), freeze=[energy], module_mode=mode)
    assert energy.modes == [expected] * 3
    assert energy.training and energy.norm.training  # restored


def test_batchnorm_mode_changes_the_chains_target() -> None:
    """Train mode normalises with the batch's statistics, eval mode with the running ones: the
    same chain lands elsewhere, which is why a method states the mode of each chain."""
    energy = ModeSpy()
    with torch.no_grad():
        energy.norm.running_mean.fill_(2.0)
    z0 = torch.randn(256, 2) + 5.0
    in_eval = Langevin(400, 0.2, noise_std=0.0)(energy, z0, freeze=[energy], module_mode="eval")
    in_train = Langevin(200, 0.2, noise_std=0.0)(energy, z0, freeze=[energy], module_mode="train")
    assert torch.allclose(in_eval.mean(0), torch.full((2,), 2.0), atol=0.05)  # running mean 2: mode at 2
    assert (in_train.mean(0) - in_eval.mean(0)).norm() > 0.5
    # and a train-mode chain moves BatchNorm's running statistics at every step
    assert not torch.allclose(energy.norm.running_mean, torch.full((2,), 2.0))


def test_eval_mode_recurrent_nets_are_differentiable_with_eval_mode_numbers() -> None:
    lstm = nn.LSTM(3, 5, num_layers=2, dropout=0.5, batch_first=True).eval()
    x = torch.randn(4, 6, 3)
    with torch.no_grad():
        expected, _ = lstm(x)
    with differentiable_recurrent_nets([lstm]):
        assert lstm.training and lstm.dropout == 0.0  # what cuDNN's backward needs, dropout off
        state = x.clone().requires_grad_(True)
        out, _ = lstm(state)
        out.sum().backward()
    assert torch.allclose(out.detach(), expected, atol=1e-6) and state.grad is not None
    assert not lstm.training and lstm.dropout == 0.5  # restored


class SpyLSTM(nn.LSTM):
    def forward(self, *args, **kwargs):
        self.seen = (self.training, self.dropout)
        return super().forward(*args, **kwargs)


def test_chains_make_eval_mode_recurrent_nets_differentiable() -> None:
    lstm = SpyLSTM(3, 4, num_layers=2, dropout=0.3, batch_first=True).eval()

    def energy(z: torch.Tensor) -> torch.Tensor:
        return lstm(z.view(z.shape[0], 2, 3))[0].square().sum((1, 2))

    Langevin(2, 0.1)(energy, torch.randn(4, 6), freeze=[lstm], module_mode="eval")
    assert lstm.seen == (True, 0.0)  # inside the chain: the cuDNN-differentiable form of eval mode
    assert not lstm.training and lstm.dropout == 0.3


@pytest.mark.gpu
def test_a_chain_through_an_eval_mode_lstm_runs_on_the_gpu() -> None:
    lstm = nn.LSTM(3, 5, batch_first=True).cuda().eval()

    def energy(z: torch.Tensor) -> torch.Tensor:
        out, _ = lstm(z.view(z.shape[0], 2, 3))
        return out.square().sum((1, 2))

    z = Langevin(5, 0.1)(energy, torch.randn(4, 6, device="cuda"), freeze=[lstm], module_mode="eval")
    assert z.shape == (4, 6) and not lstm.training


class GradientDescent(Sampler):
    """A user's sampler: plain gradient descent, written against the contract."""

    def __init__(self, n_steps: int = 200, lr: float = 0.1) -> None:
        self.n_steps, self.lr = n_steps, lr

    def run(self, target: ChainTarget, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(self.n_steps):
            z = z - self.lr * target.grad(z)
        return z


def test_a_custom_sampler_gets_the_reference_term_and_diagnostics_from_the_base() -> None:
    """U(z) = ||z - 3||^2 / 2 plus the reference 3 ||z||^2 / 2 has its minimum at 3/4: the sampler
    never sees the reference term, yet descends the whole target."""
    z, stats = GradientDescent()(
        lambda z: (z - 3).square().sum(1) / 2, torch.randn(5, 2), reference_precision=3.0, return_diagnostics=True
    )
    assert torch.allclose(z, torch.full((5, 2), 0.75), atol=1e-4)
    assert stats["energy"].shape == (200,) and stats["energy"][-1] < stats["energy"][0]


class WrongShape(Sampler):
    def run(self, target, z, *, generator=None):
        return z[:, :1]


class NoRun(Sampler):
    pass


def test_sampler_mistakes_get_clear_messages() -> None:
    energy = lambda z: z.square().sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="must return the final states with the shape of z0"):
        WrongShape()(energy, torch.randn(3, 2))
    with pytest.raises(NotImplementedError, match=r"must implement run\(target, z"):
        NoRun()(energy, torch.randn(3, 2))
    with pytest.raises(ValueError, match="one energy per sample"):
        Langevin(2, 0.1)(lambda z: z.square().sum(), torch.randn(3, 2))  # a batch total, not (B,)
    with pytest.raises(ValueError, match="does not depend on the state differentiably"):
        Langevin(2, 0.1)(lambda z: z.detach().square().sum(1), torch.randn(3, 2))
