"""Each part checks its own arguments where it is made (device: CPU): a sampler, a prior or a
decoder given a value of the wrong type, a value that is not finite, out of range or too large for
float32 chains refuses it in its constructor, in one line naming the part, the argument and the
value (the ``lebm`` command prints the same line: tests/cli/test_first_hour.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from lebm import arguments
from lebm.models import GaussianPrior, ProductOfRatiosPrior, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder
from lebm.samplers import HMC, MALA, Langevin, PersistentChains
from lebm.samplers.adaptation import DualAveraging

BOUND = "at most 1.84e+19"  # the largest step size whose square float32 holds

MISTAKES: dict[str, tuple[Callable[[], Any], str]] = {
    "a step size as text": (lambda: Langevin(10, "0.1"), "Langevin step_size must be a number, got '0.1' (str)"),
    "an infinite step size": (lambda: Langevin(10, math.inf), "Langevin step_size must be a finite number, got inf"),
    "a NaN step size": (lambda: Langevin(10, math.nan), "Langevin step_size must be a finite number, got nan"),
    "a step size whose square overflows": (lambda: Langevin(10, 1e20), f"Langevin step_size must be {BOUND}"),
    "a negative step size": (lambda: Langevin(10, -0.1), "Langevin step_size must be > 0, got -0.1"),
    "a fractional number of steps": (lambda: Langevin(2.5, 0.1), "Langevin n_steps must be a whole number, got 2.5"),
    "steps as a boolean": (lambda: Langevin(True, 0.1), "Langevin n_steps must be a whole number, got True"),
    "a negative noise": (lambda: Langevin(10, 0.1, noise_std=-1.0), "Langevin noise_std must be >= 0, got -1.0"),
    "an infinite clip": (lambda: Langevin(10, 0.1, grad_clip=math.inf), "Langevin grad_clip must be a finite number"),
    "a misspelt form": (lambda: Langevin(10, 0.1, form="papr"), "Langevin form must be one of 'code', 'paper'"),
    "a switch as text": (lambda: Langevin(10, 0.1, cuda_graph="false"), "Langevin cuda_graph must be true or false"),
    "MALA's overflowing step": (lambda: MALA(10, 1e20), f"MALA step_size must be {BOUND}"),
    "MALA's step as text": (lambda: MALA(10, "0.1"), "MALA step_size must be a number, got '0.1'"),
    "MALA's target as text": (lambda: MALA(target_acceptance="high"), "MALA target_acceptance must be a number"),
    "HMC's infinite step": (lambda: HMC(10, math.inf), "HMC step_size must be a finite number, got inf"),
    "HMC's fractional leapfrog": (lambda: HMC(n_leapfrog=1.5), "HMC n_leapfrog must be a whole number, got 1.5"),
    "HMC's mass as text": (lambda: HMC(mass="2"), "HMC mass must be a number or a list of numbers"),
    "HMC's NaN mass": (lambda: HMC(mass=[1.0, math.nan]), "HMC mass must be positive and finite"),
    "adaptation's NaN step": (lambda: DualAveraging(math.nan, 0.6, 10), "DualAveraging step_size must be a finite"),
    "adaptation's warm-up": (lambda: DualAveraging(0.1, 0.6, -1), "DualAveraging warmup (steps) must be >= 0"),
    "a buffer of no chains": (
        lambda: PersistentChains(Langevin(1, 0.1), [4], buffer_size=0),
        "PersistentChains buffer_size must be >= 1, got 0",
    ),
    "a restart probability as text": (
        lambda: PersistentChains(Langevin(1, 0.1), [4], reinit_prob="0.05"),
        "PersistentChains reinit_prob must be a number, got '0.05'",
    ),
    "a state shape as text": (
        lambda: PersistentChains(Langevin(1, 0.1), ["4"]),
        "PersistentChains shape (each size) must be a whole number, got '4'",
    ),
    "an infinite starting noise": (
        lambda: PersistentChains(Langevin(1, 0.1), [4], init_std=math.inf),
        "PersistentChains init_std must be a finite number",
    ),
    "a latent size as text": (lambda: GaussianPrior("16"), "GaussianPrior latent_dim must be a whole number, got '16'"),
    "a NaN prior sigma": (lambda: GaussianPrior(4, sigma=math.nan), "GaussianPrior sigma must be a finite number"),
    "a prior sigma whose inverse square overflows": (
        lambda: GaussianPrior(4, sigma=1e-30),
        "GaussianPrior sigma must be at least 5.42e-20",
    ),
    "a tilted prior's starting noise": (
        lambda: TiltedGaussianPrior(4, EnergyMLP(4, 8), init_std=0.0),
        "TiltedGaussianPrior init_std must be > 0, got 0.0",
    ),
    "a sampler by name": (
        lambda: TiltedGaussianPrior(4, EnergyMLP(4, 8), sampler="langevin"),
        "TiltedGaussianPrior sampler must be a lebm.samplers.Sampler",
    ),
    "stages as text": (
        lambda: ProductOfRatiosPrior(4, EnergyMLP(4, 8), n_stages="2"),
        "ProductOfRatiosPrior n_stages must be a whole number, got '2'",
    ),
    "a decoder sigma as text": (
        lambda: GaussianDecoder(nn.Identity(), sigma="0.3"),
        "GaussianDecoder sigma must be a number, got '0.3' (str): write it without quotes, sigma=0.3",
    ),
    "an infinite decoder sigma": (
        lambda: GaussianDecoder(nn.Identity(), sigma=math.inf),
        "GaussianDecoder sigma must be a finite number, got inf",
    ),
    "a decoder without a net": (lambda: GaussianDecoder("mlp"), "GaussianDecoder net must be a torch.nn.Module"),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_a_part_refuses_a_bad_argument_in_one_line(case: str) -> None:
    make, message = MISTAKES[case]
    with pytest.raises((ValueError, TypeError)) as raised:
        make()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_bound_is_where_float32_overflows() -> None:
    """The largest step size accepted runs a step whose drift float32 holds; above it, a chain
    stopped in its first step (``value cannot be converted to type float without overflow``)."""
    largest = arguments.SQUARE_FITS_FLOAT32
    assert largest**2 <= torch.finfo(torch.float32).max
    Langevin(1, largest)
    with pytest.raises(ValueError, match="at most"):
        Langevin(1, largest * 1.01)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Langevin(10.0, 1),  # whole floats and ints read as steps and sizes
        lambda: MALA(10, 0.1, target_acceptance=0.5, adapt_steps=5),
        lambda: HMC(2, 0.1, mass=torch.tensor([1.0, 2.0])),
        lambda: PersistentChains(Langevin(1, 0.1), torch.Size([4]), buffer_size=8),
        lambda: GaussianPrior(4, sigma=1e-3),
    ],
)
def test_good_arguments_of_other_kinds_are_accepted(make: Callable[[], Any]) -> None:
    make()
