"""Persistent chains: buffer bookkeeping, checkpointing and convergence over repeated short calls."""

from __future__ import annotations

import torch
from torch import nn

from lebm.samplers import Langevin, PersistentChains


def quadratic(center: float):
    return lambda z: (z - center).square().sum(1) / 2


def test_repeated_short_calls_converge_to_the_target() -> None:
    chains = PersistentChains(Langevin(n_steps=5, step_size=0.2), shape=[2], buffer_size=2000, reinit_prob=0.0)
    energy = quadratic(2.0)
    for _ in range(200):
        chains(energy, torch.zeros(500, 2))
    buffer = chains.chains
    assert torch.allclose(buffer.mean(0), torch.full((2,), 2.0), atol=0.1)
    assert torch.allclose(buffer.var(0), torch.ones(2), atol=0.12)


def test_short_calls_from_noise_do_not_converge() -> None:
    """Control for the test above: the same 5-step chain from fresh noise stays far from the target."""
    z = Langevin(n_steps=5, step_size=0.2)(quadratic(2.0), torch.zeros(500, 2))
    assert z.mean().item() < 0.5


def test_reinit_probability_one_restarts_from_z0() -> None:
    chains = PersistentChains(
        Langevin(n_steps=1, step_size=0.1, noise_std=0.0), shape=[3], buffer_size=10, reinit_prob=1.0
    )
    z0 = torch.randn(4, 3)
    out = chains(quadratic(0.0), z0)
    assert torch.allclose(out, z0 * (1 - 0.1**2 / 2))


def test_buffer_is_written_back_and_checkpointed() -> None:
    owner = nn.Module()
    owner.chains = PersistentChains(Langevin(n_steps=2, step_size=0.1), shape=[2], buffer_size=8, reinit_prob=0.0)
    before = owner.chains.chains.clone()
    owner.chains(quadratic(5.0), torch.zeros(8, 2))
    assert not torch.equal(before, owner.chains.chains)
    state = owner.state_dict()
    assert "chains.chains" in state
    fresh = nn.Module()
    fresh.chains = PersistentChains(Langevin(n_steps=2, step_size=0.1), shape=[2], buffer_size=8)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.chains.chains, owner.chains.chains)


def test_shape_mismatch_is_a_clear_error() -> None:
    chains = PersistentChains(Langevin(n_steps=1), shape=[4], buffer_size=4)
    try:
        chains(quadratic(0.0), torch.zeros(2, 3))
    except ValueError as error:
        assert "shape" in str(error)
    else:
        raise AssertionError("expected a ValueError")
