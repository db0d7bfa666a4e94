"""Recovery from a divergence: roll back to the last good state, lower step sizes and learning rates, go on.

A :class:`RecoveryPolicy` attached to a method (``method.divergence_recovery``; the
``lebm.callbacks.DivergenceRecovery`` callback attaches one, ``recipes/_recovery.yaml`` adds that
callback to any recipe) changes what the divergence guard's trip does in
:meth:`lebm.models.Method.finish_training_step`:

1. **roll back** to the last snapshot: the parameters and every buffer (persistent chains, stage
   counters, a KL warm-up's iterations), every optimiser's state (Adam's moments and step counts)
   and the random streams (the rank's training stream and torch's global RNG). A snapshot is a copy
   kept in memory, taken when training starts (or resumes), every ``snapshot_every_n_steps``
   training steps at the end of a good step, and whenever a checkpoint is saved (so a run resumed
   from any checkpoint rolls back to the same states as the run that wrote it);
2. **lower** the step size of the chosen samplers by ``step_size_factor`` (``Sampler.scale_step_size``)
   and every learning rate by ``lr_factor`` (the optimisers' rates and the schedulers' base rates,
   so a per-epoch decay goes on from the lowered value);
3. **go on** with the next batch: the diverged batch's update is gone; Lightning's counters (epoch,
   batch, global step) and the learning-rate schedules (per epoch) are not rolled back.

After ``max_recoveries`` recoveries the next trip stops training as the guard does without a policy.
Each recovery is printed on its own line (rank 0), logged as ``recovery/count`` and kept in a
:class:`RecoveryRecord` (count, events, the factors applied) that checkpoints save and
:meth:`RecoveryRecord.apply` re-applies on load: a resumed run keeps the lowered step sizes and
learning rates, and continues exactly. Under DDP the guard's verdict is common to all ranks
(``decide``), so every rank rolls back at the same step; nothing in a rollback communicates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lebm.samplers import Sampler
from lebm.training.choices import check_choice

#: Key of the recovery record in a checkpoint.
CHECKPOINT_KEY = "lebm_divergence_recovery"
#: Where a snapshot is kept.
SNAPSHOT_DEVICES = {"same": "the model's device", "cpu": "host memory"}


# ------------------------------------------------------------------------------------ samplers
def find_samplers(model: nn.Module) -> dict[str, Sampler]:
    """Every sampler the model's training chains use, by dotted path (``"prior.sampler"``,
    ``"posterior_sampler"``, ``"data_sampler"``): each :class:`~lebm.samplers.Sampler` held as an
    attribute of the model or of one of its submodules, except private ones (``_name``),
    evaluation-only ones (``test_*``, e.g. DualMCMC's ``test_data_sampler``) and samplers a sampler
    wraps (``PersistentChains`` scales its wrapped sampler itself). A sampler reached by two paths
    is listed once."""
    found: dict[str, Sampler] = {}
    seen: set[int] = set()

    def add(path: str, sampler: Sampler) -> None:
        if id(sampler) not in seen:
            seen.add(id(sampler))
            found[path] = sampler

    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if any(name == path or name.startswith(path + ".") for path in found):
            continue  # inside a sampler module
        if isinstance(module, Sampler):
            if name and not leaf.startswith(("_", "test_")):
                add(name, module)
            continue
        for attribute, value in vars(module).items():
            if isinstance(value, Sampler) and not attribute.startswith(("_", "test_")):
                add(f"{name}.{attribute}" if name else attribute, value)
    return found


def resolve_sampler(model: nn.Module, path: str) -> Sampler:
    """The sampler at the dotted attribute ``path`` of ``model``; a clear error if there is none."""
    value: Any = model
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            break
    if not isinstance(value, Sampler):
        known = ", ".join(find_samplers(model)) or "none"
        what = "nothing" if value is None else f"a {type(value).__name__}"
        raise ValueError(
            f"divergence recovery: samplers lists {path!r}, but {type(model).__name__}.{path} is {what}, not a "
            f"Sampler; the model's samplers are: {known}"
        )
    return value


# ------------------------------------------------------------------------------ learning rates
def scale_learning_rates(optimizers: Iterable[Any], schedulers: Iterable[Any], factor: float) -> None:
    """Multiply every param group's ``lr`` (and ``initial_lr``) and every scheduler's ``base_lrs``
    (and last rates) by ``factor``: the schedule goes on as if it had been configured with the lower
    rates. :func:`lebm.training.resume.apply_optimizer_settings` scales freshly configured optimisers
    by the same factors, in the same order, so a resumed run compares equal numbers."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for key in ("lr", "initial_lr"):
                if isinstance(group.get(key), (int, float)):
                    group[key] = group[key] * factor
    for scheduler in schedulers:
        if isinstance(getattr(scheduler, "base_lrs", None), list):
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        if isinstance(getattr(scheduler, "_last_lr", None), list):
            scheduler._last_lr = [lr * factor for lr in scheduler._last_lr]


def _learning_rates(optimizers: Iterable[Any]) -> list[list[float]]:
    return [[float(group["lr"]) for group in optimizer.param_groups] for optimizer in optimizers]


# ----------------------------------------------------------------------------------- the record
@dataclass
class RecoveryRecord:
    """What recoveries did to a run, saved in its checkpoints (plain data under :data:`CHECKPOINT_KEY`).

    Attributes:
        count: recoveries so far.
        events: one dict per recovery: ``epoch``, ``step`` (batch index), ``global_step``, ``cause``
            (what diverged), ``rolled_back_to`` (the global step of the snapshot), ``step_sizes``
            (``{sampler path: new value}``) and ``learning_rates`` (per optimiser, per param group).
        step_size_factors: ``{sampler path: [factor, ...]}`` applied so far, in order.
        lr_factors: the factors applied to every learning rate so far, in order.
    """

    count: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    step_size_factors: dict[str, list[float]] = field(default_factory=dict)
    lr_factors: list[float] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The record as plain data (what a checkpoint stores)."""
        return {
            "count": self.count,
            "events": [dict(event) for event in self.events],
            "step_size_factors": {path: list(factors) for path, factors in self.step_size_factors.items()},
            "lr_factors": list(self.lr_factors),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> RecoveryRecord:
        """The record saved by :meth:`state` (an empty record for None)."""
        if not state:
            return cls()
        return cls(
            count=int(state.get("count", 0)),
            events=[dict(event) for event in state.get("events", [])],
            step_size_factors={path: [float(f) for f in fs] for path, fs in state.get("step_size_factors", {}).items()},
            lr_factors=[float(f) for f in state.get("lr_factors", [])],
        )

    def apply_step_sizes(self, model: nn.Module, applied: RecoveryRecord) -> None:
        """Lower ``model``'s samplers by this record's factors. ``applied``: the record the model's
        samplers already carry (a model built from its hyperparameters or a recipe carries none; the
        model that wrote the checkpoint, loading it again, carries its own): only the factors beyond
        it are applied, and factors it has that this record lacks are undone first."""
        for path in sorted(set(self.step_size_factors) | set(applied.step_size_factors)):
            wanted = self.step_size_factors.get(path, [])
            done = applied.step_size_factors.get(path, [])
            sampler = resolve_sampler(model, path)
            if wanted[: len(done)] != done:
                for factor in reversed(done):
                    sampler.scale_step_size(1.0 / factor)
                done = []
            for factor in wanted[len(done) :]:
                sampler.scale_step_size(factor)


# --------------------------------------------------------------------------------- snapshots
def _copy(value: Any, device: torch.device | None) -> Any:
    """A deep copy of nested dicts, lists and tuples whose tensors are cloned (onto ``device``)."""
    if isinstance(value, Tensor):
        copied = value.detach().clone() if device is None else value.detach().to(device, copy=True)
        return copied
    if isinstance(value, dict):
        return {key: _copy(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(item, device) for item in value)
    return value


@dataclass
class Snapshot:
    """A copy of a method's training state (see :meth:`RecoveryPolicy.take_snapshot`)."""

    global_step: int
    state_dict: dict[str, Tensor]
    other_buffers: dict[str, Tensor]
    optimizers: list[dict[str, Any]]
    streams: dict[str, Tensor]


def _random_states(model: Any) -> dict[str, Tensor]:
    states = {"global_cpu": torch.get_rng_state()}
    train = model.random_streams.train
    if train is not None:
        states["train"] = train.get_state()
    if model.device.type == "cuda":
        states["global_cuda"] = torch.cuda.get_rng_state(model.device)
    return states


# ----------------------------------------------------------------------------------- the policy
class RecoveryPolicy:
    """Recover from a divergence instead of stopping (see the module docstring).

    Args:
        max_recoveries: R, the recoveries a run may make; the trip after the R-th stops training.
        snapshot_every_n_steps: K, training steps between in-memory snapshots (a snapshot is also
            taken when training starts and whenever a checkpoint is saved).
        step_size_factor: each recovery multiplies the chosen samplers' step sizes by this; None
            leaves them.
        lr_factor: each recovery multiplies every learning rate by this; None leaves them.
        samplers: dotted paths of the samplers to lower (``["prior.sampler"]``); None: every sampler
            the training uses (:func:`find_samplers`).
        snapshot_device: ``"same"``: keep the snapshot on the model's device (fastest); ``"cpu"``: in
            host memory (frees device memory, costs a copy each way).
    """

    def __init__(
        self,
        max_recoveries: int = 3,
        snapshot_every_n_steps: int = 50,
        step_size_factor: float | None = 0.5,
        lr_factor: float | None = 0.5,
        samplers: Sequence[str] | None = None,
        snapshot_device: Literal["same", "cpu"] = "same",
    ) -> None:
        if isinstance(max_recoveries, bool) or not isinstance(max_recoveries, int) or max_recoveries < 0:
            raise ValueError(f"divergence recovery: max_recoveries must be an integer >= 0, got {max_recoveries!r}")
        if isinstance(snapshot_every_n_steps, bool) or not isinstance(snapshot_every_n_steps, int):
            raise ValueError(
                f"divergence recovery: snapshot_every_n_steps must be an integer, got {snapshot_every_n_steps!r}"
            )
        if snapshot_every_n_steps < 1:
            raise ValueError(f"divergence recovery: snapshot_every_n_steps must be >= 1, got {snapshot_every_n_steps}")
        for name, factor in (("step_size_factor", step_size_factor), ("lr_factor", lr_factor)):
            if factor is not None and not (isinstance(factor, (int, float)) and 0 < factor <= 1):
                raise ValueError(f"divergence recovery: {name} must be in (0, 1], or null to leave it, got {factor!r}")
        check_choice("divergence recovery: snapshot_device", snapshot_device, SNAPSHOT_DEVICES)
        self.max_recoveries = int(max_recoveries)
        self.snapshot_every_n_steps = int(snapshot_every_n_steps)
        self.step_size_factor = None if step_size_factor is None else float(step_size_factor)
        self.lr_factor = None if lr_factor is None else float(lr_factor)
        self.samplers = None if samplers is None else [str(path) for path in samplers]
        self.snapshot_device = snapshot_device
        self.snapshot: Snapshot | None = None
        self.steps_since_snapshot = 0

    # ------------------------------------------------------------------------- samplers
    def chosen_samplers(self, model: nn.Module) -> dict[str, Sampler]:
        """``{path: sampler}`` that a recovery lowers (none without a ``step_size_factor``).
        Listed paths must lead to samplers with a step size; found ones without one are left out."""
        if self.step_size_factor is None:
            return {}
        if self.samplers is not None:
            chosen = {path: resolve_sampler(model, path) for path in self.samplers}
            for sampler in chosen.values():
                sampler.current_step_size()  # a TypeError naming the sampler if it has no step size
            return chosen
        chosen = {}
        for path, sampler in find_samplers(model).items():
            try:
                sampler.current_step_size()
            except TypeError:
                continue
            chosen[path] = sampler
        return chosen

    # ------------------------------------------------------------------------ snapshots
    def take_snapshot(self, model: Any) -> None:
        """Copy the model's parameters and buffers, its optimisers' states and its random streams."""
        device = torch.device("cpu") if self.snapshot_device == "cpu" else None
        state_dict = model.state_dict()
        other = {name: buffer for name, buffer in model.named_buffers() if name not in state_dict}
        self.snapshot = Snapshot(
            global_step=int(model.global_step),
            state_dict=_copy(dict(state_dict), device),
            other_buffers=_copy(other, device),
            optimizers=[_copy(optimizer.state_dict(), device) for optimizer in model.trainer.optimizers],
            streams=_copy(_random_states(model), None),
        )
        self.steps_since_snapshot = 0

    def after_good_step(self, model: Any) -> None:
        """Count a training step that passed the guard; snapshot every ``snapshot_every_n_steps``."""
        self.steps_since_snapshot += 1
        if self.snapshot is None or self.steps_since_snapshot >= self.snapshot_every_n_steps:
            self.take_snapshot(model)

    def roll_back(self, model: Any) -> int:
        """Restore the snapshot into ``model``; returns the snapshot's global step. The optimisers'
        hyperparameters (learning rates as the schedule has them now) are kept."""
        snapshot = self.snapshot
        if snapshot is None:
            raise RuntimeError("divergence recovery: no snapshot to roll back to (training has not started)")
        model.load_state_dict(_copy(snapshot.state_dict, None))
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in snapshot.other_buffers.items():
                buffers[name].copy_(value)
        for optimizer, saved in zip(model.trainer.optimizers, snapshot.optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)  # a window of accumulated gradients includes the bad batch's
            hyper = [
                {key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups
            ]
            optimizer.load_state_dict(_copy(saved, None))  # a copy: loading may keep the tensors it is given
            for group, kept in zip(optimizer.param_groups, hyper, strict=True):
                group.update(kept)
        streams = snapshot.streams
        torch.set_rng_state(streams["global_cpu"].clone())
        if "train" in streams and model.random_streams.train is not None:
            model.random_streams.train.set_state(streams["train"].clone())
        if "global_cuda" in streams:
            torch.cuda.set_rng_state(streams["global_cuda"].clone(), model.device)
        self.steps_since_snapshot = 0
        return snapshot.global_step

    # ------------------------------------------------------------------------- recovery
    def can_recover(self, record: RecoveryRecord) -> bool:
        """Whether a recovery is left (and a snapshot to roll back to)."""
        return record.count < self.max_recoveries and self.snapshot is not None

    def recover(self, model: Any, record: RecoveryRecord, cause: str, epoch: int, step: int) -> dict[str, Any]:
        """Roll back, lower the step sizes and learning rates, record and print the event."""
        rolled_back_to = self.roll_back(model)
        step_sizes: dict[str, float] = {}
        for path, sampler in self.chosen_samplers(model).items():
            assert self.step_size_factor is not None
            step_sizes[path] = float(sampler.scale_step_size(self.step_size_factor))
            record.step_size_factors.setdefault(path, []).append(self.step_size_factor)
        optimizers = list(model.trainer.optimizers)
        if self.lr_factor is not None:
            schedulers = [config.scheduler for config in model.trainer.lr_scheduler_configs]
            scale_learning_rates(optimizers, schedulers, self.lr_factor)
            record.lr_factors.append(self.lr_factor)
        record.count += 1
        event = {
            "epoch": int(epoch),
            "step": int(step),
            "global_step": int(model.global_step),
            "cause": cause,
            "rolled_back_to": rolled_back_to,
            "step_sizes": step_sizes,
            "learning_rates": _learning_rates(optimizers),
        }
        record.events.append(event)
        if model.global_rank == 0:
            print("\n" + describe(event, record.count, self.max_recoveries), file=sys.stderr, flush=True)
        return event

    def exhausted(self, message: str, record: RecoveryRecord) -> str:
        """The guard's message when no recovery is left."""
        if record.count == 0:
            return message
        return (
            f"{message} It diverged again after {record.count} recoveries from a divergence "
            f"(max_recoveries: {self.max_recoveries})."
        )


def describe(event: Mapping[str, Any], count: int, limit: int) -> str:
    """One line for a recovery: where, why, and the new values."""
    sizes = ", ".join(f"{path} {value:.4g}" for path, value in event["step_sizes"].items()) or "unchanged"
    rates = "; ".join(", ".join(f"{lr:.4g}" for lr in groups) for groups in event["learning_rates"]) or "none"
    return (
        f"Recovered from a divergence ({count} of {limit}) at epoch {event['epoch']}, step {event['step']} "
        f"(global step {event['global_step']}): {event['cause']}. Rolled back to global step "
        f"{event['rolled_back_to']}; step sizes now: {sizes}; learning rates now: {rates}."
    )
