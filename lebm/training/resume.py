"""Resuming: with changed optimiser settings (the recipe's values, not the checkpoint's), and only
when there is training left to do.

A restored optimiser takes its learning rate, betas and weight decay from the checkpoint, and a
restored scheduler its base rates and decay; so a run resumed with another ``decoder_lr`` would keep
the old one. :func:`apply_optimizer_settings` rewrites those entries of the checkpoint (before
Lightning restores them) from the optimisers and schedulers the method configures now: the learning
rate in progress is rescaled, ``lr = lr_saved * lr_new / lr_initial_saved``, so the schedule's
progress (``gamma^epochs``) carries over. A checkpoint written with the same settings is unchanged.

:func:`nothing_left_message` says when a resume would train nothing (Lightning ends such a fit at
once, in silence): when ``max_epochs`` is at or below the epochs the checkpoint holds (a checkpoint
saved at an epoch's end holds that epoch; one saved inside an epoch, by a kill, holds the epochs
before it and goes on with that one) or ``max_steps`` at or below its steps.

:func:`keep_a_cut_epoch_open` saves an epoch that ``max_steps`` ended inside as unfinished, so that
a resume trains the rest of it (Lightning would start the next epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

from lebm.training.recovery import scale_learning_rates
from lebm.user_warnings import warn_user


def configured(model: Any) -> tuple[list[Optimizer], list[Any]]:
    """``(optimizers, schedulers)`` as ``model.configure_optimizers()`` makes them now."""
    out = model.configure_optimizers()
    if isinstance(out, Optimizer):
        return [out], []
    if isinstance(out, dict):
        scheduler = out.get("lr_scheduler")
        scheduler = scheduler.get("scheduler") if isinstance(scheduler, dict) else scheduler
        return [out["optimizer"]], [] if scheduler is None else [scheduler]
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (list, tuple)):
        schedulers = [s.get("scheduler") if isinstance(s, dict) else s for s in out[1]]
        return list(out[0]), schedulers
    if isinstance(out, (list, tuple)):
        return [item for item in out if isinstance(item, Optimizer)], []
    return [], []


def apply_optimizer_settings(model: Any, checkpoint: dict[str, Any], lr_factors: Sequence[float] = ()) -> None:
    """Rewrite the checkpoint's optimiser and scheduler states with the settings ``model``
    configures now (learning rates rescaled, betas, weight decay, decay factors). ``lr_factors``:
    the factors divergence recoveries applied to every learning rate (:mod:`lebm.training.recovery`),
    applied to the configured rates first, so that they carry over."""
    states = checkpoint.get("optimizer_states") or []
    optimizers, schedulers = configured(model)
    for factor in lr_factors:
        scale_learning_rates(optimizers, schedulers, factor)
    if len(optimizers) != len(states):
        return  # another layout of optimisers: Lightning reports it when it restores them
    for optimizer, state in zip(optimizers, states, strict=True):
        for group, saved in zip(optimizer.param_groups, state.get("param_groups", []), strict=False):
            initial = saved.get("initial_lr", saved.get("lr"))
            if "lr" in group and initial is not None and group["lr"] != initial:
                # a frozen net (rate 0) gets the new rate outright; otherwise the schedule's progress is kept
                saved["lr"] = saved["lr"] * group["lr"] / initial if initial else group["lr"]
                if "initial_lr" in saved:
                    saved["initial_lr"] = group["lr"]
            for key in ("betas", "weight_decay"):
                if key in group and key in saved and saved[key] != group[key]:
                    saved[key] = group[key]
    saved_schedulers = checkpoint.get("lr_schedulers") or []
    if len(schedulers) != len(saved_schedulers):
        return
    for scheduler, saved in zip(schedulers, saved_schedulers, strict=True):
        fresh = scheduler.state_dict()
        if "base_lrs" in saved and saved["base_lrs"] != fresh.get("base_lrs"):
            ratios = [new / old if old else 1.0 for new, old in zip(fresh["base_lrs"], saved["base_lrs"], strict=False)]
            saved["base_lrs"] = list(fresh["base_lrs"])
            if "_last_lr" in saved:
                saved["_last_lr"] = [lr * r for lr, r in zip(saved["_last_lr"], ratios, strict=False)]
        if "gamma" in saved and "gamma" in fresh:
            saved["gamma"] = fresh["gamma"]


def epochs_held(checkpoint: dict[str, Any]) -> tuple[int, bool] | None:
    """``(whole epochs trained, whether it was saved inside the next one)`` from a Lightning
    checkpoint's loop progress; None when it has none (not written by ``fit``)."""
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]
        processed, started = int(progress["processed"]), int(progress["started"])
    except (KeyError, TypeError, ValueError):
        return None
    return processed, started > processed


def setting(name: str, value: int, command: bool) -> str:
    """A Trainer setting as the user gave it: ``--trainer.max_epochs 3`` (the command) or
    ``max_epochs=3`` (Python)."""
    return f"--trainer.{name} {value}" if command else f"{name}={value}"


def nothing_left_message(
    checkpoint: dict[str, Any], path: Any, max_epochs: Any, max_steps: Any, command: bool = True
) -> str | None:
    """The one line for a resume of ``checkpoint`` (read from ``path``) that the Trainer's
    ``max_epochs`` / ``max_steps`` leave nothing to train, naming the setting that would (spelled
    for the ``lebm`` command, or for Python); None when training goes on (or the checkpoint does not
    say how far it got)."""
    held = epochs_held(checkpoint)
    if held is None:
        return None
    epochs, inside = held
    steps = int(checkpoint.get("global_step", 0))
    where = f"{epochs} whole epoch{'s' if epochs != 1 else ''}" + (" and part of the next" if inside else "")
    score = "lebm test" if command else "trainer.test"
    if isinstance(max_epochs, int) and 0 <= max_epochs <= epochs:
        return (
            f"{path} holds {where} ({steps} steps), so {setting('max_epochs', max_epochs, command)} leaves nothing "
            f"to train: give {setting('max_epochs', epochs + 1, command)} or more to go on (to score it, use {score})"
        )
    if isinstance(max_steps, int) and 0 <= max_steps <= steps:
        return (
            f"{path} holds {steps} steps, so {setting('max_steps', max_steps, command)} leaves nothing to train: "
            f"give {setting('max_steps', steps + 1, command)} or more to go on (to score it, use {score})"
        )
    return None


def epoch_cut_short(trainer: Any) -> bool:
    """Whether the training epoch that just ended stopped before its last batch (``max_steps``
    reached inside it): its batch progress has not reached the epoch's last batch."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return not progress.is_last_batch and progress.current.completed > 0


def keep_a_cut_epoch_open(checkpoint: dict[str, Any]) -> None:
    """Save an epoch that ``max_steps`` ended inside as unfinished, as a signal's save does.

    Lightning counts such an epoch as processed before the epoch-end hooks save, so a resume would
    start the next epoch and never train the rest of this one. With the epoch left open, the resume
    trains its remaining batches (the loaders skip the ones done: :mod:`lebm.data.resume`), and the
    run then equals one never stopped. Checkpoints saved at an epoch's end, or inside it by a signal
    or a step interval, are unchanged."""
    try:
        fit_loop = checkpoint["loops"]["fit_loop"]
        batches, epochs = fit_loop["epoch_loop.batch_progress"], fit_loop["epoch_progress"]
        inside = not batches["is_last_batch"] and int(batches["current"]["completed"]) > 0
    except (KeyError, TypeError, ValueError):
        return
    if not inside:
        return
    for counts in (epochs["total"], epochs["current"]):
        if counts["processed"] >= counts["started"] > 0:
            counts["processed"] = counts["started"] - 1
            counts["completed"] = min(counts["completed"], counts["processed"])


def asks_fewer(checkpoint: dict[str, Any], max_epochs: Any, max_steps: Any) -> bool:
    """Whether ``max_epochs`` (or ``max_steps``) is below what ``checkpoint`` holds already: a
    request for less training than the run has, not a repeat of the command that finished it."""
    held = epochs_held(checkpoint)
    if held is None:
        return False
    steps = int(checkpoint.get("global_step", 0))
    fewer_epochs = isinstance(max_epochs, int) and 0 <= max_epochs < held[0]
    fewer_steps = isinstance(max_steps, int) and 0 <= max_steps < steps
    return fewer_epochs or fewer_steps


def warn_if_nothing_left(model: Any, checkpoint: dict[str, Any]) -> None:
    """Warn, at the user's line, when ``model``'s Trainer resumes ``checkpoint`` with nothing left to
    train (Lightning then ends the fit at once); once, by global rank 0; not for a smoke test
    (``fast_dev_run``), nor when the ``lebm`` command said it already (``model.said_nothing_left``:
    :mod:`lebm.cli.resume_check`)."""
    trainer = model.trainer
    ckpt_path = getattr(trainer, "ckpt_path", None)
    if (
        ckpt_path is None  # not a Trainer's resume
        or not getattr(trainer, "is_global_zero", True)
        or getattr(trainer, "fast_dev_run", False)
        or getattr(model, "said_nothing_left", False)
    ):
        return
    message = nothing_left_message(checkpoint, ckpt_path, trainer.max_epochs, trainer.max_steps, False)
    if message is not None:
        warn_user(message)
