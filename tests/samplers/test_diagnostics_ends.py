"""``return_diagnostics="ends"``: the first and last recorded values, without per-step reductions (CPU).

Training logs a chain's energy and gradient norm at its first and last step only; recording every
step costs about seven kernels a step inside a chain (a third of a prior chain step's). The
"ends" mode must give exactly the first and last values of the full record, move the chains
exactly as before, and keep per-step notes (a Metropolis chain's acceptance) whole.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lebm.samplers import HMC, MALA, Langevin, PersistentChains
from lebm.testing.capture import emulate_on_cpu


def energy(z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return ((z - shift) ** 2).sum(1) * 0.7 + torch.sin(z).sum(1)


SAMPLERS = {
    "langevin": lambda: Langevin(12, 0.3),
    "langevin_clipped": lambda: Langevin(12, 0.3, grad_clip=1.0),
    "mala": lambda: MALA(12, 0.3),
    "hmc": lambda: HMC(6, 0.2, n_leapfrog=3),
}


def call(sampler, diagnostics, precision: float, seed: int = 3):
    shift = torch.linspace(-1, 1, 5)
    z0 = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(seed)
    return sampler(
        energy, z0, inputs=(shift,), reference_precision=precision, generator=generator, return_diagnostics=diagnostics
    )


@pytest.mark.parametrize("precision", [0.0, 1.0])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_ends_are_the_first_and_last_of_the_full_record_and_the_chain_is_unchanged(name: str, precision: float) -> None:
    z_full, full = call(SAMPLERS[name](), True, precision)
    z_ends, ends = call(SAMPLERS[name](), "ends", precision)
    assert torch.equal(z_full, z_ends)
    assert set(full) == set(ends)
    for key in ("energy", "grad_norm"):
        assert len(full[key]) > 2 and ends[key].shape == (2,), key
        assert torch.equal(ends[key], full[key][[0, -1]]), key
    for key in set(full) - {"energy", "grad_norm"}:  # acceptance, step sizes: every step
        assert torch.equal(ends[key], full[key]), key


def test_a_chain_of_one_evaluation_has_one_value_and_no_chain_has_none() -> None:
    _, one = call(Langevin(1, 0.3), "ends", 1.0)
    _, full = call(Langevin(1, 0.3), True, 1.0)
    assert one["energy"].shape == (1,) and torch.equal(one["energy"], full["energy"])
    assert call(Langevin(12, 0.3), False, 1.0).shape == (16, 5)
    with pytest.raises(ValueError, match="True, False or 'ends', got 'end'"):
        call(Langevin(12, 0.3), "end", 1.0)


def test_persistent_chains_report_their_ends_too() -> None:
    full_sampler = PersistentChains(Langevin(8, 0.3), shape=(5,), buffer_size=32, reinit_prob=0.0)
    ends_sampler = PersistentChains(Langevin(8, 0.3), shape=(5,), buffer_size=32, reinit_prob=0.0)
    ends_sampler.load_state_dict(full_sampler.state_dict())
    z_full, full = call(full_sampler, True, 1.0)
    z_ends, ends = call(ends_sampler, "ends", 1.0)
    assert torch.equal(z_full, z_ends) and torch.equal(ends["energy"], full["energy"][[0, -1]])


def test_a_strict_replay_of_a_recorded_ends_chain_is_the_eager_chain() -> None:
    eager_z, eager = call(Langevin(12, 0.3), "ends", 1.0)
    sampler = Langevin(12, 0.3)
    with emulate_on_cpu():
        call(sampler, "ends", 1.0, seed=9)  # records
        replay_z, replay = call(sampler, "ends", 1.0)  # replays the recorded ops with new inputs
    assert torch.equal(replay_z, eager_z)
    assert torch.equal(replay["energy"], eager["energy"]) and torch.equal(replay["grad_norm"], eager["grad_norm"])


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def test_ends_leave_out_the_per_step_reductions() -> None:
    counts = {}
    for mode in (True, "ends", False):
        with CountOps() as ops:
            call(Langevin(40, 0.3), mode, 1.0)
        counts[mode] = ops.count
    steps = 40
    assert counts[True] - counts["ends"] >= 4 * (steps - 2)  # the mean, norm, mean and reference term of each step
    assert counts["ends"] - counts[False] <= 2 * steps  # one copy of the state a step, at most


def test_each_gradient_is_the_gradient_of_the_batch_sum_bit_for_bit() -> None:
    """The step's gradient is taken with output gradients of ones made once per chain: the same
    numbers as differentiating the summed energies, through a net."""
    from lebm.nets import MLPGenerator
    from lebm.samplers import ChainTarget

    torch.manual_seed(0)
    net = MLPGenerator(5, [3], hidden=16, out_activation=None)

    def net_energy(z: torch.Tensor) -> torch.Tensor:
        return net(z).square().sum(1)

    target = ChainTarget(net_energy, reference_precision=0.5)
    for seed in range(3):  # the ones are made once and reused
        z = torch.randn(7, 5, generator=torch.Generator().manual_seed(seed))
        state = z.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(net_energy(state).sum(), state)
        assert torch.equal(target.grad(z), expected.add(z, alpha=0.5))


@pytest.mark.parametrize("precision", [0.0, 1.0])
@pytest.mark.parametrize("view", ["select", "squeeze"])
def test_ends_hold_an_energy_that_is_a_view_of_the_state_before_the_state_moves(view: str, precision: float) -> None:
    """``z[:, 0]`` or ``z.squeeze(1)`` returns the state's own memory, which Langevin then moves in
    place: the held last energy must be the value at the last evaluation, as the full record has it."""

    def energy(z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return z[:, 0] if view == "select" else z[:, :1].squeeze(1)

    z0 = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    runs = {}
    for mode in (True, "ends"):
        runs[mode] = Langevin(5, 0.3)(
            energy,
            z0,
            inputs=(torch.zeros(5),),
            reference_precision=precision,
            generator=torch.Generator().manual_seed(3),
            return_diagnostics=mode,
        )
    assert torch.equal(runs["ends"][1]["energy"], runs[True][1]["energy"][[0, -1]])


def test_a_gradient_that_is_a_view_of_the_output_ones_can_be_changed_in_place() -> None:
    """For ``z.squeeze(1)`` autograd returns the output gradient itself, reshaped: the target then
    makes fresh ones at each step, so a sampler changing a gradient in place changes nothing else."""
    from lebm.samplers import ChainTarget

    target = ChainTarget(lambda z: z.squeeze(1))
    z = torch.randn(4, 1)
    first = target.grad(z)
    first.mul_(3.0)
    assert torch.equal(target.grad(z), torch.ones(4, 1))
