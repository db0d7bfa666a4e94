"""The divergence guard: stop training at the first non-finite or runaway quantity."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


class TrainingDiverged(RuntimeError):
    """Training stopped because a watched quantity was non-finite or beyond its limit. Raised
    inside the training step, before any later checkpoint is written: the last checkpoint on disk
    holds the last good state.

    Attributes:
        cause: what diverged, e.g. ``"train/prior_loss = nan (not finite)"`` (the message's middle).
    """

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


class DivergenceGuard:
    """Watches named quantities after every training step.

    - a **non-finite** value in any watched tensor (a loss, an energy, a chain's states) always
      stops training;
    - a scalar whose absolute value exceeds its entry in ``limits`` stops training from epoch
      ``after_epoch`` on (e.g. LEBM's official rule ``{"train/decoder_nll": 1666.7}`` after epoch 10,
      Dual-MCMC's ``|errE| > 1e4``).

    The check costs a few operations and one device-to-host transfer per step (one flag for all
    quantities: the scalars are checked as one stacked vector) and, under DDP, one tiny all-reduce
    through ``decide`` so that every rank stops together.

    By default a trip stops training. With a recovery policy (the ``lebm.callbacks.DivergenceRecovery``
    callback, ``recipes/_recovery.yaml``; :mod:`lebm.training.recovery`) the method instead rolls back to
    its last good state, lowers the step sizes and learning rates and goes on, at most
    ``max_recoveries`` times; the trip after that stops training with this same message.

    The message ends with the way back, which depends on what is on disk (``last_checkpoint`` of
    :meth:`check`): a checkpoint to resume from (named, with the ``--ckpt_path`` that resumes it),
    or none yet (a divergence in the first epoch of a new run): then the same command, run again,
    starts afresh.

    Args:
        limits: ``{quantity name: largest allowed |value|}``.
        after_epoch: the first epoch (counting from 0) at which ``limits`` apply.
        hint: what the user should lower (a sentence), put before the way back in the message.
    """

    def __init__(self, limits: Mapping[str, float] | None = None, after_epoch: int = 0, hint: str = "") -> None:
        self.limits = {str(name): float(limit) for name, limit in (limits or {}).items()}
        for name, limit in self.limits.items():
            if not limit > 0 or math.isnan(limit):
                raise ValueError(f"divergence limit of {name!r} must be a positive number, got {limit}")
        if after_epoch < 0:
            raise ValueError(f"divergence_after_epoch must be >= 0, got {after_epoch}")
        self.after_epoch = int(after_epoch)
        self.hint = hint
        self._bounds_cache: dict[tuple[object, ...], Tensor] = {}

    def check(
        self,
        values: Mapping[str, Tensor],
        *,
        epoch: int,
        step: int,
        decide: Callable[[bool], bool] | None = None,
        last_checkpoint: Callable[[], str | bool | None] | None = None,
    ) -> None:
        """Raise :class:`TrainingDiverged` if any of ``values`` is non-finite, or over its limit.

        Args:
            values: ``{name: tensor}`` of any shapes (scalars for the limits).
            epoch: the current epoch, for the message.
            step: the current global step, for the message.
            decide: turns this rank's verdict into the verdict of all ranks (e.g.
                ``strategy.reduce_boolean_decision(flag, all=False)``); None on one process.
            last_checkpoint: called on a trip only: the path of the checkpoint that holds the last
                good state, False when the run has none (nothing written yet, not resumed), None
                when that is not known (no Trainer); None: not known.
        """
        tensors = {name: value for name, value in values.items() if isinstance(value, Tensor)}
        if not tensors:
            return
        limits = self.limits if epoch >= self.after_epoch else {}
        bad = bool(self._any_bad(tensors, limits))  # the step's one synchronisation with the device
        if decide is not None:
            bad = decide(bad)
        if bad:
            cause = self._cause(tensors, limits)
            checkpoint = last_checkpoint() if last_checkpoint is not None else None
            raise TrainingDiverged(self._message(cause, epoch, step, checkpoint), cause)

    def device_flag(self, values: Mapping[str, Tensor], *, epoch: int) -> Tensor:
        """A 0-d bool tensor on the values' device (a CPU False when there are none), True when
        :meth:`check` would stop at this ``epoch``: the check without its read on the host (a
        recorded iteration keeps it on the device, and the host reads it every few iterations)."""
        tensors = {name: value for name, value in values.items() if isinstance(value, Tensor)}
        if not tensors:
            return torch.zeros((), dtype=torch.bool)
        return self._any_bad(tensors, self.limits if epoch >= self.after_epoch else {})

    def recorded_trip(
        self,
        values: Mapping[str, Tensor],
        *,
        epoch: int,
        step: int,
        iterations: int,
        last_checkpoint: Callable[[], str | bool | None] | None = None,
    ) -> TrainingDiverged:
        """The error for a trip that recorded iterations flagged on the device, read by the host up
        to ``iterations`` iterations late: what diverged when this step's ``values`` show it, else
        which kinds of quantity the flag watches."""
        tensors = {name: value for name, value in values.items() if isinstance(value, Tensor)}
        limits = self.limits if epoch >= self.after_epoch else {}
        shown = self._cause(tensors, limits, unseen="a loss, energy or chain state was not finite or over its limit")
        shown += f" (in one of the last {iterations} recorded iterations: the host reads their guard every few)"
        checkpoint = last_checkpoint() if last_checkpoint is not None else None
        return TrainingDiverged(self._message(shown, epoch, step, checkpoint), shown)

    def _any_bad(self, tensors: Mapping[str, Tensor], limits: Mapping[str, float]) -> Tensor:
        """A device flag: whether any tensor has a non-finite entry or any limited scalar is over its
        limit. The scalars (a step's losses and energies) are checked as one stacked vector against a
        cached vector of limits (``inf`` where a name has none), so the check is a few operations
        whatever the number of quantities, not a few per quantity."""
        scalars = [name for name, value in tensors.items() if value.numel() == 1]
        flags = []
        if scalars:
            stacked = torch.stack([tensors[name].detach().reshape(()).float() for name in scalars])
            flags.append(~torch.isfinite(stacked).all())
            if any(name in limits for name in scalars):
                bounds = self._bounds(tuple(scalars), limits, stacked.device)
                flags.append((stacked.abs() > bounds).any())
        for name, value in tensors.items():
            if value.numel() != 1:
                flags.append(~torch.isfinite(value.detach()).all())
                if name in limits:
                    flags.append((value.detach().abs() > limits[name]).any())
        return torch.stack(flags).any()

    def _bounds(self, names: tuple[str, ...], limits: Mapping[str, float], device: torch.device) -> Tensor:
        """``(len(names),)`` float32 limits on ``device`` (``inf`` for names without one), cached:
        made once per set of names, not copied to the device at every step."""
        key = (names, tuple(sorted(limits.items())), str(device))
        if key not in self._bounds_cache:
            if len(self._bounds_cache) >= 8:  # a few sets of names alternate at most (a recovery step logs others)
                self._bounds_cache.clear()
            bounds = [limits.get(name, math.inf) for name in names]
            self._bounds_cache[key] = torch.tensor(bounds, dtype=torch.float32, device=device)
        return self._bounds_cache[key]

    def _cause(
        self,
        tensors: Mapping[str, Tensor],
        limits: Mapping[str, float],
        unseen: str = "another process's quantities diverged",
    ) -> str:
        """What diverged, one clause per quantity (at most three shown); ``unseen`` when none of
        ``tensors`` shows it."""
        problems = []
        for name, value in tensors.items():
            value = value.detach()
            if not torch.isfinite(value).all():
                shown = float(value) if value.numel() == 1 else "non-finite entries"
                problems.append(f"{name} = {shown} (not finite)")
            elif name in limits and (value.abs() > limits[name]).any():
                problems.append(f"{name} = {float(value.abs().max()):.4g} > limit {limits[name]:g}")
        if not problems:
            problems.append(unseen)
        return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")

    def _message(self, shown: str, epoch: int, step: int, checkpoint: str | bool | None = None) -> str:
        """The message: what diverged, where, what to lower and the way back (:func:`way_back`)."""
        hint = f" {self.hint}" if self.hint else ""
        return f"training diverged at epoch {epoch}, step {step}: {shown}. {way_back(checkpoint, hint)}"


def way_back(checkpoint: str | bool | None, hint: str = "") -> str:
    """How to go on after a divergence, with ``hint`` (what to lower, a sentence with its leading
    space) in its place. ``checkpoint``: the path of the checkpoint holding the last good state
    (resume from it), False when there is none (run the same command again: it starts afresh; a
    ``--ckpt_path`` would find nothing to resume), None when not known."""
    if isinstance(checkpoint, str) and checkpoint:
        return (
            f"Training stopped before saving this state: the last checkpoint, {checkpoint}, holds the last good "
            f"one.{hint} Then resume from it (--ckpt_path {checkpoint})."
        )
    if checkpoint is False:
        return (
            f"Training stopped before any checkpoint was written, so there is nothing to resume.{hint} Then run "
            "the same command again, without --ckpt_path: it starts the run afresh."
        )
    return (
        f"Training stopped before saving this state: the last checkpoint written, if any, holds the last good "
        f"one.{hint} Then resume from it, or start again if none was written."
    )


def last_good_checkpoint(trainer: Any, since: float | None = None) -> str | bool | None:
    """The checkpoint a run that diverges now can go back to: the newest file its checkpoint
    callbacks wrote (``last_model_path``, ``best_model_path``, ``best_k_models``; when none of them is a
    file, as when a save was refused, the newest ``.ckpt`` written in their folders at or after
    ``since``, the time this fit started), else the one it resumed from
    (``trainer.ckpt_path``); False when there is none (a new run that wrote nothing yet, or one
    without checkpointing); None without a Trainer (not known)."""
    if trainer is None:
        return None
    written = [
        path
        for callback in getattr(trainer, "checkpoint_callbacks", [])
        for path in (
            getattr(callback, "last_model_path", ""),
            getattr(callback, "best_model_path", ""),
            *(getattr(callback, "best_k_models", None) or {}),
        )
        if isinstance(path, str) and path and os.path.isfile(path)
    ]
    if not written and since is not None:  # a save refused by a recorded iteration's late trip was named already
        folders = {getattr(callback, "dirpath", None) for callback in getattr(trainer, "checkpoint_callbacks", [])}
        written = [
            path
            for folder in folders
            if isinstance(folder, str) and os.path.isdir(folder)
            for path in (os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".ckpt"))
            if os.path.isfile(path) and os.path.getmtime(path) >= since
        ]
    if written:
        return max(written, key=os.path.getmtime)
    resumed = getattr(trainer, "ckpt_path", None)
    if isinstance(resumed, str) and os.path.isfile(resumed):
        return resumed
    return False
