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
computes the statistics from the full traces (:mod:`lebm.callbacks.long_chains`). A single process
runs every group in order: the same chains, the same numbers. The transition sampler is copied
afresh for each group, so a sampler that adapts its state within a call sees the same history on
any world size (and the training sampler's own state is never touched).

**Randomness.** The chains never draw from the training or evaluation streams or from torch's global
RNG; reading the fixed batch runs under a forked global RNG. The model is in eval mode during the
chains and gets its modes back afterwards.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate

from lebm.atomic import replaced_atomically
from lebm.callbacks.images import log_image
from lebm.callbacks.long_chains import (
    ChainPart,
    Shape,
    gather_groups,
    groups_of_rank,
    run_local_groups,
    transition_of,
    unpack_traces,
)
from lebm.callbacks.plots import line_plot, panel_grid, principal_components, scatter_plot
from lebm.data.batches import batch_observations
from lebm.metrics.mixing import bulk_ess, split_rhat
from lebm.samplers import Sampler
from lebm.samplers.chain import modules_in_mode

#: Share of the last draws whose latent states the 2-D projection shows.
PROJECTION_SHARE = 0.25
#: File in the run folder that receives one JSON line per evaluation.
JSONL_NAME = "diagnostics.jsonl"


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
        flat = states.reshape(-1, states.shape[-1])
        finite = np.isfinite(flat).all(axis=1)  # a diverged chain's states are left out of the projection
        which = np.repeat(np.arange(len(chains)), states.shape[1])[finite]
        if finite.sum() >= 2:
            projection, share = principal_components(flat[finite])
        else:
            projection, share = np.zeros((0, 2)), np.zeros(2)
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
        sampler: the transition of one draw of the prior's chains (e.g. ``lebm.samplers.MALA``);
            default: the prior's own sampler.
        posterior_sampler: the transition of one draw of the posterior chains; default: the
            model's posterior sampler. (A prior and a posterior usually need different step sizes.)
        seed: seeds the chains (with the epoch, the part and the group).
        at_train_end: also diagnose at the end of training.
        at_test: also diagnose at the end of each test epoch.
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
        posterior_sampler: Sampler | None = None,
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
        for name, value in (("sampler", sampler), ("posterior_sampler", posterior_sampler)):
            if value is not None and not isinstance(value, Sampler):
                raise TypeError(f"ChainDiagnostics {name} must be a lebm.samplers.Sampler, got {type(value).__name__}")
        self.every_n_epochs, self.n_chains, self.n_draws, self.n_groups = every_n_epochs, n_chains, n_draws, n_groups
        self.burn_in, self.n_coordinates, self.posterior_examples = burn_in, n_coordinates, posterior_examples
        self.sampler, self.posterior_sampler, self.seed = sampler, posterior_sampler, int(seed)
        self.at_train_end, self.at_test, self.plot = at_train_end, at_test, plot
        self.history: list[dict[str, Any]] = []
        self._observations: Tensor | None = None
        self._last_fit_epoch: int | None = None

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs with ``self.log`` (what a callback can ``monitor``): ``diagnostics/<statistic>``."""
        return ("diagnostics/*",)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(record) for record in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(record) for record in state_dict.get("history", [])]

    # ------------------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check_method(pl_module)

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless ``pl_module`` has what the callback reads (the ``lebm``
        CLI calls it when the run is built, ``Method.check_trainer`` when a run starts)."""
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
        """The sizes of ``part``'s traces: chains per group, draws, burn-in, traced coordinates (at
        most the latent size) and the draws kept whole for the projections."""
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
        """The prior's chains: ``model.prior``'s residual energy under this callback's ``sampler``
        (default: the prior's own), started from ``N(0, init_std^2 I)``. None when there is no
        sampler or the prior is Gaussian (sampled exactly, nothing to diagnose)."""
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
        """The posterior chains: ``model.posterior_chain_energy`` on the fixed :meth:`observations`
        (chain ``i`` samples observation ``i % posterior_examples``) under ``posterior_sampler``
        (default: the model's), started from ``N(0, posterior_init_std^2 I)``. None when there is no
        sampler or no observations."""
        chosen = self.posterior_sampler if self.posterior_sampler is not None else model.posterior_sampler
        transition = transition_of(chosen)
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
            path = os.path.join(trainer.default_root_dir, JSONL_NAME)
            try:  # the records so far, and this one: the file is replaced whole, never left half-written
                with open(path, encoding="utf-8") as file:
                    earlier = file.read()
            except FileNotFoundError:
                earlier = ""
            with replaced_atomically(path, "w", encoding="utf-8") as file:
                file.write(earlier + json.dumps(record) + "\n")


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
