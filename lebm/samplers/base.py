"""The sampler contract and the parameter-freezing context shared by every chain."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Union

import torch
from torch import Tensor, nn

from lebm.config import Configurable

EnergyFn = Callable[[Tensor], Tensor]
"""``energy_fn(z) -> U``: maps states ``(B, *shape)`` to total energies ``(B,)``.

``U(z) = -log pi(z) + const``: lower is more probable (the toolkit's one sign convention)."""

SamplerOutput = Union[Tensor, tuple[Tensor, dict[str, Tensor]]]


@contextlib.contextmanager
def frozen_parameters(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``modules``.

    Inside a chain only the state needs a gradient: freezing stops autograd from saving
    activations for, and computing, parameter gradients. Parameters that were already frozen
    stay frozen afterwards.
    """
    switched: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                parameter.requires_grad_(False)
                switched.append(parameter)
    try:
        yield
    finally:
        for parameter in switched:
            parameter.requires_grad_(True)


class Sampler(Configurable):
    """An MCMC sampler: hyperparameters only, the target is given at call time.

    ``sampler(energy_fn, z0, freeze=(...)) -> z`` runs chains started at ``z0`` ``(B, *shape)``
    towards ``pi(z) ∝ exp(-U(z))``, ``U(z) = energy_fn(z) + reference_precision * ||z||^2 / 2``,
    and returns the final states, detached, same shape. The optional Gaussian reference term is
    differentiated analytically (``reference_precision * z``), which saves autograd work for
    tilted-Gaussian priors; ``reference_precision=0`` (default) makes ``energy_fn`` the whole target.
    With ``return_diagnostics=True`` it returns ``(z, diagnostics)`` where diagnostics holds
    per-step tensors (no host synchronisation happens inside the chain).
    """

    def __call__(
        self,
        energy_fn: EnergyFn,
        z0: Tensor,
        *,
        reference_precision: float = 0.0,
        freeze: Iterable[nn.Module] = (),
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

