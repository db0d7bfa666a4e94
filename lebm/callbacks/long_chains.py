"""The long-run chains of :class:`~lebm.callbacks.chain_diagnostics.ChainDiagnostics`: what one kind
of chain is (:class:`ChainPart`), how its ``n_chains`` are cut into fixed, separately seeded groups,
which groups a rank runs, and how the groups' traces are packed, gathered over the ranks and put back
in group order (so that any world size computes the statistics of the same chains).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lebm.randomness import derive_seed
from lebm.samplers import PersistentChains, Sampler
from lebm.samplers.chain import ModuleMode

#: Purpose word of the diagnostics' chains in :func:`lebm.randomness.derive_seed` (ASCII "mixi").
PURPOSE = 0x6D697869
#: The two kinds of chains, in the order their seeds and plots use.
PARTS = ("prior", "posterior")


@dataclass
class ChainPart:
    """One kind of chain the diagnostics run: what the transition sampler is called with, how a
    state's energies are read and where the chains start.

    Attributes:
        name: ``"prior"`` or ``"posterior"``.
        transition: the sampler of one draw (copied afresh for each group).
        energy_fn: the sampler's energy ``energy_fn(z, *inputs) -> (B,)`` (reference term excluded).
        total_energy: ``(z, inputs) -> (B,)``: the chain's whole target energy, the trace's value.
        prior_energy: ``z -> (B,)``: the prior's total energy ``U(z)`` (for the energy gap).
        start: ``(n, generator) -> (n, D)``: the chains' initial states.
        inputs: ``(first, stop) -> tuple of tensors``: what chains ``first..stop-1`` pass after ``z``.
        reference_precision, freeze, module_mode: passed on to the sampler.
        examples: the number of different targets the chains sample (posterior: the observations;
            chain ``i`` samples target ``i % examples``), 1 for the prior.
        latent_dim: ``D``; device: where the chains run.
    """

    name: str
    latent_dim: int
    device: torch.device
    transition: Sampler
    energy_fn: Callable[..., Tensor]
    total_energy: Callable[[Tensor, tuple[Tensor, ...]], Tensor]
    prior_energy: Callable[[Tensor], Tensor]
    start: Callable[[int, torch.Generator], Tensor]
    inputs: Callable[[int, int], tuple[Tensor, ...]]
    reference_precision: float
    freeze: Sequence[torch.nn.Module]
    module_mode: ModuleMode | None
    examples: int = 1


@dataclass(frozen=True)
class Shape:
    """The sizes of one evaluation's traces."""

    chains_per_group: int
    draws: int
    burn_in: int
    coordinates: int
    projection_draws: int
    latent_dim: int

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Name and shape of each per-group trace, in packing order."""
        n, t = self.chains_per_group, self.draws
        return [
            ("energy", (n, t)),
            ("prior_energy", (n, t)),
            ("coordinates", (n, t, self.coordinates)),
            ("states", (n, self.projection_draws, self.latent_dim)),
            ("acceptance", (2,)),  # (sum of the per-step acceptance rates, number of steps)
        ]


def transition_of(sampler: Sampler | None) -> Sampler | None:
    """The sampler one draw calls: persistent chains are unwrapped to the sampler they run (their
    buffer is training state, and the diagnostics' chains continue from their own states)."""
    if isinstance(sampler, PersistentChains):
        return sampler.sampler
    return sampler


def group_seed(seed: int, epoch: int, part: str, group: int) -> int:
    """The seed of group ``group``'s generator (independent of the rank that runs it)."""
    return derive_seed(seed, PURPOSE, epoch, PARTS.index(part), group)


def groups_of_rank(rank: int, world_size: int, n_groups: int) -> list[int]:
    """The groups rank ``rank`` of ``world_size`` runs: ``rank, rank + W, rank + 2W, ... < n_groups``."""
    return list(range(rank, n_groups, world_size))


def one_draw(
    sampler: Sampler,
    part: ChainPart,
    z: Tensor,
    inputs: tuple[Tensor, ...],
    generator: torch.Generator,
    record: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One call of ``sampler`` on ``part``'s target from ``z``: the new states ``(n, D)`` and, when
    ``record``, the sampler's diagnostics (else an empty dict): its per-step notes such as the
    acceptance, and the energy and gradient norm at the ends only (the traces are read afterwards,
    so no per-step reductions are spent on them)."""
    out = sampler(
        part.energy_fn,
        z,
        inputs=inputs,
        reference_precision=part.reference_precision,
        freeze=part.freeze,
        module_mode=part.module_mode,
        generator=generator,
        return_diagnostics="ends" if record else False,
    )
    return out if record else (out, {})  # type: ignore[return-value]


def run_group(part: ChainPart, shape: Shape, group: int, generator: torch.Generator) -> Tensor:
    """Run group ``group``'s chains (``shape.chains_per_group`` of them) and return their traces
    packed into one float64 row ``(L,)`` (:meth:`Shape.layout`).

    Draw ``t`` is one call of a fresh copy of ``part.transition`` from the previous draw's states;
    the first ``shape.burn_in`` draws are not recorded."""
    n, first = shape.chains_per_group, group * shape.chains_per_group
    inputs = part.inputs(first, first + n)
    sampler = copy.deepcopy(part.transition)
    z = part.start(n, generator)
    energy, prior_energy, coordinates, states = [], [], [], []
    accepted = torch.zeros(2, dtype=torch.float64, device=z.device)
    record = True  # the diagnostics: kept up only while the sampler reports an acceptance rate
    for draw in range(shape.burn_in + shape.draws):
        z, diagnostics = one_draw(sampler, part, z, inputs, generator, record)
        record = "acceptance" in diagnostics
        if draw < shape.burn_in:
            continue
        with torch.no_grad():
            energy.append(part.total_energy(z, inputs).double())
            prior_energy.append(part.prior_energy(z).double())
        coordinates.append(z[:, : shape.coordinates].double())
        if draw >= shape.burn_in + shape.draws - shape.projection_draws:
            states.append(z.double())
        rates = diagnostics.get("acceptance")
        if rates is not None and rates.numel():
            accepted += torch.stack([rates.double().sum(), torch.tensor(float(rates.numel()), device=z.device)])
    traces = {
        "energy": torch.stack(energy, 1),
        "prior_energy": torch.stack(prior_energy, 1),
        "coordinates": torch.stack(coordinates, 1),
        "states": torch.stack(states, 1).flatten(2),
        "acceptance": accepted,
    }
    return torch.cat([traces[name].reshape(-1) for name, _ in shape.layout()])


def run_local_groups(part: ChainPart, shape: Shape, groups: Sequence[int], seed: int, epoch: int) -> Tensor:
    """``(len(groups), L)``: the packed traces of ``groups``, each from its own generator."""
    rows = []
    for group in groups:
        generator = torch.Generator(device=part.device)
        generator.manual_seed(group_seed(seed, epoch, part.name, group))
        rows.append(run_group(part, shape, group, generator))
    if not rows:  # more ranks than groups: this rank pads and gathers only
        width = sum(math.prod(size) for _, size in shape.layout())
        return torch.zeros(0, width, dtype=torch.float64, device=part.device)
    return torch.stack(rows)


def gather_groups(
    local: Tensor, n_groups: int, world_size: int, all_gather: Callable[[Tensor], Tensor] | None
) -> Tensor:
    """Every group's packed traces ``(n_groups, L)`` in group order, from this rank's rows ``local``
    ``(k, L)`` (its groups, :func:`groups_of_rank`). Each rank pads its rows to
    ``ceil(n_groups / W)`` and ``all_gather`` stacks them ``(W, slots, L)``; group ``g`` is slot
    ``g // W`` of rank ``g % W``. With one process (``world_size == 1``) ``local`` is returned."""
    if world_size == 1:
        if local.shape[0] != n_groups:
            raise ValueError(f"one process must run all {n_groups} groups, got {local.shape[0]}")
        return local
    slots = -(-n_groups // world_size)
    padded = torch.zeros(slots, local.shape[1], dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    gathered = all_gather(padded)  # (W, slots, L)
    if tuple(gathered.shape) != (world_size, slots, local.shape[1]):
        raise RuntimeError(f"the gather of the diagnostics' traces returned {tuple(gathered.shape)}")
    return torch.stack([gathered[g % world_size, g // world_size] for g in range(n_groups)])


def unpack_traces(rows: Tensor, shape: Shape) -> dict[str, np.ndarray]:
    """Packed rows ``(G, L)`` -> float64 arrays over all chains in group order: ``energy`` and
    ``prior_energy`` ``(M, T)``, ``coordinates`` ``(M, T, C)``, ``states`` ``(M, S, D)``, and
    ``acceptance`` ``(2,)`` summed over groups."""
    rows = rows.detach().to("cpu", torch.float64).numpy()
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, part_shape in shape.layout():
        size = math.prod(part_shape)
        block = rows[:, offset : offset + size].reshape(rows.shape[0], *part_shape)
        offset += size
        out[name] = block.sum(0) if name == "acceptance" else block.reshape(-1, *part_shape[1:])
    return out
