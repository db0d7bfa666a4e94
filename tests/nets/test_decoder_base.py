"""The decoder contract (device: CPU): a method calls every hook of its ``lebm.nets.Decoder`` and
refuses a decoder that does not subclass it, naming the base to subclass."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.config import Configurable
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import Decoder, EnergyMLP, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


class PlainModuleDecoder(nn.Module, Configurable):
    """``nll`` and ``decode`` on a plain ``nn.Module``, without the Decoder base."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def decode(self, z: Tensor) -> Tensor:
        return self.net(z)

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        return (x - self.net(z)).square().sum(1) / 0.18


def test_a_decoder_that_does_not_subclass_the_base_is_refused() -> None:
    with pytest.raises(TypeError, match=r"`decoder` must be a lebm.nets.Decoder, got PlainModuleDecoder: subclass"):
        LatentEBM(
            PlainModuleDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None)),
            TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(3, 0.3)),
            posterior_sampler=Langevin(3, 0.1),
        )


def test_the_decoder_base_calls_a_subclass_hooks_and_refuses_a_missing_nll() -> None:
    class Counting(Decoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2)
            self.held = 0

        def decode(self, z: Tensor) -> Tensor:
            return self.net(z)

        def nll(self, x: Tensor, z: Tensor) -> Tensor:
            return (x - self.net(z)).square().sum(1)

        def hold_noise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
            self.held += 1

    decoder = Counting()
    model = LatentEBM(decoder, TiltedGaussianPrior(3, EnergyMLP(3, hidden=8)), posterior_sampler=Langevin(2, 0.1))
    assert model.evaluation_outputs == (
        "nll",
        "score",
        "score_reconstruction_term",
        "score_prior_term",
        "score_tilt_term",
    )
    x = torch.randn(4, 2)
    assert model.observations(x) is x and model.presented(x, raw=False) is x
    trainer = quiet_trainer(max_steps=2, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8))
    assert decoder.held == 2  # two steps: two batches
    with pytest.raises(NotImplementedError, match="must implement nll"):
        Decoder().nll(torch.zeros(1, 2), torch.zeros(1, 3))


def test_an_observation_noise_block_reads_its_sigma_and_gives_the_trained_one_back_also_on_an_error() -> None:
    """Device: CPU. Inside ``observation_noise(s)`` the NLL is at ``s`` and a captured chain's key
    differs (another sigma records its own graph); after the block, normal or raised, the trained
    sigma is back; a non-positive sigma is refused before anything changes."""
    from lebm.nets import GaussianDecoder
    from lebm.recording.keys import Description

    decoder = GaussianDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None), sigma=1.0)
    x, z = torch.randn(4, 2), torch.randn(4, 3)
    trained_nll, trained_key = decoder.nll(x, z), Description().of(decoder, "decoder")
    with decoder.observation_noise(0.1):
        torch.testing.assert_close(decoder.nll(x, z), trained_nll * 100)
        assert Description().of(decoder, "decoder") != trained_key
    with pytest.raises(RuntimeError, match="inside"), decoder.observation_noise(0.1):
        raise RuntimeError("inside")
    assert decoder.sigma == 1.0 and Description().of(decoder, "decoder") == trained_key
    with pytest.raises(ValueError, match="sigma"), decoder.observation_noise(0.0):
        pass
    assert decoder.sigma == 1.0
