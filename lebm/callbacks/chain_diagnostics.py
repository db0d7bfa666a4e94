"""``ChainDiagnostics``: do long-run chains of the learned prior (and posterior) mix?

A prior learned with short-run chains (K steps from noise) is trained so that K steps give good
negatives, not so that it is a valid sampler beyond K steps: run longer, its chains may drift away
from the data or oversaturate. This callback runs ``n_chains`` chains for ``n_draws`` draws (each
draw one call of the transition sampler, K steps, continuing from the previous state) and reports
rank-normalised split R-hat and bulk ESS (:mod:`lebm.metrics.mixing`) of the energy and of a few
latent coordinates, the acceptance rate of Metropolis-adjusted samplers, the energy drift along
the chains and the prior-posterior energy gap, as scalars, a plot and a JSON line. See
``docs/diagnostics.md`` for how to read them.

In a recipe::

    trainer:
      callbacks+:
        - class_path: lebm.callbacks.ChainDiagnostics
          init_args: {every_n_epochs: 50, n_chains: 64, n_draws: 100}

**When.** At the end of every ``every_n_epochs``-th training epoch, at the end of training
(Lightning's ``on_train_end``, unless that epoch was just diagnosed; not ``on_fit_end``, where the
trainer has already torn down the strategy and moved the model to the CPU) and at the end of each
test epoch. Never in the sanity check.

**DDP: exact.** The chains are cut into ``n_groups`` fixed groups of ``n_chains / n_groups``
chains; group ``g`` draws all its random numbers from its own generator seeded from
``(seed, epoch, part, g)``. Rank ``r`` of ``W`` runs groups ``r, r + W, r + 2W, ...``; the traces
are gathered (padded to equal counts) and reassembled in group order on every rank, which then
computes the statistics from the full traces. A single process runs every group in order: the same
chains, the same numbers. The transition sampler is copied afresh for each group, so a sampler that
adapts its state within a call sees the same history on any world size (and the training sampler's
own state is never touched).

**Randomness.** The chains never draw from the training or evaluation streams or from torch's global
RNG; reading the fixed batch runs under a forked global RNG. The model is in eval mode during the
chains and gets its modes back afterwards.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate

from lebm.callbacks.images import log_image
from lebm.callbacks.plots import line_plot, panel_grid, principal_components, scatter_plot
from lebm.data.batches import batch_observations
from lebm.metrics.mixing import bulk_ess, split_rhat
from lebm.randomness import derive_seed
from lebm.samplers import PersistentChains, Sampler
from lebm.samplers.chain import ModuleMode, modules_in_mode

#: Purpose word of the diagnostics' chains in :func:`lebm.randomness.derive_seed` (ASCII "mixi").
PURPOSE = 0x6D697869
#: The two kinds of chains, in the order their seeds and plots use.
PARTS = ("prior", "posterior")
#: Share of the last draws whose latent states the 2-D projection shows.
PROJECTION_SHARE = 0.25
#: File in the run folder that receives one JSON line per evaluation.
JSONL_NAME = "diagnostics.jsonl"


# ------------------------------------------------------------------------------ the chains
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
    ``record``, the sampler's per-step diagnostics (else an empty dict)."""
    out = sampler(
        part.energy_fn,
        z,
        inputs=inputs,
        reference_precision=part.reference_precision,
        freeze=part.freeze,
        module_mode=part.module_mode,
        generator=generator,
        return_diagnostics=record,
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
    record = True  # per-step diagnostics: kept up only while the sampler reports an acceptance rate
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


# ------------------------------------------------------------------------------ statistics
def part_statistics(name: str, traces: dict[str, np.ndarray], examples: int = 1) -> dict[str, float]:
    """The scalars of one kind of chain from its traces (:func:`unpack_traces`), keyed
    ``<name>_<statistic>``. R-hat and ESS are computed over the chains of one target (chain ``i``
    samples target ``i % examples``): the largest R-hat and the smallest ESS over the targets."""
    energy, coordinates = traces["energy"], traces["coordinates"]
    targets = [np.arange(e, energy.shape[0], examples) for e in range(examples)]
    rhat_energy = max(split_rhat(energy[chains]) for chains in targets)
    ess_energy = min(bulk_ess(energy[chains]) for chains in targets)
    rhats = [split_rhat(coordinates[chains, :, c]) for chains in targets for c in range(coordinates.shape[2])]
    esses = [bulk_ess(coordinates[chains, :, c]) for chains in targets for c in range(coordinates.shape[2])]
    first, last = float(energy[:, 0].mean()), float(energy[:, -1].mean())
    stats = {
        f"{name}_rhat_energy": rhat_energy,
        f"{name}_ess_energy": ess_energy,
        f"{name}_rhat_coordinates": _nan_max(rhats),
        f"{name}_ess_coordinates": _nan_min(esses),
        f"{name}_energy_first": first,
        f"{name}_energy_last": last,
        f"{name}_energy_drift": last - first,
    }
    steps = traces["acceptance"][1]
    if steps > 0:
        stats[f"{name}_acceptance"] = float(traces["acceptance"][0] / steps)
    return stats


def energy_gap(prior: dict[str, np.ndarray], posterior: dict[str, np.ndarray]) -> dict[str, float]:
    """``energy_gap``: mean prior energy ``U(z)`` of the posterior chains' states minus that of the
    prior chains' states, over every recorded draw; ``energy_gap_first``: the same at the first
    recorded draw (with no burn-in: the states a training iteration's K-step chains reach)."""
    pooled = float(posterior["prior_energy"].mean() - prior["prior_energy"].mean())
    first = float(posterior["prior_energy"][:, 0].mean() - prior["prior_energy"][:, 0].mean())
    return {"energy_gap": pooled, "energy_gap_first": first}


def _nan_max(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if len(finite) == len(values) and finite else math.nan


def _nan_min(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return min(finite) if len(finite) == len(values) and finite else math.nan


def diagnostics_plot(results: dict[str, tuple[dict[str, np.ndarray], dict[str, float], int]]) -> np.ndarray:
    """One row per kind of chain: the energy traces of its chains and the 2-D projection (first two
    principal components) of its chains' last states, coloured by chain (the posterior's: the
    chains of its first observation). ``results``: name -> (traces, statistics, examples)."""
    panels = []
    for name, (traces, stats, examples) in results.items():
        energy = traces["energy"]
        per = f", worst of {examples} targets" if examples > 1 else ""
        title = (
            f"{name} energy: R-hat {stats[f'{name}_rhat_energy']:.3f}, ESS {stats[f'{name}_ess_energy']:.0f} "
            f"({energy.shape[0]} chains{per})"
        )
        panels.append(line_plot(energy, title=title, xlabel="draw (one sampler call each)", ylabel="U(z)"))
        chains = np.arange(0, energy.shape[0], examples)
        states = traces["states"][chains]  # (m, S, D)
        projection, share = principal_components(states.reshape(-1, states.shape[-1]))
        which = np.repeat(np.arange(len(chains)), states.shape[1])
        title = f"{name} chains, last {states.shape[1]} draws: PC1-PC2 ({100 * share.sum():.0f}% of variance)"
        panels.append(scatter_plot(projection, which, title=title, xlabel="PC 1", ylabel="PC 2"))
    return panel_grid(panels, columns=2)


# ------------------------------------------------------------------------------- callback
class ChainDiagnostics(L.Callback):
    """Mixing diagnostics of long-run chains of the learned prior and posterior (module docstring).

    Logs ``diagnostics/<part>_<statistic>`` for ``part`` in ``prior``, ``posterior``:
    ``rhat_energy``, ``ess_energy``, ``rhat_coordinates`` (the largest over the coordinates),
    ``ess_coordinates`` (the smallest), ``energy_first``, ``energy_last``, ``energy_drift`` (last
    minus first recorded draw's mean energy), ``acceptance`` (Metropolis-adjusted samplers only);
    ``diagnostics/energy_gap`` and ``energy_gap_first`` when both parts run; and
    ``diagnostics/seconds``. The plot goes to ``<run>/images/diagnostics_chains*_epoch*.png`` and
    the loggers that take images; one JSON line per evaluation to ``<run>/diagnostics.jsonl``;
    every evaluation's record stays in :attr:`history` (saved in checkpoints).

    The prior part runs when the prior is sampled by chains (it has a ``sampler`` or this callback
    has one, and a residual energy: not a plain ``GaussianPrior``); the posterior part when there is
    a posterior sampler (the model's or this callback's) and an evaluation (else training) loader to
    take the fixed observations from.

    Args:
        every_n_epochs: diagnose at the end of every this-many-th training epoch (None: only at the
            end of training and of testing).
        n_chains: chains per part ``M``.
        n_draws: recorded draws per chain ``T``.
        n_groups: the fixed groups the chains are cut into (``n_chains`` must be divisible by it);
            DDP spreads groups over ranks, so up to ``n_groups`` ranks share the work.
        burn_in: draws run before recording (0: the chains are seen from their first K-step draw).
        n_coordinates: latent coordinates (the first ones) traced besides the energy.
        posterior_examples: observations of the fixed batch the posterior chains sample (chain ``i``
            samples observation ``i % posterior_examples``); R-hat and ESS are per observation.
        sampler: the transition of one draw for both parts (e.g. ``lebm.samplers.MALA``); default:
            the prior's own sampler and the model's posterior sampler.
        seed: seeds the chains (with the epoch, the part and the group).
        at_train_end, at_test: also diagnose at the end of training and at the end of each test epoch.
        plot: draw and log the plot.
    """

    def __init__(
        self,
        every_n_epochs: int | None = 100,
        n_chains: int = 64,
        n_draws: int = 50,
        n_groups: int = 2,
        burn_in: int = 0,
        n_coordinates: int = 4,
        posterior_examples: int = 2,
        sampler: Sampler | None = None,
        seed: int = 0,
        at_train_end: bool = True,
        at_test: bool = True,
        plot: bool = True,
    ) -> None:
        for name, value, least in (
            ("n_chains", n_chains, 2),
            ("n_draws", n_draws, 4),
            ("n_groups", n_groups, 1),
            ("n_coordinates", n_coordinates, 0),
            ("burn_in", burn_in, 0),
            ("posterior_examples", posterior_examples, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"ChainDiagnostics {name} must be an integer >= {least}, got {value!r}")
        if every_n_epochs is not None and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError(f"ChainDiagnostics every_n_epochs must be an integer >= 1 or None, got {every_n_epochs!r}")
        if n_chains % n_groups:
            raise ValueError(
                f"ChainDiagnostics n_chains={n_chains} must be divisible by n_groups={n_groups} (equal groups keep "
                "the numbers independent of the number of processes): e.g. "
                f"n_chains={-(-n_chains // n_groups) * n_groups}"
            )
        if posterior_examples > n_chains:
            raise ValueError(f"ChainDiagnostics posterior_examples={posterior_examples} exceeds n_chains={n_chains}")
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"ChainDiagnostics sampler must be a lebm.samplers.Sampler, got {type(sampler).__name__}")
        self.every_n_epochs, self.n_chains, self.n_draws, self.n_groups = every_n_epochs, n_chains, n_draws, n_groups
        self.burn_in, self.n_coordinates, self.posterior_examples = burn_in, n_coordinates, posterior_examples
        self.sampler, self.seed = sampler, int(seed)
        self.at_train_end, self.at_test, self.plot = at_train_end, at_test, plot
        self.history: list[dict[str, Any]] = []
        self._observations: Tensor | None = None
        self._last_fit_epoch: int | None = None

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(record) for record in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(record) for record in state_dict.get("history", [])]

    # ------------------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "prior") or not callable(getattr(pl_module, "posterior_chain_energy", None)):
            raise ValueError(
                f"ChainDiagnostics needs a latent-variable method (a prior and posterior chains, e.g. "
                f"lebm.models.LatentEBM); {type(pl_module).__name__} has none. Remove the callback."
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs is None or trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._report(trainer, pl_module, "fit", trainer.current_epoch, log_with_module=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = max(trainer.current_epoch - 1, 0)  # the last epoch trained (Lightning has counted past it)
        if self.at_train_end and self._last_fit_epoch != epoch:
            self._report(trainer, pl_module, "fit", epoch, log_with_module=False)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_test:
            self._report(trainer, pl_module, "test", trainer.current_epoch, log_with_module=True)

    # ------------------------------------------------------------------------- evaluation
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> dict[str, Any]:
        """Run the chains of every part that applies (this rank's groups), gather the traces and
        return ``{"statistics": {name: value}, "results": {part: (traces, statistics, examples)}}``;
        every rank returns the same numbers. A collective under DDP: call it on every rank."""
        parts = self.parts(trainer, pl_module)
        rank, world = trainer.global_rank, trainer.world_size
        groups = groups_of_rank(rank, world, self.n_groups)
        results: dict[str, tuple[dict[str, np.ndarray], dict[str, float], int]] = {}
        with torch.inference_mode(False), torch.enable_grad(), modules_in_mode([pl_module], "eval"):
            for part in parts:
                shape = self.shape(part)
                local = run_local_groups(part, shape, groups, self.seed, epoch)
                rows = gather_groups(local, self.n_groups, world, lambda t: trainer.strategy.all_gather(t))
                traces = unpack_traces(rows, shape)
                results[part.name] = (traces, part_statistics(part.name, traces, part.examples), part.examples)
        statistics: dict[str, float] = {}
        for _, stats, _ in results.values():
            statistics.update(stats)
        if "prior" in results and "posterior" in results:
            statistics.update(energy_gap(results["prior"][0], results["posterior"][0]))
        return {"statistics": statistics, "results": results}

    def shape(self, part: ChainPart) -> Shape:
        latent_dim = part.latent_dim
        return Shape(
            chains_per_group=self.n_chains // self.n_groups,
            draws=self.n_draws,
            burn_in=self.burn_in,
            coordinates=min(self.n_coordinates, latent_dim),
            projection_draws=max(1, round(self.n_draws * PROJECTION_SHARE)),
            latent_dim=latent_dim,
        )

    def parts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[ChainPart]:
        """The kinds of chain that apply to ``pl_module`` (see the class docstring)."""
        found = []
        prior = self.prior_part(pl_module)
        if prior is not None:
            found.append(prior)
        posterior = self.posterior_part(trainer, pl_module)
        if posterior is not None:
            found.append(posterior)
        return found

    def prior_part(self, model: Any) -> ChainPart | None:
        prior = model.prior
        transition = transition_of(self.sampler if self.sampler is not None else getattr(prior, "sampler", None))
        if transition is None:
            return None
        with torch.no_grad():
            if prior.residual_energy(torch.zeros(2, prior.latent_dim, device=prior.device)) is None:
                return None  # a Gaussian prior: sampled exactly
        init_std = float(getattr(prior, "init_std", 1.0))
        return ChainPart(
            name="prior",
            latent_dim=prior.latent_dim,
            device=prior.device,
            transition=transition,
            energy_fn=prior.residual_energy,
            total_energy=lambda z, inputs: prior.energy(z),
            prior_energy=prior.energy,
            start=lambda n, g: torch.randn(n, prior.latent_dim, generator=g, device=prior.device) * init_std,
            inputs=lambda first, stop: (),
            reference_precision=prior.reference_precision,
            freeze=[prior],
            module_mode="eval",
        )

    def posterior_part(self, trainer: L.Trainer, model: Any) -> ChainPart | None:
        transition = transition_of(self.sampler if self.sampler is not None else model.posterior_sampler)
        if transition is None:
            return None
        x = self.observations(trainer, model)
        if x is None:
            return None
        prior, precision = model.prior, model.prior.reference_precision
        examples = len(x)
        std = float(getattr(model, "posterior_init_std", 1.0))

        def inputs(first: int, stop: int) -> tuple[Tensor, ...]:
            return (x[torch.arange(first, stop, device=x.device) % examples],)

        def total_energy(z: Tensor, data: tuple[Tensor, ...]) -> Tensor:
            return model.posterior_chain_energy(z, *data) + z.flatten(1).square().sum(1) * (precision / 2)

        return ChainPart(
            name="posterior",
            latent_dim=prior.latent_dim,
            device=x.device,
            transition=transition,
            energy_fn=model.posterior_chain_energy,
            total_energy=total_energy,
            prior_energy=prior.energy,
            start=lambda n, g: torch.randn(n, prior.latent_dim, generator=g, device=x.device) * std,
            inputs=inputs,
            reference_precision=precision,
            freeze=[model.decoder, prior],
            module_mode="eval",
            examples=examples,
        )

    def observations(self, trainer: L.Trainer, model: Any) -> Tensor | None:
        """The fixed observations ``(E, *x_shape)`` of the posterior chains on the model's device:
        the first ``posterior_examples`` examples of the evaluation (else training) loader's
        dataset (:func:`first_examples`), read once and broadcast from rank 0, so every rank and
        every world size sample the same posteriors."""
        if self._observations is None:
            batch = None
            with torch.random.fork_rng(devices=[]):
                for loader in _loaders(trainer):
                    batch = first_examples(loader, self.posterior_examples)
                    if batch is not None:
                        break
            x = None
            if batch is not None:
                x = model.observations(batch_observations(batch))
                x = x[: self.posterior_examples].detach().cpu().clone() if isinstance(x, Tensor) else None
            if trainer.world_size > 1:
                x = trainer.strategy.broadcast(x, src=0)
            if x is None:
                rank_zero_warn("ChainDiagnostics: no loader gives observations; the posterior chains are skipped")
                return None
            self._observations = x
        return self._observations.to(model.device)

    # ---------------------------------------------------------------------------- report
    def _report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, epoch: int, *, log_with_module: bool
    ) -> None:
        if stage == "fit":
            self._last_fit_epoch = epoch
        start = time.perf_counter()
        evaluation = self.evaluate(trainer, pl_module, epoch)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        statistics = evaluation["statistics"]
        if not evaluation["results"]:
            rank_zero_warn(f"ChainDiagnostics: {type(pl_module).__name__} has no prior or posterior chains to diagnose")
            return
        statistics["seconds"] = time.perf_counter() - start
        metrics = {f"diagnostics/{name}": float(value) for name, value in statistics.items()}
        if log_with_module:
            for name, value in metrics.items():
                pl_module.log(name, value, sync_dist=False)
        elif trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        record = {"stage": stage, "epoch": epoch, "global_step": trainer.global_step, **_json_safe(statistics)}
        self.history.append(record)
        if trainer.is_global_zero:
            if self.plot:
                key = "diagnostics/chains" if stage == "fit" else "diagnostics/chains_test"
                log_image(trainer, key, diagnostics_plot(evaluation["results"]))
            os.makedirs(trainer.default_root_dir, exist_ok=True)
            with open(os.path.join(trainer.default_root_dir, JSONL_NAME), "a") as file:
                file.write(json.dumps(record) + "\n")


def first_examples(loader: Any, n: int) -> Any:
    """The first ``n`` examples of ``loader``'s dataset, collated as the loader does: indexed
    directly, so a distributed sampler (each rank its own shard) or shuffling does not change
    them; a dataset that cannot be indexed so gives the loader's first batch. None when empty."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, Dataset) and not isinstance(dataset, IterableDataset):
        try:
            items = [dataset[i] for i in range(min(n, len(dataset)))]  # type: ignore[arg-type]
            if items:
                return (getattr(loader, "collate_fn", None) or default_collate)(items)
        except (TypeError, KeyError, IndexError, ValueError):  # e.g. a dataset keyed by EpochKey
            pass
    try:
        return next(iter(loader))
    except (StopIteration, TypeError):
        return None


def _loaders(trainer: L.Trainer) -> list[Any]:
    """Candidate loaders for the fixed batch: the stage's evaluation loader first, then the others."""
    names = ["test", "val", "train"] if trainer.testing else ["val", "test", "train"]
    found = []
    for name in names:
        loader = None
        if trainer.datamodule is not None:
            try:
                loader = getattr(trainer.datamodule, f"{name}_dataloader")()
            except Exception:  # noqa: BLE001 - a datamodule without this split, or not set up for it
                loader = None
        if loader is None:
            attribute = "train_dataloader" if name == "train" else f"{name}_dataloaders"
            loader = getattr(trainer, attribute, None)
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is not None:
            found.append(loader)
    return found


def _json_safe(values: dict[str, float]) -> dict[str, float | None]:
    """NaN and infinities as None (JSON has no such numbers)."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}
