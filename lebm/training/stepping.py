"""How Lightning's optimisation settings act on a method that steps one optimiser per net.

Every lebm method optimises manually (one optimiser per net, stepped in the order its paper
gives), and Lightning refuses ``accumulate_grad_batches`` and ``gradient_clip_val`` for manual
optimisation. lebm takes them over instead, so they act on every method's nets through the one
stepping path, :meth:`lebm.models.Method.step_optimizers`:

- **gradient accumulation** (``accumulate_grad_batches = N``): every micro-batch (training batch)
  runs its own chains from the rank's training stream and back-propagates ``loss / N`` into its
  nets' gradients; the nets are updated (all-reduce under ``lebm_ddp``, clipping, ``step``) on
  every N-th batch of an epoch and on its last batch, Lightning's rule. Each loss reaches only the
  parameters of the optimisers it updates (``backward(inputs=...)``), so a net's accumulated
  gradient holds its own loss alone.
- **gradient clipping** (``gradient_clip_val``, ``gradient_clip_algorithm``): applied to each
  net's gradients separately, before its step; a method's own per-net setting
  (``decoder_grad_clip``, ``prior_grad_clip``, ...) overrides it for that net (max-norm), which
  one warning names when a fit starts (:func:`overridden_clip_note`).
- **one step per iteration**: ``trainer.global_step`` (``max_steps``, checkpoint names,
  ``every_n_train_steps``, the loggers' x-axis) counts training iterations, an update of every
  net, whatever the number of nets: the first optimiser step of an iteration is counted, the
  others go through the strategy's ``optimizer_step`` directly (mixed precision and the
  ``on_before_optimizer_step`` hooks as usual).

Some of Lightning's workflows assume one optimiser, automatic optimisation, or a batch size
that only memory limits; :func:`refuse_unsupported_callbacks` stops them at the start of a run,
in one line naming lebm's way. So do the Trainer flags no method can honour: 16-bit weights
(:func:`refuse_half_weights`), a run that trains nothing (:func:`refuse_training_nothing`) and an
interval of validation that is none (:func:`refuse_validation_interval`); a ``gradient_clip_val``
that a net's own clipping overrides is named in one warning (:func:`overridden_clip_note`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from lightning.pytorch import Callback

#: Lightning's gradient-clipping algorithms.
CLIP_ALGORITHMS = ("norm", "value")


@dataclass(frozen=True)
class StepSettings:
    """Lightning's optimisation settings as lebm applies them.

    Attributes:
        accumulate: ``accumulate_grad_batches``: the nets are updated every ``accumulate`` batches.
        clip_val: ``gradient_clip_val`` for every net without a setting of its own (None: off).
        clip_algorithm: ``"norm"`` (max-norm of each net's gradients) or ``"value"`` (elementwise).
    """

    accumulate: int = 1
    clip_val: float | None = None
    clip_algorithm: str = "norm"

    def clip_for(self, own_clip: float | None) -> tuple[float | None, str]:
        """``(value, algorithm)`` for a net whose own max-norm setting is ``own_clip``: it wins when given."""
        if own_clip is not None:
            return own_clip, "norm"
        return self.clip_val, self.clip_algorithm

    def updates_after(self, batch_idx: int, batches_in_epoch: float | int, last: bool = False) -> bool:
        """Whether the nets are updated after batch ``batch_idx`` (0-based, within the epoch): every
        ``accumulate``-th batch and the epoch's last (``batches_in_epoch``, ``inf`` when unknown;
        ``last``: the loader said this batch is its last), Lightning's rule."""
        return (batch_idx + 1) % self.accumulate == 0 or batch_idx + 1 >= batches_in_epoch or last


def trainer_step_settings(trainer: Any) -> StepSettings:
    """``trainer``'s ``accumulate_grad_batches``, ``gradient_clip_val`` and
    ``gradient_clip_algorithm`` as :class:`StepSettings`; ``ValueError`` (one line) for a value
    out of range."""
    accumulate = trainer.accumulate_grad_batches
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise ValueError(f"accumulate_grad_batches must be a whole number >= 1, got {accumulate!r}")
    clip_val = trainer.gradient_clip_val
    if clip_val is not None and (isinstance(clip_val, bool) or not float(clip_val) >= 0):
        raise ValueError(f"gradient_clip_val must be a number >= 0 (0 or null: no clipping), got {clip_val!r}")
    algorithm = str(getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm) or "norm")
    if algorithm not in CLIP_ALGORITHMS:
        raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {algorithm!r}")
    return StepSettings(accumulate, float(clip_val) if clip_val else None, algorithm)


def adopt_trainer_settings(trainer: Any) -> StepSettings:
    """Take :func:`trainer_step_settings` from ``trainer`` and set them to Lightning's neutral
    values there (1, None), which its check of manual optimisation accepts;
    :func:`restore_accumulation` puts the accumulation back once that check has passed, so that
    Lightning's loops count one logging step per update."""
    settings = trainer_step_settings(trainer)
    trainer.accumulate_grad_batches = 1
    trainer.gradient_clip_val = None
    trainer.gradient_clip_algorithm = None  # each net's clipping passes its own
    return settings


def adopt_changed_clipping(trainer: Any, settings: StepSettings) -> StepSettings:
    """``settings`` with the ``gradient_clip_val`` and ``gradient_clip_algorithm`` that a callback
    set on ``trainer`` mid-run (after :func:`adopt_trainer_settings` had set them to None there),
    which are set to None again: a new value (0: off) with its algorithm ("norm" when none is
    given), or the algorithm alone for the value in force. ``ValueError`` (one line) for a value out
    of range, as at the start of the run."""
    value, algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
    trainer.gradient_clip_val = trainer.gradient_clip_algorithm = None
    if algorithm is None:
        algorithm = settings.clip_algorithm if value is None else "norm"
    probe = SimpleNamespace(
        accumulate_grad_batches=settings.accumulate,
        gradient_clip_val=settings.clip_val if value is None else value,
        gradient_clip_algorithm=algorithm,
    )
    return trainer_step_settings(probe)


def restore_accumulation(trainer: Any, settings: StepSettings) -> None:
    """Give ``trainer`` back its ``accumulate_grad_batches`` (after Lightning's check): its loops
    then step the loggers' x-axis once per update, as with automatic optimisation."""
    trainer.accumulate_grad_batches = settings.accumulate


class TrainerSettingsKept(Callback):
    """Gives the Trainer back the settings a method took over (:func:`adopt_trainer_settings`)
    when the run ends: normally (``teardown``) or by an exception (``on_exception``, where Lightning
    skips teardown), so that the next ``fit`` with the same Trainer applies them again."""

    def __init__(self, settings: StepSettings) -> None:
        self.settings = settings

    def _give_back(self, trainer: Any) -> None:
        restore_accumulation(trainer, self.settings)
        restore_clipping(trainer, self.settings)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._give_back(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._give_back(trainer)


def restore_clipping(trainer: Any, settings: StepSettings) -> None:
    """Give ``trainer`` back its ``gradient_clip_val`` and ``gradient_clip_algorithm`` at the end of
    a run (a later ``fit`` with the same Trainer takes them over again)."""
    if settings.clip_val is not None:
        trainer.gradient_clip_val = settings.clip_val
        trainer.gradient_clip_algorithm = settings.clip_algorithm


def planned_iterations(trainer: Any, batches_per_epoch: float | None, settings: StepSettings) -> float | None:
    """The training iterations (updates) a run of ``trainer`` will have, at most: ``max_epochs``
    times the updates of an epoch (``batches_per_epoch``, None: the Trainer's
    ``num_training_batches``, ``inf``: unknown, divided by ``settings.accumulate``, rounded up),
    and ``max_steps``, whichever is smaller; ``inf`` when only an unknown epoch length bounds it,
    None when nothing bounds it."""
    bounds: list[float] = []
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0:
        bounds.append(max_steps)
    if trainer.max_epochs not in (None, -1):
        batches = trainer.num_training_batches if batches_per_epoch is None else batches_per_epoch
        updates = math.inf if batches == math.inf else math.ceil(batches / settings.accumulate)
        bounds.append(trainer.max_epochs * updates)
    return min(bounds) if bounds else None


def refuse_training_nothing(trainer: Any) -> None:
    """Raise ``ValueError`` (one line, with the fix) for a fit whose Trainer trains no batch:
    ``limit_train_batches`` 0 (Lightning then skips training and ends the run without a word),
    ``max_steps`` 0 or ``max_epochs`` 0."""
    evaluate = "to evaluate a checkpoint without training, use lebm validate/test (trainer.validate in Python)"
    limit = trainer.limit_train_batches
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit == 0:
        raise ValueError(
            f"trainer.limit_train_batches={limit:g} trains nothing: give a number of batches (an int >= 1) or a share "
            f"of each epoch in (0, 1]; {evaluate}"
        )
    if trainer.max_steps == 0:
        raise ValueError(
            f"trainer.max_steps=0 trains nothing: give max_steps >= 1, or -1 for no step limit; {evaluate}"
        )
    if trainer.max_epochs == 0:
        raise ValueError(f"trainer.max_epochs=0 trains nothing: give max_epochs >= 1; {evaluate}")


#: Lightning's precisions that cast every net's weights to 16 bits, and the mixed precision of each.
HALF_WEIGHTS = {"16-true": ("float16", "16-mixed"), "bf16-true": ("bfloat16", "bf16-mixed")}


def refuse_half_weights(trainer: Any) -> None:
    """Raise ``ValueError`` (one line, with the precisions that work) for a Trainer whose precision
    casts the nets' weights to 16 bits (:data:`HALF_WEIGHTS`): every method's chains keep their
    states in float32, which 16-bit nets cannot take, and a 16-bit chain would round away its small
    steps. ``32-true``, ``64-true`` and the mixed precisions (nets under autocast) work."""
    precision = str(getattr(trainer, "precision", "32-true"))
    if precision not in HALF_WEIGHTS:
        return
    dtype, mixed = HALF_WEIGHTS[precision]
    raise ValueError(
        f"trainer.precision={precision} casts every net's weights to {dtype}, which lebm's methods do not support "
        f"(their chains keep float32 states; a 16-bit chain would round its small steps away): use {mixed} (the nets "
        "under autocast, weights and chains float32), 32-true or 64-true"
    )


def refuse_validation_interval(trainer: Any) -> None:
    """Raise ``ValueError`` (one line, with the fix) for ``check_val_every_n_epoch`` below 1:
    Lightning takes 0 and fails with a division by zero after the first epoch's training, and
    validates every epoch for a negative value."""
    every = trainer.check_val_every_n_epoch
    if every is None or (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
        return
    raise ValueError(
        f"trainer.check_val_every_n_epoch={every} is no interval: give a number of epochs >= 1, or null to validate "
        "every val_check_interval batches; to train without validation, set limit_val_batches 0"
    )


def own_clips(hyperparameters: Mapping[str, Any]) -> dict[str, float]:
    """A method's per-net max-norm settings that are on: ``{"decoder": 100.0}`` for
    ``decoder_grad_clip=100`` (every ``<net>_grad_clip`` hyperparameter that is not None)."""
    suffix = "_grad_clip"
    return {
        name.removesuffix(suffix): float(value)
        for name, value in hyperparameters.items()
        if name.endswith(suffix) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def overridden_clip_note(settings: StepSettings, clips: Mapping[str, float], method: str) -> str | None:
    """The line that names the nets whose own max-norm ``clips`` (:func:`own_clips`) override the
    Trainer's ``gradient_clip_val`` (``settings``), or None when the Trainer clips nothing or every net
    takes its value."""
    if settings.clip_val is None or not clips:
        return None
    nets = list(clips)
    several = len(nets) > 1
    named = ", ".join(nets[:-1]) + f" and {nets[-1]}" if several else nets[0]
    by_value = " (by value)" if settings.clip_algorithm == "value" else ""
    options = ", ".join(f"model.init_args.{net}_grad_clip={value:g}" for net, value in clips.items())
    their, those, them = ("their", "those", "them") if several else ("its", "that", "it")
    return (
        f"trainer.gradient_clip_val={settings.clip_val:g}{by_value} does not clip {method}'s {named}: {their} own "
        f"max-norm overrides it ({options}); set {those} instead (null: gradient_clip_val clips {them})"
    )


def _callback_named(trainer: Any, *names: str) -> Any:
    for callback in trainer.callbacks:
        if any(klass.__name__ in names for klass in type(callback).__mro__):
            return callback
    return None


def refuse_unsupported_callbacks(trainer: Any, method: str) -> None:
    """Raise ``ValueError`` (one line, lebm's way) for a Lightning callback that cannot act on a
    method stepping one optimiser per net: ``StochasticWeightAveraging`` (one optimiser and its
    learning-rate schedule), ``WeightAveraging``/``EMAWeightAveraging`` (buffers averaged too),
    ``LearningRateFinder`` (``Tuner.lr_find``: one optimiser, a schedule stepped by automatic
    optimisation), ``BatchSizeFinder`` (``Tuner.scale_batch_size``) and
    ``GradientAccumulationScheduler`` (automatic accumulation by epoch)."""
    if _callback_named(trainer, "StochasticWeightAveraging") is not None:
        raise ValueError(
            f"StochasticWeightAveraging averages the net of one optimiser under Lightning's automatic optimisation; "
            f"{method} steps one optimiser per net. For averaged weights use lebm.callbacks.WeightEMA: an "
            "exponential moving average of every net's parameters that validation, FID and lebm predict use "
            "(docs/lightning.md)"
        )
    averaging = _callback_named(trainer, "WeightAveraging")
    if averaging is not None:
        raise ValueError(
            f"{type(averaging).__name__} averages the buffers too (an average of a multi-stage prior's stage counts "
            "or of persistent chains is neither) and saves the averages as the checkpoint's weights; use "
            "lebm.callbacks.WeightEMA, which averages the parameters alone for validation, FID and lebm predict "
            "(docs/lightning.md)"
        )
    if _callback_named(trainer, "LearningRateFinder") is not None:
        raise ValueError(
            f"lr_find (LearningRateFinder) sweeps one optimiser's learning rate with a schedule that automatic "
            f"optimisation steps; {method} has one learning rate per net (model.init_args.*_lr). Sweep them with "
            "short runs instead, e.g. lebm fit -c RECIPE --model.init_args.decoder_lr 3e-4 --trainer.max_steps 200 "
            "(docs/lightning.md)"
        )
    if _callback_named(trainer, "BatchSizeFinder") is not None:
        raise ValueError(
            f"BatchSizeFinder (scale_batch_size) is not supported: {method}'s batch size is a setting of its paper "
            "(the chains' and the estimators' statistics depend on it), not a memory limit to maximise. Set "
            "data.init_args.batch_size, and try one that may not fit with a short run: lebm fit -c RECIPE "
            "--data.init_args.batch_size B --trainer.max_steps 5 --trainer.logger false (docs/lightning.md)"
        )
    scheduler = _callback_named(trainer, "GradientAccumulationScheduler")
    if scheduler is not None:
        raise ValueError(
            f"GradientAccumulationScheduler changes Lightning's automatic accumulation by epoch, and {method} "
            "accumulates each net's gradients itself: give one accumulation for the run, "
            "Trainer(accumulate_grad_batches=N) (--trainer.accumulate_grad_batches N) (docs/lightning.md)"
        )
