"""The method-agnostic base of every learning method.

A method file only wires parts: it builds its nets, samplers and estimators, creates its
optimisers and orders their steps in ``training_step``. Everything else every method needs lives
in :class:`Method`, once.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import types
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lebm.checkpoint_io import check_checkpoint_folders, use_atomic_checkpoints
from lebm.checkpoints import (
    VERSION_KEY,
    CheckpointError,
    is_newer,
    missing_class_message,
    newer_writer_message,
    read_checkpoint,
    shape_differences,
    writer_version,
)
from lebm.compat import attached_trainer, logging_as_hook, run_hooks_eagerly
from lebm.config import (
    MissingClass,
    build,
    given_config,
    import_object,
    public_class_path,
    try_to_config,
    unrecordable_part,
)
from lebm.data.batches import batch_observations  # noqa: F401 (re-export: methods and callbacks read it here)
from lebm.data.content import content_difference
from lebm.data.errors import DataError
from lebm.data.fingerprint import (
    content_of,
    data_fingerprint,
    describe_difference,
    fingerprint_difference,
    same_class,
)
from lebm.devices import check_map_location
from lebm.distributed import MethodDDPStrategy, rank_local_buffer_names
from lebm.models.subclass_arguments import CLASS_PATH_KEY, init_without_class_path, subclass_arguments
from lebm.randomness import CHECKPOINT_KEY as STREAMS_KEY
from lebm.randomness import RandomStreams, pack, unpack
from lebm.recording.host_reads import RecordingRefused, noting_trainer_reads
from lebm.recording.iteration_key import LEFT_OUT_OF_THE_KEY, flat
from lebm.recording.recorded_iteration import IterationRecorder, counted_only, step_directly, steps_on_the_host
from lebm.samplers.adaptation import drop_unused_adaptation_state
from lebm.training.cadence import step_values_read
from lebm.training.double_precision import RunDefaultDtype
from lebm.training.final_validation import ValidateLastEpoch
from lebm.training.guard import DivergenceGuard, TrainingDiverged, last_good_checkpoint
from lebm.training.hooks import MethodHooks, as_list
from lebm.training.monitoring import check_monitors
from lebm.training.own_checkpoints import keep_own_checkpoint_states, let_io_remove_only, refuse_another_runs_folder
from lebm.training.prediction import Predictions
from lebm.training.recovery import CHECKPOINT_KEY as RECOVERY_KEY
from lebm.training.recovery import RecoveryPolicy, RecoveryRecord
from lebm.training.resume import (
    apply_optimizer_settings,
    epoch_cut_short,
    keep_a_cut_epoch_open,
    warn_if_nothing_left,
)
from lebm.training.run_identity import CHECKPOINT_KEY as RUN_KEY
from lebm.training.run_identity import (
    identity_record,
    new_run_id,
    run_identity,
    trained_data_of_checkpoint,
    wandb_id_of,
)
from lebm.training.settings import check_optimizer_settings, optimizer_settings
from lebm.training.stepping import (
    StepSettings,
    TrainerSettingsKept,
    adopt_changed_clipping,
    adopt_trainer_settings,
    overridden_clip_note,
    own_clips,
    refuse_half_weights,
    refuse_training_nothing,
    refuse_unsupported_callbacks,
    refuse_validation_interval,
    restore_accumulation,
    trainer_step_settings,
)
from lebm.user_warnings import user_stacklevel, warn_user
from lebm.version import __version__

#: Key of every rank's rank-local buffers (persistent chains) in a checkpoint.
RANK_LOCAL_KEY = "lebm_rank_local_buffers"


class class_only:  # noqa: N801 (used as a decorator, like classmethod)
    """A classmethod that refuses to be called on an instance, as Lightning's ``load_from_checkpoint``
    does: ``model.load_from_checkpoint(path)`` returns a new model and leaves ``model`` as it was."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is not None:
            name = f"{owner.__name__}.{self.function.__name__}"
            raise TypeError(
                f"{name} makes a new model; it does not load into this one: call it on the class and keep what it "
                f"returns (model = {name}(path))"
            )
        return types.MethodType(self.function, owner)


def _no_closure() -> None:
    """The closure of an optimiser step whose gradients were computed before it."""


def ensure_component(value: Any, name: str, kind: type | tuple[type, ...] = nn.Module) -> Any:
    """Build ``value`` from a ``{"class_path", "init_args"}`` config if needed and type-check it."""
    if value is None:
        raise ValueError(
            f"`{name}` is missing. The checkpoint could not record it (a module built in Python that is not an "
            f"lebm component); pass it again: Method.load_from_checkpoint(path, {name}=<module>)"
        )
    if isinstance(value, dict):
        value = build(value)
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"`{name}` must be a {expected}, got {type(value).__name__}")
    return value


def require_components(**components: Any) -> None:
    """Fail at once, naming every required component that is missing (a checkpoint stores a
    component it could not record as None)."""
    missing = [name for name, value in components.items() if value is None]
    if missing:
        passed = ", ".join(f"{name}=<the same {name}>" for name in missing)
        raise ValueError(
            f"{' and '.join(f'`{name}`' for name in missing)} {'are' if len(missing) > 1 else 'is'} missing. "
            "The checkpoint could not record "
            f"{'them' if len(missing) > 1 else 'it'} (built in Python from modules that are not lebm components); "
            f"pass {'them' if len(missing) > 1 else 'it'} again: Method.load_from_checkpoint(path, {passed})"
        )


def optional_component(value: Any, name: str, kind: type | tuple[type, ...] = nn.Module) -> Any:
    """:func:`ensure_component` for an argument that may be None."""
    return None if value is None else ensure_component(value, name, kind)


def refuse_another_method(cls: type, checkpoint_path: Any, trusted: bool = False) -> None:
    """Raise :class:`~lebm.checkpoints.CheckpointError` naming both methods when the checkpoint file
    ``checkpoint_path`` was written by a method that is neither ``cls`` nor related to it by
    subclassing (``DAMC.load_from_checkpoint`` of a LatentEBM checkpoint); a file that cannot be
    read, or that names no class or one this lebm lacks, is left to the load, which names that."""
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        return
    try:
        checkpoint = read_checkpoint(checkpoint_path, weights_only=not trusted)
    except CheckpointError:
        return
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(class_path, str):
        return
    try:
        stored = import_object(class_path)
    except (MissingClass, ValueError):  # not in this lebm, or not a class path: the load names it
        return
    if not isinstance(stored, type) or issubclass(stored, cls) or issubclass(cls, stored):
        return
    raise CheckpointError(
        f"{checkpoint_path} was written by {stored.__name__} ({class_path}), not {cls.__name__}: load it with "
        f"{stored.__name__}.load_from_checkpoint(path), or lebm.load(path), which picks the method the checkpoint names"
    )


class Method(Predictions, MethodHooks, L.LightningModule):
    """The base of every learning method; the ``lebm`` CLI accepts any subclass.

    What a method gets from it:

    - **hyperparameters**: :meth:`save_component_hyperparameters` stores every ``__init__``
      argument as plain data; components become ``class_path``/``init_args`` configs (the
      user's own modules too, when the CLI built them from a config), so
      ``Method.load_from_checkpoint(path)`` rebuilds the whole model. A module built in Python
      that cannot be recorded is named in a warning when a checkpoint is saved.
    - **optimisation** (manual): :meth:`step_optimizers` does ``zero_grad``, one backward pass,
      the per-optimiser gradient all-reduce under ``lebm_ddp``, Lightning's ``clip_gradients``
      (so mixed precision unscales first) and ``step``; :meth:`on_train_epoch_end` steps every
      learning-rate scheduler once per epoch (:meth:`schedulers_to_step`).
    - **the divergence guard**: :meth:`finish_training_step` checks the step's logged quantities
      and chain states (non-finite always stops; ``divergence_limits`` from
      ``divergence_after_epoch`` on) before logging them. With a recovery policy
      (:attr:`divergence_recovery`, attached by the ``lebm.callbacks.DivergenceRecovery`` callback)
      a trip rolls back to the last good state and goes on with lower step sizes and learning rates
      (:mod:`lebm.training.recovery`).
    - **random streams**: training chains draw from :attr:`train_generator` (per rank, from the
      run's seed and the global rank), evaluation from :attr:`eval_generator`; checkpoints keep
      every rank's streams and rank-local buffers, so resuming continues the same run exactly.
    - **the user API** ``generate``, ``infer``, ``reconstruct``, ``score`` and the evaluation step,
      whose per-example outputs are declared in :attr:`evaluation_outputs`.

    The hooks a method overrides, with their defaults, are listed in :class:`lebm.training.hooks.MethodHooks`.
    Prediction (``predict_step``, ``forward``) comes from :class:`lebm.training.prediction.Predictions`.

    Args:
        divergence_limits: ``{logged quantity: largest allowed |value|}``.
        divergence_after_epoch: the first epoch at which ``divergence_limits`` apply.
    """

    #: What the chain capture key leaves out of this method when a chain reads the whole of it
    #: (``freeze=[model]``, an energy that closes over the model): the host bookkeeping that the
    #: iteration key leaves out too, each named with its reason in ``LEFT_OUT_OF_THE_KEY`` (the
    #: Trainer, the recorded iterations, the random streams ...). Every other attribute is described;
    #: the hyperparameters come back through :meth:`chain_capture_key`.
    chain_capture_ignore: ClassVar[tuple[str, ...]] = tuple(LEFT_OUT_OF_THE_KEY)
    #: Whether this method's training iterations are recorded as CUDA graphs when the run sets
    #: nothing (``LEBM_RECORDED_ITERATIONS``, ``lebm.speed.RecordedIterations``): False, captured
    #: chains with the rest of the iteration eager, for every lebm method, as the newest same-call
    #: GPU records decide (``benchmarks/speed_defaults.py``; ``tests/test_speed_defaults.py`` holds
    #: each class to them). Only lebm's own audited classes are ever recorded (:mod:`lebm.recording.audit`).
    recorded_iterations_by_default: ClassVar[bool] = False

    def chain_capture_key(self) -> Hashable:
        """The hyperparameters as ``((dotted path, value), ...)``: the part of this method the chain
        capture key describes beyond its attributes (``self.hparams`` nests component configs deeper
        than the key's attribute walk goes)."""
        return flat(dict(self.hparams))

    def __init__(self, divergence_limits: Mapping[str, float] | None = None, divergence_after_epoch: int = 0) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.guard = DivergenceGuard(divergence_limits, divergence_after_epoch, hint=self.divergence_hint)
        self.random_streams = RandomStreams()
        #: What a divergence does besides stopping: None stops training (the default).
        self.divergence_recovery: RecoveryPolicy | None = None
        #: The recoveries this run made (saved in checkpoints, re-applied on load).
        self.recovery_record = RecoveryRecord()
        self._unrecorded: dict[str, str] = {}
        self._warned_unrecorded = False
        self._unread_step_values: dict[str, Any] | None = None
        self._step_settings = StepSettings()
        self._counted_iteration: int | None = None
        #: The lebm version that wrote the checkpoint this model was loaded from (None: not loaded, or not said).
        self.checkpoint_writer: str | None = None
        #: Whether a checkpoint from a newer lebm was already named (the CLI names it in its own line).
        self.said_checkpoint_writer = False
        self._pending_clips: dict[int, tuple[float | None, str]] = {}
        self._said_clip_note: str | None = None
        #: This model's recorded training iterations (:mod:`lebm.recording.recorded_iteration`).
        self.iteration_recorder = IterationRecorder()
        self._direct_steps = False
        self._collected_step: dict[str, Any] | None = None
        self._host_reads: set[str] | None = None

    # ----------------------------------------------------------------------- hyperparameters
    def save_component_hyperparameters(self, arguments: Mapping[str, Any]) -> None:
        """Save a method's ``__init__`` arguments (its ``locals()``; ``self`` and ``__class__`` are
        skipped) as plain data: components as configs, so that ``load_from_checkpoint`` and
        ``lebm test --ckpt_path`` rebuild them. A component that cannot describe itself is stored
        from the config the CLI built it from, else as None (named when a checkpoint is saved).
        A user's subclass adds its own explicit ``__init__`` arguments, read from its ``__init__``
        up the call stack (:mod:`lebm.models.subclass_arguments`), after the method's; a name the
        method takes keeps the method's value, the one it reads from ``hparams``.
        Then the optimiser settings among them, found by name (``*_lr``, ``*_weight_decay``,
        ``*_grad_clip``, ``betas``, ``lr_decay``: :mod:`lebm.training.settings`), are checked: a
        ``ValueError`` naming the option, or a warning for a legal setting that is almost surely a typo."""
        here = inspect.currentframe()
        try:  # a subclass's own arguments, from its __init__ up the call stack (a method's names keep its values)
            added = subclass_arguments(self, None if here is None else here.f_back)
        finally:
            del here
        arguments = {**arguments, **{name: value for name, value in added.items() if name not in arguments}}
        hparams: dict[str, Any] = {}
        for name, value in arguments.items():
            if name in ("self", "__class__", CLASS_PATH_KEY):
                continue
            config = try_to_config(value)
            if config is None and value is not None:
                config = given_config(name)
                if config is None:
                    self._unrecorded[name] = unrecordable_part(value) or type(value).__name__
            hparams[name] = config
        # LightningCLI reads `_class_path` to rebuild the right method from a checkpoint
        # (`lebm test --ckpt_path ...`); load_from_checkpoint keeps it from every __init__.
        hparams[CLASS_PATH_KEY] = public_class_path(type(self))
        self.save_hyperparameters(hparams)
        check_optimizer_settings(**optimizer_settings(self.hparams))

    def _warn_unrecorded(self) -> None:
        if not self._unrecorded or self._warned_unrecorded:
            return
        self._warned_unrecorded = True
        method = type(self).__name__
        for name, part in self._unrecorded.items():
            rank_zero_warn(
                f"{method}: the checkpoint cannot record `{name}`: its part {part} was built in Python and is "
                f"not an lebm component, so it is stored as None. Load with {method}.load_from_checkpoint(path, "
                f"{name}=<the same {name}>), or give it as class_path/init_args in a recipe so that it is recorded."
            )

    # -------------------------------------------------------------------------- optimisation
    def optimizer_list(self) -> list[Any]:
        """The method's optimisers, always as a list."""
        return as_list(self.optimizers())

    @property
    def step_settings(self) -> StepSettings:
        """Lightning's ``accumulate_grad_batches`` and gradient clipping as this run applies them
        (:mod:`lebm.training.stepping`; defaults outside a run). A ``gradient_clip_val`` or
        ``gradient_clip_algorithm`` that a callback sets on the Trainer mid-run is taken over here,
        at the next update, by the eager and the recorded path alike, as Lightning's automatic
        optimisation reads it at every step (:func:`~lebm.training.stepping.adopt_changed_clipping`)."""
        trainer = attached_trainer(self)
        changed = trainer is not None and (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) != (None, None)
        if changed:
            self._step_settings = adopt_changed_clipping(trainer, self._step_settings)
            for callback in trainer.callbacks:
                if isinstance(callback, TrainerSettingsKept):
                    callback.settings = self._step_settings  # the run's end gives the Trainer these back
        return self._step_settings

    # ------------------------------------------------------------------ what the host holds
    @property
    def global_step(self) -> int:
        """Lightning's ``global_step`` (noted while a recording watches the host: :meth:`noting_host_reads`)."""
        if self._host_reads is not None:
            self._host_reads.add("global_step")
        return super().global_step

    @property
    def current_epoch(self) -> int:
        """Lightning's ``current_epoch`` (noted while a recording watches the host: :meth:`noting_host_reads`)."""
        if self._host_reads is not None:
            self._host_reads.add("current_epoch")
        return super().current_epoch

    @contextlib.contextmanager
    def noting_host_reads(self, reads: set[str] | None) -> Iterator[None]:
        """Within the block, every read of ``self.global_step`` and ``self.current_epoch`` (and of
        the Trainer's, outside Lightning's loop: :func:`~lebm.recording.host_reads.noting_trainer_reads`)
        is added to ``reads`` by name: what :meth:`iteration_key` reads there is declared; what a
        recorded iteration reads without declaring it keeps the iterations eager
        (:mod:`lebm.recording.recorded_iteration`)."""
        previous, self._host_reads = self._host_reads, reads
        try:
            with noting_trainer_reads(attached_trainer(self), reads):
                yield
        finally:
            self._host_reads = previous

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``log``; refused inside the recording of a training iteration, whose replays
        would log the recording's value again and again (the values a method logs go in
        :meth:`finish_training_step`'s ``logs``, which every replay hands over afresh)."""
        if self._collected_step is not None:
            raise RecordingRefused(
                f"its training iteration calls self.log({name!r}, ...), which a replay would repeat with the recorded "
                "value: put the value in the logs given to finish_training_step"
            )
        super().log(name, value, *args, **kwargs)

    def check_trainer(self, trainer: Any, stage: str | None = "fit", resuming: bool = False) -> None:
        """Refuse, in one line naming lebm's way, a Trainer this method cannot honour: Lightning's
        callbacks that assume one optimiser or automatic optimisation
        (:func:`~lebm.training.stepping.refuse_unsupported_callbacks`). The ``lebm`` CLI calls it
        when the run is built, :meth:`configure_callbacks` when a run starts. Also checks the
        Trainer's accumulation and clipping settings, which this method applies itself, and lets
        every callback with a ``check_method(model)`` check the parts it reads; refuse 16-bit weights
        (``precision`` ``16-true``/``bf16-true``). In a ``fit`` (``stage``; None: not known yet),
        name in one warning the nets whose own clipping overrides ``gradient_clip_val`` (before any
        refusal), refuse a Trainer that trains nothing or whose ``check_val_every_n_epoch`` is below 1,
        and a callback that monitors a name the run does not log (:mod:`lebm.training.monitoring`).
        ``resuming``: the fit continues a checkpoint, whose saved state (a stage schedule, say) it takes over."""
        refuse_unsupported_callbacks(trainer, type(self).__name__)
        settings = trainer_step_settings(trainer)
        fitting = stage in ("fit", None)  # None: a run built for a fit (lebm.from_recipe)
        if fitting:
            self._say_overridden_clips(settings, trainer)
        refuse_half_weights(trainer)
        for callback in trainer.callbacks:  # a callback that reads parts of the method checks them now
            check_method = getattr(callback, "check_method", None)
            if callable(check_method):
                check_method(self)
        if fitting:
            refuse_training_nothing(trainer)
            refuse_validation_interval(trainer)
        if stage == "fit":
            check_monitors(self, trainer.callbacks)

    def _say_overridden_clips(self, settings: StepSettings, trainer: Any) -> None:
        """Warn, once per model and on the main process, when the Trainer's ``gradient_clip_val``
        does not clip some nets, whose own ``<net>_grad_clip`` overrides it
        (:func:`~lebm.training.stepping.overridden_clip_note`)."""
        note = overridden_clip_note(settings, own_clips(self.hparams), type(self).__name__)
        if note is not None and note != self._said_clip_note and getattr(trainer, "is_global_zero", True):
            self._said_clip_note = note
            warn_user(note)

    def configure_callbacks(self) -> list[Any]:
        """Lightning's first call into the model in every run, before it checks the Trainer's
        settings: run the steps eagerly when Lightning was given ``torch.compile(model)``
        (:func:`~lebm.compat.run_hooks_eagerly`), check the Trainer (:meth:`check_trainer`), and
        take over its ``accumulate_grad_batches`` and gradient clipping, which this method applies
        itself (:meth:`step_optimizers`). Returns the callback that gives the Trainer its settings
        back when the run ends, normally or not (:class:`~lebm.training.stepping.TrainerSettingsKept`),
        the one that validates the last epoch (:class:`~lebm.training.final_validation.ValidateLastEpoch`), and
        the one that keeps a ``64-true`` run's default dtype float64 outside the steps too
        (:class:`~lebm.training.double_precision.RunDefaultDtype`)."""
        trainer = attached_trainer(self)
        run_hooks_eagerly(self)  # Trainer.fit(torch.compile(model)): compile the nets instead
        if trainer is None:
            return []
        stage = str(getattr(trainer.state.fn, "value", trainer.state.fn))
        self.check_trainer(trainer, stage, resuming=trainer.ckpt_path is not None)
        self._step_settings = adopt_trainer_settings(trainer)
        return self._own_callbacks_for(trainer)

    def _own_callbacks_for(self, trainer: Any) -> list[Any]:
        """This method's callbacks the Trainer does not hold yet. A later run of the same Trainer
        (``validate`` after ``fit``) keeps the ones the first run attached, given this run's step
        settings, so Lightning has none to replace (and no "will override" notice to print)."""
        held = {type(callback): callback for callback in trainer.callbacks}
        kept = held.get(TrainerSettingsKept)
        if kept is not None:
            kept.settings = self._step_settings
        wanted = [
            (TrainerSettingsKept, lambda: TrainerSettingsKept(self._step_settings)),
            (ValidateLastEpoch, ValidateLastEpoch),
            (RunDefaultDtype, RunDefaultDtype),
        ]
        return [make() for kind, make in wanted if kind not in held]

    def _training_position(self) -> tuple[int, int, bool]:
        """``(iteration number over the run, batch index in the epoch, last batch of the epoch)`` of
        the training batch being run (Lightning's loop progress; ``(0, 0, True)`` outside a fit)."""
        trainer = attached_trainer(self)
        if trainer is None or not trainer.training:
            return 0, 0, True
        loop = trainer.fit_loop.epoch_loop
        return loop.total_batch_idx, loop.batch_idx, bool(loop.batch_progress.is_last_batch)

    @property
    def updates_this_batch(self) -> bool:
        """Whether the nets are updated at the end of this training batch (always, unless
        ``accumulate_grad_batches`` > 1 and the batch is not the last of its window)."""
        _, batch_idx, last = self._training_position()
        trainer = attached_trainer(self)
        batches = trainer.num_training_batches if trainer is not None else 1
        return self._step_settings.updates_after(batch_idx, batches, last)

    def step_optimizers(self, optimizers: Any | Sequence[Any], loss: Tensor, clip: float | None = None) -> None:
        """One update of every net of ``optimizers`` from ``loss``: the one stepping path of every method.

        Without accumulation: ``zero_grad`` each optimiser; one ``manual_backward(loss)``; under
        ``lebm_ddp`` average the gradients of these optimisers' parameters over the ranks (one
        all-reduce: each net is reduced once per its own update); ``step`` each optimiser, the first
        step of the iteration being the one that advances ``trainer.global_step``. Each optimiser's
        gradients are clipped (the net's own max-norm ``clip`` when given, else the Trainer's
        ``gradient_clip_val`` and ``gradient_clip_algorithm``) inside its step, once mixed
        precision has unscaled them (:meth:`on_before_optimizer_step`).

        With ``accumulate_grad_batches = N``: the gradients are zeroed at the window's first batch,
        every batch adds ``grad(loss / N)`` to these optimisers' parameters only, and the
        all-reduce, clipping and steps happen on the window's last batch (:mod:`lebm.training.stepping`).
        """
        optimizers = as_list(optimizers)
        if self._direct_steps:  # inside a recorded iteration or its warm-up
            step_directly(self, optimizers, loss, clip)
            return
        settings = self.step_settings
        parameters = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        if settings.accumulate == 1:
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
        else:
            _, batch_idx, _ = self._training_position()
            if batch_idx % settings.accumulate == 0:  # the window opens
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
            trainable = [p for p in parameters if p.requires_grad]
            if trainable:
                self.manual_backward(loss / settings.accumulate, inputs=trainable)
            if not self.updates_this_batch:
                return
        reduce = getattr(self.trainer.strategy, "reduce_gradients", None)
        if reduce is not None and self.trainer.world_size > 1:
            reduce(parameters)
        value, algorithm = settings.clip_for(clip)
        for optimizer in optimizers:
            self._step_optimizer(optimizer, value, algorithm)

    def _step_optimizer(self, optimizer: Any, clip_val: float | None, clip_algorithm: str) -> None:
        """``optimizer.step()`` with its gradients clipped to ``clip_val`` inside the step; after the
        iteration's first (counted) step, the strategy's ``optimizer_step`` on the wrapped optimiser:
        the same update, not counted again."""
        if not isinstance(optimizer, LightningOptimizer):  # outside a Trainer: no precision plugin
            if clip_val is not None:
                clip = torch.nn.utils.clip_grad_norm_ if clip_algorithm == "norm" else torch.nn.utils.clip_grad_value_
                clip([p for group in optimizer.param_groups for p in group["params"]], clip_val)
            optimizer.step()
            return
        self._pending_clips[id(optimizer.optimizer)] = (clip_val, clip_algorithm)
        iteration, _, _ = self._training_position()
        if self._counted_iteration != iteration:
            self._counted_iteration = iteration
            optimizer.step()
        else:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip the gradients of the optimiser about to step as :meth:`step_optimizers` asked:
        Lightning calls this inside the step, after mixed precision unscaled them."""
        clip_val, clip_algorithm = self._pending_clips.pop(id(optimizer), (None, "norm"))
        if clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=clip_algorithm)

    def on_train_epoch_end(self) -> None:
        """Per-epoch learning-rate decay, as the papers' code does; not for an epoch ``max_steps``
        cut short (its checkpoint keeps it open: the resume finishes it and decays then)."""
        self.check_recorded_guard(now=True)
        if attached_trainer(self) is not None and epoch_cut_short(self.trainer):
            return
        for scheduler in self.schedulers_to_step():
            scheduler.step()

    # ---------------------------------------------------------------------------- the guard
    def finish_training_step(
        self, logs: Mapping[str, Tensor], watch: Mapping[str, Tensor] | None = None, batch_idx: int = 0
    ) -> None:
        """Check ``logs`` and the tensors in ``watch`` (e.g. chain states) with the divergence
        guard, then log ``logs`` (on the steps where they are read: :mod:`lebm.training.cadence`).
        Raises :class:`~lebm.training.guard.TrainingDiverged`, unless a
        recovery policy (:attr:`divergence_recovery`) has a recovery left: then the step's values
        are not logged, the model rolls back to its last snapshot with lowered step sizes and
        learning rates, and training goes on with the next batch."""
        if self._collected_step is not None:  # being recorded: the recorder checks and hands them over
            self._collected_step.update(logs=dict(logs), watch=dict(watch or {}))
            return
        decide = None
        if attached_trainer(self) is not None and self.trainer.world_size > 1:
            decide = lambda bad: self.trainer.strategy.reduce_boolean_decision(bad, all=False)  # noqa: E731
        policy = self.divergence_recovery
        try:
            self.guard.check(
                {**logs, **(watch or {})},
                epoch=self.current_epoch,
                step=batch_idx,
                decide=decide,
                last_checkpoint=lambda: last_good_checkpoint(attached_trainer(self), since=self._fit_started_at),
            )
        except TrainingDiverged as diverged:
            if policy is None:
                raise
            if not policy.can_recover(self.recovery_record):
                raise TrainingDiverged(policy.exhausted(str(diverged), self.recovery_record), diverged.cause) from None
            policy.recover(self, self.recovery_record, diverged.cause, self.current_epoch, batch_idx)
            self.log("recovery/count", float(self.recovery_record.count))
            return
        if policy is not None:
            logs = {**logs, "recovery/count": float(self.recovery_record.count)}  # type: ignore[dict-item]
        self._hand_over_step_values(logs)
        if policy is not None:
            policy.after_good_step(self)

    def _hand_over_step_values(self, logs: Mapping[str, Any]) -> None:
        """Log a step's values on the steps where they are read (:mod:`lebm.training.cadence`), else
        keep them for :meth:`on_train_batch_end`."""
        if step_values_read(attached_trainer(self), logs):  # Lightning's log costs host time even when nothing reads it
            self.log_step_values(logs)
        else:
            self._unread_step_values = dict(logs)  # handed over after all if training stops at this step

    # ------------------------------------------------------------------- recorded iterations
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One training iteration: :meth:`training_iteration` then :meth:`after_iteration`, run
        eagerly, or through the model's :attr:`iteration_recorder` when recorded iterations are on
        (:mod:`lebm.recording.recorded_iteration`); nothing when :meth:`skip_iteration` says so."""
        if self.skip_iteration():
            return
        if not self.iteration_recorder.run(self, batch, batch_idx):
            self.training_iteration(batch, batch_idx)
            self.after_iteration()

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        """A method's training iteration: its chains, losses and updates through
        :meth:`step_optimizers`, ending with :meth:`finish_training_step`. Host work that must follow
        every iteration, recorded or not, goes in :meth:`after_iteration`; what the iteration reads
        of the host, in :meth:`iteration_key`."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_iteration(batch, batch_idx)")

    @contextlib.contextmanager
    def direct_steps(self, recorder: IterationRecorder, collect: dict[str, Any] | None = None) -> Any:
        """Within the block, :meth:`step_optimizers` updates in direct mode
        (:func:`~lebm.recording.recorded_iteration.step_directly`) and, with ``collect``,
        :meth:`finish_training_step` puts the step's ``logs`` and ``watch`` there instead of checking
        and logging them (a recording)."""
        previous = self._direct_steps, self._collected_step
        self._direct_steps, self._collected_step = True, collect
        try:
            yield
        finally:
            self._direct_steps, self._collected_step = previous

    def count_recorded_step(self, once: bool = False) -> None:
        """Count this iteration's update with Lightning (``trainer.global_step``, ``max_steps``, the
        step hooks) without stepping an optimiser: the update ran on the device. ``once``: not
        again within the same iteration."""
        trainer = attached_trainer(self)
        if trainer is None:
            return
        iteration, _, _ = self._training_position()
        if once and self._counted_iteration == iteration:
            return
        self._counted_iteration = iteration
        optimizer = self.optimizer_list()[0]
        if isinstance(optimizer, LightningOptimizer):
            with counted_only(optimizer.optimizer):
                optimizer.step()

    def finish_recorded_step(self, logs: Mapping[str, Any], batch_idx: int) -> None:
        """The host's part of a replayed iteration's end: the guard's device flag read every few
        iterations (:meth:`check_recorded_guard`), then the values handed over as
        :meth:`finish_training_step` does."""
        self.check_recorded_guard(logs=logs)
        self._hand_over_step_values(logs)

    def check_recorded_guard(self, logs: Mapping[str, Any] | None = None, now: bool = False) -> None:
        """Raise :class:`~lebm.training.guard.TrainingDiverged` when the recorded iterations' device
        flag is set, reading it every few iterations (``now``: at once, before a checkpoint, a
        validation or the end of training)."""
        recorder = self.iteration_recorder
        iterations = recorder.unread
        decide = None
        if attached_trainer(self) is not None and self.trainer.world_size > 1:  # every rank stops together
            decide = lambda bad: self.trainer.strategy.reduce_boolean_decision(bad, all=False)  # noqa: E731
        if recorder.read_guard(force=now, decide=decide):
            raise self.guard.recorded_trip(
                logs or {},
                epoch=self.current_epoch,
                step=self._training_position()[1],
                iterations=iterations,
                last_checkpoint=lambda: last_good_checkpoint(attached_trainer(self), since=self._fit_started_at),
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """If training stops at this step (``trainer.should_stop`` set by the method or by a callback
        after the step), hand over the step's values that were not: Lightning writes a stopping
        step's row, and epoch-end readers see its values (:mod:`lebm.training.cadence`)."""
        unread, self._unread_step_values = self._unread_step_values, None
        if unread is None or attached_trainer(self) is None or not self.trainer.should_stop:
            return
        with logging_as_hook(self, "training_step"):  # the same result keys as the step's own logging
            self.log_step_values(unread)

    def log_step_values(self, logs: Mapping[str, Tensor]) -> None:
        """Give Lightning a training step's ``logs``: those :attr:`progress_bar_names` names on the
        progress bar too, the rest to the loggers only."""
        shown = {name: value for name, value in logs.items() if name in self.progress_bar_names}
        if shown:
            self.log_dict(shown, prog_bar=True)
        rest = {name: value for name, value in logs.items() if name not in shown}
        if rest:
            self.log_dict(rest)

    # ------------------------------------------------------------------------ random streams
    @property
    def train_generator(self) -> torch.Generator:
        """The random stream of the training chains on this rank."""
        if self.random_streams.train is None:
            world_size = self.trainer.world_size if attached_trainer(self) is not None else 1
            self.random_streams.start_training(self.device, self.global_rank, world_size, self.global_step)
        assert self.random_streams.train is not None
        return self.random_streams.train

    #: The global step of the checkpoint the weights were last loaded from, until a fit starts.
    _loaded_step: int | None = None
    #: The run's id (:mod:`lebm.training.run_identity`): drawn when a fit starts from scratch, taken
    #: from the checkpoint a fit resumes; every checkpoint carries it.
    run_id: str | None = None
    #: The fingerprint of the data the loaded checkpoint was trained on (:mod:`lebm.data.fingerprint`),
    #: compared with the DataModule a Trainer gives this model (:meth:`check_trained_data`).
    trained_data: dict[str, Any] | None = None
    #: Set True to score or resume the loaded weights on other data on purpose (``lebm test
    #: --data.init_args.<setting>`` sets it when the command line gives the differing setting).
    other_data_on_purpose: bool = False
    #: When the current fit started training (``time.time()``; None before a fit).
    _fit_started_at: float | None = None

    @property
    def weights_step(self) -> int:
        """The training iteration the weights come from, which seeds the evaluation stream: the
        global step while and after fitting, else the step of the checkpoint they were loaded from
        (``lebm validate --ckpt_path``, ``lebm.load``; 0 for a new model). So ``trainer.validate``
        right after ``fit`` draws what validating the checkpoint that fit saved draws."""
        return self.global_step if self._loaded_step is None else self._loaded_step

    @property
    def eval_generator(self) -> torch.Generator:
        """The random stream of evaluation on this rank (reseeded every evaluation epoch)."""
        if self.random_streams.eval is None:
            self.random_streams.start_evaluation(self.device, self.global_rank, self.weights_step)
        assert self.random_streams.eval is not None
        return self.random_streams.eval

    def on_train_start(self) -> None:
        """Start (or, when resuming, restore) the training stream; a new run redraws every
        rank-local buffer from its rank's stream."""
        self._loaded_step = None  # the weights are this fit's from now on
        # a folder of another run is never trained into, by any Trainer (before the first checkpoint)
        refuse_another_runs_folder(self.trainer, self.run_id, getattr(self.trainer, "ckpt_path", None))
        if self.run_id is None:  # a new run (a resumed one took its id from the checkpoint)
            self.run_id = self._shared_run_id()
        let_io_remove_only(self.trainer, self.run_id)  # Lightning's rotation deletes this run's files alone
        self._fit_started_at = time.time()  # a checkpoint written since is this fit's (the guard's way back)
        self.iteration_recorder.start_fit()
        restored = self.random_streams.start_training(
            self.device, self.global_rank, self.trainer.world_size, self.global_step
        )
        if not restored:
            for module in self.modules():
                reset = getattr(module, "reset_rank_local_state", None)
                if callable(reset):
                    reset(generator=self.random_streams.train)
        if self.divergence_recovery is not None:
            self.divergence_recovery.take_snapshot(self)  # the state training starts (or resumes) from

    def on_validation_model_zero_grad(self) -> None:
        """Lightning frees the gradients before validating; a model with recorded iterations zeroes
        them in place instead: its recordings read them at their addresses (freed, every validation
        would cost each key a new warm-up and recording)."""
        if self.iteration_recorder.warmed:  # iterations are being recorded
            self.zero_grad(set_to_none=False)
        else:
            super().on_validation_model_zero_grad()

    def on_train_end(self) -> None:
        """Read the recorded iterations' guard flag one last time (a divergence in the last few)."""
        self.check_recorded_guard(now=True)

    def on_validation_epoch_start(self) -> None:
        self.check_recorded_guard(now=True)
        self.random_streams.start_evaluation(self.device, self.global_rank, self.weights_step)

    def on_test_epoch_start(self) -> None:
        self.random_streams.start_evaluation(self.device, self.global_rank, self.weights_step)

    # --------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the lebm version that writes it (``lebm_version``), every rank's random streams and
        rank-local buffers (collective under DDP), and the recovery record; while fitting with a
        recovery policy, take a snapshot of the state saved (the one a run resumed from this
        checkpoint starts from)."""
        self.check_recorded_guard(now=True)  # never a checkpoint of weights a recorded iteration saw diverge
        steps_on_the_host(checkpoint)  # a recorded Adam's step count, where torch's own Adam keeps it
        checkpoint[VERSION_KEY] = __version__
        trainer = attached_trainer(self)
        if self.run_id is None and trainer is not None:  # saved before training started (a user's save)
            self.run_id = self._shared_run_id()
        datamodule = getattr(trainer, "datamodule", None)
        folder = getattr(trainer, "default_root_dir", None)
        checkpoint[RUN_KEY] = identity_record(
            self.run_id or new_run_id(), self.global_step, datamodule, folder, wandb_id_of(trainer)
        )
        keep_a_cut_epoch_open(checkpoint)  # a max_steps stop inside an epoch: the resume trains the rest
        self._warn_unrecorded()
        if self.recovery_record.count:
            checkpoint[RECOVERY_KEY] = self.recovery_record.state()
        fitting = attached_trainer(self) is not None and self.trainer.state.fn == "fit"
        if self.divergence_recovery is not None and fitting and self.trainer.optimizers:
            self.divergence_recovery.take_snapshot(self)
        local = self.random_streams.local_state(self.device, self.global_rank)
        flat, layout = pack(local)
        rows = self._gather_rows(flat.to(self.device))
        checkpoint[STREAMS_KEY] = self.random_streams.checkpoint_state([unpack(row, layout) for row in rows])
        names = rank_local_buffer_names(self)
        if names:
            buffers = dict(self.named_buffers())
            checkpoint[RANK_LOCAL_KEY] = {name: self._gather_rows(buffers[name]).cpu() for name in names}

    def check_architecture(self, stored: Mapping[str, Any]) -> None:
        """Refuse, in one line, weights whose shapes differ from this model's (a checkpoint of another
        width or latent size given to a recipe's model): torch would raise its many-line size mismatch
        while loading, ``strict=False`` or not. Parameters only: a buffer sized by the chains (an adapted
        step size per chain) takes the checkpoint's size as it loads; what one side alone holds is left to
        the load."""
        differing = shape_differences(stored, dict(self.named_parameters()))
        if differing:
            trainer = attached_trainer(self)
            where = getattr(trainer, "ckpt_path", None) or "the checkpoint"
            more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
            raise ValueError(
                f"this {type(self).__name__} has another architecture than {where}: {'; '.join(differing[:3])}{more}. "
                f"Build the model from the checkpoint's own settings (lebm.load(path), or lebm test -c the run's "
                "config.yaml), or give the recipe the checkpoint's settings"
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lower the samplers' step sizes as the checkpoint's recoveries did (always); when resuming
        (a trainer is attached), take this rank's streams and rank-local buffers, and the optimiser
        settings this model configures now (:mod:`lebm.training.resume`), with the recoveries'
        learning-rate factors. A checkpoint written by a newer lebm is named in a warning (once per
        load; ``load_from_checkpoint`` warns itself, at the caller's line)."""
        self.checkpoint_writer = writer_version(checkpoint)
        self._loaded_step = int(checkpoint.get("global_step", 0))
        trainer = attached_trainer(self)
        where = str(getattr(trainer, "ckpt_path", None) or "the checkpoint")
        found = trained_data_of_checkpoint(checkpoint, where)
        self.trained_data, self._data_unchecked = found.fingerprint, found.unchecked
        self._data_inconsistent = found.inconsistent
        self._said_data_unchecked = False
        self.check_trained_data()  # a Trainer's ckpt_path: the data is given already
        if trainer is not None and is_newer(self.checkpoint_writer) and not self.said_checkpoint_writer:
            self.said_checkpoint_writer = True
            where = trainer.ckpt_path or "the checkpoint"
            warnings.warn(
                newer_writer_message(where, str(self.checkpoint_writer)), UserWarning, stacklevel=user_stacklevel()
            )
        if isinstance(checkpoint.get("state_dict"), dict):  # trained with MALA/HMC, loaded with another chain
            drop_unused_adaptation_state(checkpoint["state_dict"], self.state_dict().keys())
            self.check_architecture(checkpoint["state_dict"])
        record = RecoveryRecord.from_state(checkpoint.get(RECOVERY_KEY))
        record.apply_step_sizes(self, applied=self.recovery_record)
        self.recovery_record = record
        if attached_trainer(self) is None:
            return
        if self.trainer.state.fn == "fit":
            identity = run_identity(checkpoint)
            self.run_id = None if identity is None else identity["id"]  # resumed: the same run
            callbacks = getattr(self.trainer, "checkpoint_callbacks", [])
            # a copied run: no -v1 copy; another run's files never rotated (deleted)
            resumed = getattr(self.trainer, "ckpt_path", None)
            kept = keep_own_checkpoint_states(checkpoint, callbacks, self.run_id, resumed)
            if kept and self.trainer.is_global_zero:
                warn_user(
                    f"resuming run {self.run_id or '(no id)'}: {len(kept)} checkpoint(s) another run wrote are kept "
                    f"out of its checkpoint rotation, never deleted: {', '.join(kept[:3])}"
                )
            apply_optimizer_settings(self, checkpoint, lr_factors=record.lr_factors)
            warn_if_nothing_left(self, checkpoint)
        rank, world_size = self.global_rank, self.trainer.world_size
        saved = checkpoint.get(STREAMS_KEY)
        if saved is not None:
            self.random_streams.load_checkpoint_state(saved, rank)
        buffers = checkpoint.get(RANK_LOCAL_KEY) or {}
        for name, rows in buffers.items():
            if len(rows) == world_size and name in checkpoint.get("state_dict", {}):
                checkpoint["state_dict"][name] = rows[rank]

    @class_only
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint`` with lebm's lines for the mistakes it would leave to
        torch: a ``map_location`` naming a device this machine lacks (``ValueError``), a checkpoint
        naming a class this lebm does not have (:class:`~lebm.checkpoints.CheckpointError`: which
        class, which lebm wrote the checkpoint, what to install), one written by another method
        (:func:`refuse_another_method`: both named), and a warning for a checkpoint
        written by a newer lebm."""
        check_map_location(map_location)
        refuse_another_method(cls, checkpoint_path, trusted=kwargs.get("weights_only") is False)
        try:
            with init_without_class_path(cls):  # a **kwargs __init__ would pass `_class_path` on
                model = super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)
        except MissingClass as error:
            version = None
            if isinstance(checkpoint_path, (str, os.PathLike)):
                trusted = kwargs.get("weights_only") is False  # read as the caller allows, nothing more
                with contextlib.suppress(CheckpointError):
                    version = writer_version(read_checkpoint(checkpoint_path, weights_only=not trusted))
            raise CheckpointError(missing_class_message(checkpoint_path, error.named, version)) from None
        version = getattr(model, "checkpoint_writer", None)
        if is_newer(version) and not model.said_checkpoint_writer:
            model.said_checkpoint_writer = True
            warnings.warn(
                newer_writer_message(checkpoint_path, str(version)), UserWarning, stacklevel=user_stacklevel()
            )
        return model

    def _shared_run_id(self) -> str:
        """A new run id, drawn by rank 0 and the same on every rank (a Trainer without a strategy
        that broadcasts, such as a stand-in, draws its own)."""
        broadcast = getattr(getattr(attached_trainer(self), "strategy", None), "broadcast", None)
        return broadcast(new_run_id(), src=0) if callable(broadcast) else new_run_id()

    def check_trained_data(self) -> None:
        """Refuse, in one line, weights trained on other data than the DataModule of the attached
        Trainer holds (another held-out digit, split seed, pool ...: the checkpoint's fingerprint
        against the DataModule's; with equal settings, another content digest: a copy of the data
        that holds other examples or labels), and a checkpoint whose data record is inconsistent
        (edited), unless :attr:`other_data_on_purpose`. Says in one line what could not be checked:
        data given as dataloaders, not a DataModule; a checkpoint without (or with a malformed)
        lebm identity. Nothing to compare without a Trainer or a loaded checkpoint."""
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None)
        known = self.trained_data is not None or self._data_inconsistent is not None
        if trainer is None or not (known or self._data_unchecked):
            return
        if self.other_data_on_purpose:
            other = content_difference(content_of(self.trained_data), content_of(data_fingerprint(datamodule)))
            if other:
                self._say_unchecked(f"{type(self).__name__}: reading data of other content on purpose ({other})")
            return
        if datamodule is None:
            self._say_unchecked(
                f"{type(self).__name__}: no data check ran: the data came as dataloaders, not a DataModule, so "
                "nothing tells whether they hold the data these weights were trained on"
            )
            return
        name = type(self).__name__
        on_purpose = "set model.other_data_on_purpose = True to score or train on this data on purpose"
        if self._data_inconsistent is not None:
            raise DataError(
                f"{name}: {self._data_inconsistent}: the file was edited or mixed, so the data it was trained on "
                f"is unknown. Use the run's own checkpoint, or {on_purpose}"
            )
        if self._data_unchecked is not None:
            self._say_unchecked(f"{name}: {self._data_unchecked}")
        here = data_fingerprint(datamodule)
        trained_class = (self.trained_data or {}).get("class_path")
        if trained_class and here and not same_class(trained_class, here["class_path"]):
            self._say_unchecked(
                f"{name}: these weights were trained on {trained_class}'s data and {here['class_path']} is given: "
                "another DataModule, so the data were not compared"
            )
            return
        differing = fingerprint_difference(self.trained_data, here)
        if differing:
            raise DataError(
                f"{name}: these weights were trained on other data than {type(datamodule).__name__} "
                f"holds ({describe_difference(differing)}): build the DataModule with the settings it was trained "
                f"on, or {on_purpose}"
            )
        other_content = content_difference(content_of(self.trained_data), content_of(here))
        if other_content:
            raise DataError(
                f"{name}: these weights were trained on data of the same settings but other content than "
                f"{type(datamodule).__name__} reads ({other_content}): point its root at the data it was trained on, "
                f"or {on_purpose} (lebm: give --data.init_args.root on the command line)"
            )

    #: Set by :meth:`on_load_checkpoint`: what could not be checked of the checkpoint's data, and how its
    #: record disagrees with itself (:class:`lebm.training.run_identity.TrainedData`).
    _data_unchecked: str | None = None
    _data_inconsistent: str | None = None
    _said_data_unchecked: bool = False

    def _say_unchecked(self, line: str) -> None:
        """Warn ``line`` once per loaded checkpoint."""
        if not self._said_data_unchecked:
            self._said_data_unchecked = True
            warn_user(line)

    def _gather_rows(self, tensor: Tensor) -> Tensor:
        """``(world_size, *tensor.shape)``: every rank's ``tensor``, in rank order."""
        if attached_trainer(self) is None or self.trainer.world_size == 1:
            return tensor.unsqueeze(0)
        return self.trainer.strategy.all_gather(tensor)

    # --------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        """Check the run (:meth:`check_run`) and refuse Lightning's plain DDP before it wraps the
        model (see ``lebm.distributed``)."""
        restore_accumulation(self.trainer, self._step_settings)  # Lightning's check is over
        use_atomic_checkpoints(self.trainer)  # a Trainer built by hand: checkpoints written whole, in place
        check_checkpoint_folders(self.trainer)  # a folder that cannot hold them stops the run before it trains
        self.check_run(self.trainer.datamodule)
        self.check_trained_data()  # weights loaded before (lebm.load), data given now
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy, MethodDDPStrategy):
            raise ValueError(
                f"{type(self).__name__} steps one optimiser per net and reduces each net's gradients at its own "
                f"update, which Lightning's plain DDP cannot do: use strategy='lebm_ddp' (or 'lebm_ddp_spawn', or "
                f"lebm.distributed.MethodDDPStrategy(...)) instead of {type(strategy).__name__}. The lebm CLI "
                "picks it by itself for --trainer.devices N."
            )

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self.evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self.evaluation_step(batch, "test")
