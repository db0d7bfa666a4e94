"""The latent EBM prior's MLE update, written once (``lebm.models.prior_mle``): its negatives are the
prior chain's samples, its step descends ``mean E(z+) - mean E(z-)``, and both methods that learn
a tilted prior by MLE take it from there. Device: CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cases import DATA, LATENT, toy_decoder, toy_loader
from torch import Tensor, nn

import lebm.models.hierarchical
import lebm.models.latent_ebm
from lebm.models import JointHierarchicalEBM, LatentEBM, TiltedGaussianPrior
from lebm.models.prior_mle import prior_mle_step, prior_negatives
from lebm.nets import EnergyMLP, MLPEncoder
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


class LinearEnergy(nn.Module):
    """``E(z) = w . z`` ``(B,)``: its gradient in ``w`` is ``z`` itself."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.w


class SGDMethod:
    """The two members ``prior_mle_step`` reads: a prior and a stepping path (plain SGD here)."""

    def __init__(self, prior: TiltedGaussianPrior) -> None:
        self.prior = prior
        self.clips: list[float | None] = []

    def step_optimizers(self, optimizer: Any, loss: Tensor, clip: float | None = None) -> None:
        self.clips.append(clip)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_the_step_descends_mean_energy_of_positives_minus_mean_energy_of_negatives() -> None:
    prior = TiltedGaussianPrior(2, LinearEnergy([0.5, -1.0]))
    method = SGDMethod(prior)
    z_pos = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1)
    z_neg = torch.tensor([[0.0, 1.0], [0.0, -3.0], [3.0, 5.0]])  # mean (1, 1)
    optimizer = torch.optim.SGD(prior.parameters(), lr=0.1)
    logs = prior_mle_step(method, optimizer, z_pos, z_neg, clip=7.0)
    # loss = w . (mean z+ - mean z-) = w . (1, 0); its gradient in w is (1, 0): w <- w - 0.1 * (1, 0)
    assert torch.allclose(prior.energy_net.w.detach(), torch.tensor([0.4, -1.0]))
    assert set(logs) == {"train/prior_loss", "train/energy_pos", "train/energy_neg"}
    assert torch.allclose(logs["train/energy_pos"], torch.tensor(0.0))  # w . (2, 1) = 0
    assert torch.allclose(logs["train/energy_neg"], torch.tensor(-0.5))  # w . (1, 1)
    assert torch.allclose(logs["train/prior_loss"], torch.tensor(0.5))
    assert not any(value.requires_grad for value in logs.values())
    assert method.clips == [7.0]


def test_the_negatives_are_the_prior_chains_samples_from_the_stream() -> None:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8), sampler=Langevin(3, 0.3))
    negatives = prior_negatives(prior, 5, torch.Generator().manual_seed(4))
    expected = prior.sample(5, generator=torch.Generator().manual_seed(4))
    assert negatives.z.shape == (5, LATENT) and torch.equal(negatives.z, expected)
    assert negatives.watch == {"train/prior_chain_states": negatives.z}
    assert negatives.logs and all(name.startswith("train/prior_chain_") for name in negatives.logs)


def latent_ebm() -> LatentEBM:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8), sampler=Langevin(2, 0.3))
    return LatentEBM(toy_decoder(), prior, posterior_sampler=Langevin(2, 0.1), prior_grad_clip=3.0)


def hierarchical() -> JointHierarchicalEBM:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8), sampler=Langevin(2, 0.3))
    return JointHierarchicalEBM(toy_decoder(), prior, MLPEncoder([DATA], LATENT, hidden=8), prior_grad_clip=3.0)


@pytest.mark.parametrize(
    ("module", "build"), [(lebm.models.latent_ebm, latent_ebm), (lebm.models.hierarchical, hierarchical)]
)
def test_both_methods_learn_the_prior_through_the_one_step(module: Any, build: Any, monkeypatch, tmp_path) -> None:
    calls: list[tuple[Tensor, Tensor, float | None]] = []

    def recorded(method: Any, optimizer: Any, z_pos: Tensor, z_neg: Tensor, clip: float | None = None) -> Any:
        calls.append((z_pos, z_neg, clip))
        return prior_mle_step(method, optimizer, z_pos, z_neg, clip)

    monkeypatch.setattr(module, "prior_mle_step", recorded)
    model = build()
    quiet_trainer(default_root_dir=str(tmp_path), max_epochs=1, accelerator="cpu").fit(
        model, toy_loader(n_batches=2, batch_size=4)
    )
    assert len(calls) == 2
    for z_pos, z_neg, clip in calls:
        assert z_pos.shape == z_neg.shape == (4, LATENT) and clip == 3.0
