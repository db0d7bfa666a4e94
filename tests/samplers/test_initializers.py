"""Chain initializers (CPU): the one contract every start keeps (shape, no gradient into the
initializer, noise from the caller's stream, float32 states) and the EMA copy's update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.nets import MLPEncoder
from lebm.samplers import AveragedStart, ChainInitializer, Langevin, NetworkStart, NoiseStart


class Linear(ChainInitializer, nn.Module):
    """A learned start ``W x`` (a toy initializer with parameters)."""

    def __init__(self, dim: int = 3) -> None:
        nn.Module.__init__(self)
        self.weight = nn.Parameter(torch.randn(dim, dim))

    def draw(self, n, context, generator, device):
        return context @ self.weight


def test_noise_starts_draw_from_the_callers_stream_only() -> None:
    start = NoiseStart([3], std=2.0)
    state = torch.get_rng_state()
    a = start.start(5, generator=torch.Generator().manual_seed(1))
    b = start.start(5, generator=torch.Generator().manual_seed(1))
    c = start.start(5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (5, 3) and torch.equal(a, b) and not torch.equal(a, c)
    big = NoiseStart(2, std=2.0).start(20_000, generator=torch.Generator().manual_seed(0))
    assert big.std().item() == pytest.approx(2.0, rel=0.03)


def test_a_learned_start_is_detached_unless_it_asks_for_gradients() -> None:
    start = Linear()
    x = torch.randn(4, 3)
    z0 = start.start(context=x)
    assert not z0.requires_grad and z0.grad_fn is None
    start.detach = False
    z0 = start.start(context=x)
    z0.sum().backward()
    assert start.weight.grad is not None


def test_the_contract_refuses_a_start_of_the_wrong_size_or_kind() -> None:
    class Wrong(ChainInitializer):
        def draw(self, n, context, generator, device):
            return torch.zeros(n + 1, 2)

    with pytest.raises(ValueError, match="a start of 3 chains"):
        Wrong().start(3)
    with pytest.raises(ValueError, match="context must have n=3 rows"):
        NoiseStart(2).start(3, context=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="needs n"):
        NoiseStart(2).start()
    with pytest.raises(ValueError, match="NoiseStart std"):
        NoiseStart(2, std=0.0)


def test_half_precision_starts_become_float32_states() -> None:
    class Half(ChainInitializer):
        def draw(self, n, context, generator, device):
            return torch.zeros(n, 2, dtype=torch.bfloat16)

    assert Half().start(2).dtype == torch.float32


def test_an_encoder_start_draws_its_reparameterisation_noise_from_the_stream() -> None:
    torch.manual_seed(0)
    encoder = MLPEncoder([2], 3, hidden=8)
    x = torch.randn(6, 2)
    sample = NetworkStart(encoder, output="sample")
    a = sample.start(context=x, generator=torch.Generator().manual_seed(5))
    b = sample.start(context=x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.testing.assert_close(NetworkStart(encoder, output="mean").start(context=x), encoder(x).mean)
    with pytest.raises(ValueError, match="output must be one of"):
        NetworkStart(encoder, output="mode")


def test_the_averaged_copy_moves_by_its_rate_and_starts_chains_with_its_own_weights() -> None:
    online = Linear()
    averaged = AveragedStart(online)
    before = averaged.average.weight.detach().clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    averaged.update(online, 0.25)
    torch.testing.assert_close(averaged.average.weight, 0.75 * before + 0.25 * online.weight)
    x = torch.randn(2, 3)
    torch.testing.assert_close(averaged.start(context=x), x @ averaged.average.weight)
    assert not any(p.requires_grad for p in averaged.parameters())
    assert set(averaged.state_dict()) == {"average.weight"}


def test_a_latent_models_chain_takes_any_initializer_as_its_start() -> None:
    """``infer(x, start=initializer)``: the chain starts where the initializer says."""
    from lebm.models import LatentEBM, TiltedGaussianPrior
    from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator

    torch.manual_seed(0)
    decoder = GaussianDecoder(MLPGenerator(3, [3], hidden=8, out_activation=None), sigma=0.3)
    prior = TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(2, 0.4))
    model = LatentEBM(decoder, prior, posterior_sampler=Langevin(2, 0.1))
    x = torch.randn(4, 3)
    start = Linear()
    z = model.infer(x, start=start, refine=False)
    torch.testing.assert_close(z, x @ start.weight.detach())


def test_the_start_check_compares_the_whole_state_shape_not_its_last_axis() -> None:
    """CPU. A start of states (2, 3) for a model whose chains run on states (3,) is refused in one
    line, though its last axis matches; the right shape passes, cast to the chains' dtype."""
    from lebm.samplers.initializers import check_start

    with pytest.raises(
        ValueError, match=r"starts chains of states \(2, 3\), but this model's chains run on states \(3,\)"
    ):
        check_start(torch.zeros(4, 2, 3), 4, "MyStart", state_shape=(3,))
    assert check_start(torch.zeros(4, 3), 4, "MyStart", state_shape=(3,), dtype=torch.float64).dtype == torch.float64
