"""Whole training iterations recorded once per key and replayed: every net's update beside its chains.

With chains captured, what a GPU still waits for in an iteration is the host launching the
updates one kernel at a time: each loss's forward and backward pass, clipping and the optimiser
step. With the recorded-iteration switch on (off by default: ``recipes/speed/recorded_iterations.yaml``,
``LEBM_RECORDED_ITERATIONS=1`` or ``lebm.recording.iteration_capture(True)`` turn it on), and for
lebm's own audited methods only (:mod:`lebm.recording.audit`),
:class:`IterationRecorder` records a method's whole ``training_iteration`` (its chains inline, its
losses, backward passes, clipping, optimiser steps and EMA) as one graph per key and replays it:

- **warm-up**: the first :data:`WARMUP_ITERATIONS` iterations of a key run eagerly in *direct*
  mode (:func:`step_directly`: gradients zeroed in place, Lightning's count of the step, the
  optimiser's step on the device, :mod:`lebm.recording.device_adam`), which makes every gradient and
  optimiser state tensor the recording reads;
- **recording**: the next one is recorded (a CUDA capture, or the CPU emulation of
  ``lebm.testing.capture``, whose recording also runs the body: what it changed is put back) and
  replayed at once;
- **replay**: every later iteration of the key copies its batch into the recording's static
  buffers, hands the training stream to the recording's private generator, refreshes the learning
  rates a schedule changed (:class:`~lebm.recording.device_adam.LearningRates`), replays, takes the
  stream back, counts the step with Lightning and hands the step's values (one vector, cloned
  once) to :meth:`lebm.models.Method.finish_recorded_step` and then the method's host work
  (:meth:`~lebm.models.Method.after_iteration`).

**The key** (:func:`~lebm.recording.iteration_key.iteration_key`; its description of the method's
state is built once and checked by :class:`~lebm.recording.key_stamp.StateStamp` at every
iteration) holds what a recording bakes in,
part by named part: the batch's shapes, every module and attribute of the method (public and
private, but the host bookkeeping :data:`~lebm.recording.iteration_key.LEFT_OUT_OF_THE_KEY` names),
the hyperparameters, what the method declares it reads of the host
(:meth:`~lebm.models.Method.iteration_key`), the accumulation window and the parameters its earlier
batches reached, the guard's limits, every optimiser's settings but its rate and, per parameter it
steps, its address, ``requires_grad``, gradient and state tensors, and autocast and TF32. The
learning rates are read from device tensors, not baked in.

**A recording checks** what a replay could not repeat (:func:`check_the_recording`,
:mod:`lebm.recording.host_reads`): host values read without being declared in ``iteration_key()``
(``global_step``, ``current_epoch``, the ``batch_idx`` argument), ``self.log``, step values that are
no tensors, draws from Python's or NumPy's random stream, a sampler that did not opt in to capture,
and any part of the key the iteration itself changes. A recording that meets one is undone
(tensors, the Python attributes the key described, Lightning's count of the step, the host random
states) and the model's iterations run eagerly from then on, with one line naming it.

**Under DDP** each update's gradient all-reduce runs between two graphs
(:func:`~lebm.recording.recorders.outside_the_recording`): a recording closes its graph before
it and records the rest of the iteration in the next one, and a replay runs the all-reduce in its
place. Each rank replays from its own training stream, so ranks differ in noise and agree in weights.

**The guard** checks the step's values on the device inside the recording and keeps one sticky
flag there; the host reads it every :data:`GUARD_READ_EVERY` iterations and before any checkpoint
is written, any validation and the end of training (:meth:`IterationRecorder.read_guard`), so a
divergence stops training at most that many iterations late, and never after a checkpoint of
diverged weights.

**Where an iteration cannot be recorded** it runs eagerly, with its chains captured as before, and
the run says why in one line, once (:func:`why_iterations_eager`): a class that is not one of
lebm's audited methods (a subclass included) or code run inside the iteration that is not lebm's,
torch's or Lightning's (:mod:`lebm.recording.audit`), a 16-bit gradient scaler, an
optimiser without a recorded step (or with an option outside the allow-list), a divergence recovery
policy, anomaly detection, chain capture off, a callback with host work inside
the update (``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``,
``on_before_zero_grad``), tensor hooks on parameters, process-wide optimiser or module hooks, a
module the key cannot describe, a refused recording, or a key that keeps changing (the line names
the part that changes, or the batch shapes that outnumber the cache).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lebm.compat import attached_trainer
from lebm.recording.audit import Bindings, CodeWatch, unaudited_class
from lebm.recording.cache import autocast_without_cache, saved_values
from lebm.recording.device_adam import LearningRates, device_adam_step, device_step_refusal
from lebm.recording.host_reads import (
    NUMBER_ADVICE,
    HostRandomStates,
    NumbersRefused,
    OptimisationSettings,
    RecordingRefused,
    WatchedIndex,
)
from lebm.recording.iteration_key import (
    LEFT_OUT_OF_THE_KEY,
    IterationKey,
    declared_reads,
    first_difference,
    iteration_key,
    request_parts,
    saved_attributes,
    state_parts,
)
from lebm.recording.key_stamp import StateStamp
from lebm.recording.keys import NOT_STATE, Description, RunsEagerly, tree_modules
from lebm.recording.recorders import (
    CaptureBroken,
    GraphStore,
    NotOptedIn,
    first_line,
    outside_the_recording,
    recorder_for,
    recording_an_iteration,
    recording_inline,
)
from lebm.recording.switch import chain_capture_enabled, iteration_capture_enabled
from lebm.recording.torch_internals import (
    active_thread_modes,
    global_module_hooks,
    global_optimizer_hooks,
    module_hooks,
    tensor_has_hooks,
    tensor_version,
    tree_flatten,
    tree_unflatten,
)

#: Eager (direct-mode) iterations of a key before it is recorded.
WARMUP_ITERATIONS = 2
#: Recorded iterations kept per model (training shape, an epoch's last batch, an accumulation window, ...).
CACHE_SIZE = 8
#: Iterations in a row without a replay (warm-ups, recordings) before a model stops recording: something
#: the key holds changes at every iteration, or more iterations come in turn than the cache holds.
#: DAMC under accumulation meets four keys in turn at first.
CHURN_LIMIT = 32
#: Keys whose warm-ups are counted (the most recent ones), and keys remembered as recorded once.
WARMED_KEPT = 64
#: Recorded iterations between two host reads of the guard's device flag.
GUARD_READ_EVERY = 10
#: The hooks that run host work inside an update: a callback or method override of one keeps iterations eager.
UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
#: Why a recording that read its ``batch_idx`` argument is refused.
UNDECLARED_INDEX = (
    "its training iteration reads its batch_idx argument without declaring it: a replay would keep the recorded "
    "index (declare what it needs of the batch's position in iteration_key())"
)
#: The key's parts a recording may change: what the method declares (it may read the step the
#: recording counts) and which parameters the accumulation window reached.
CHANGED_BY_AN_ITERATION = ("iteration_key()", "updates")


@dataclass
class RecordedIteration:
    """One recorded iteration: its replay, the static batch it reads, the step values it writes
    (one float32 vector, ``names`` in order), its private generator, the store generation it lives
    in, and the ids of the parameters its backward passes reach (``reached``)."""

    replay: Callable[[], None]
    static_batch: list[Tensor]
    values: Tensor
    names: list[str]
    private_generator: torch.Generator
    store: GraphStore
    generation: int
    reached: frozenset[int]
    bindings: Bindings | None = None

    def valid(self) -> bool:
        return self.generation == self.store.generation


@dataclass
class DescribedState:
    """A description of the method's state (``parts``), its ``token`` in the lookup key, the stamp
    that checks it cheaply, what it met (``described``), the Trainer's callbacks then (their ids) and
    :func:`state_eager_reason`'s verdict then."""

    parts: IterationKey
    token: int
    stamp: StateStamp
    described: Description
    callbacks: tuple[int, ...]
    eager_reason: str | None


@dataclass
class IterationStats:
    """Counters of a model's recorded iterations: ``recordings``, ``replays``, ``warmups``
    (direct-mode eager iterations before a recording) and ``eager`` (iterations that ran eagerly)."""

    recordings: int = 0
    replays: int = 0
    warmups: int = 0
    eager: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class IterationRecorder:
    """A model's recorded iterations (dropped, not copied, when the model is copied or pickled).

    ``window_reached``: the ids of the parameters that the open accumulation window's batches
    reached so far (None: the window opened eagerly, whose gradients are None where unreached);
    ``reached_now``: those this iteration's backward passes reached (:func:`step_directly`)."""

    entries: OrderedDict[Hashable, RecordedIteration] = field(default_factory=OrderedDict)
    warmed: dict[Hashable, int] = field(default_factory=dict)
    rates: dict[int, LearningRates] = field(default_factory=dict)
    stats: IterationStats = field(default_factory=IterationStats)
    said: set[str] = field(default_factory=set)
    flag: Tensor | None = None
    unread: int = 0
    tripped: bool = False
    misses: deque[IterationKey] = field(default_factory=lambda: deque(maxlen=CHURN_LIMIT))
    misses_in_a_row: int = 0
    recorded_once: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)
    disabled: str | None = None
    window_reached: set[int] | None = None
    reached_now: set[int] = field(default_factory=set)
    state: DescribedState | None = None
    tokens: OrderedDict[Hashable, int] = field(default_factory=OrderedDict)
    parts_of: dict[int, IterationKey] = field(default_factory=dict)
    token_count: Iterator[int] = field(default_factory=itertools.count)

    def __deepcopy__(self, memo: dict[int, Any]) -> IterationRecorder:
        return IterationRecorder()

    def __reduce__(self) -> tuple[Any, ...]:
        return (IterationRecorder, ())

    def clear(self) -> None:
        for entry in self.entries.values():
            if entry.valid():
                entry.store.retire()
        self.entries.clear()

    def say_once(self, method: Any, reason: str, eager: bool = True) -> None:
        """Warn once per reason: the iterations run eagerly (``eager``; else they record again), and why."""
        if reason in self.said:
            return
        self.said.add(reason)
        what = "training iterations run eagerly (chains still captured)" if eager else "recorded iterations"
        rank_zero_warn(f"{type(method).__name__}: {what}: {reason}. See docs/performance.md, 'Recorded iterations'.")

    # ----------------------------------------------------------------------------- the iteration
    def run(self, method: Any, batch: Any, batch_idx: int) -> bool:
        """Run this training iteration through the recorder (warm-up, recording or replay) and
        return True; False when it is to run eagerly (switch off, no recorder for the device, or a
        reason :func:`why_iterations_eager` names once)."""
        if not iteration_capture_enabled(getattr(type(method), "recorded_iterations_by_default", False)):
            return False
        store = recorder_for(method.device)
        if store is None:
            return False
        reason = self.disabled or quick_eager_reason(method)
        if reason is not None:
            return self._eager(method, reason)
        self.refresh_rates()
        leaves, spec = tree_flatten(batch)
        settings = method.step_settings
        _, position, _ = method._training_position()
        if settings.accumulate == 1 or position % settings.accumulate == 0:
            self.window_reached = set()  # the window opens in direct mode: gradients zeroed in place
        window = None if settings.accumulate == 1 or self.window_reached is None else frozenset(self.window_reached)
        declared, declared_reads_ = declared_reads(method)
        try:
            state = self.described_state(method)
            request = request_parts(method, leaves, declared, window, Description())
        except RunsEagerly as unseen:
            return self._eager(method, f"the key cannot describe what the iteration reads ({unseen})")
        if state.eager_reason is not None:
            return self._eager(method, state.eager_reason)
        key = (*request, ("state", state.token))
        self.reached_now = set()
        entry = self.entries.get(key)
        if entry is not None and not (entry.store is store and entry.valid()):
            self.entries.pop(key)
            entry = None
        if entry is not None and entry.bindings is not None and not entry.bindings.unchanged():
            self.say_once(
                method,
                f"{entry.bindings.changed()} changed since the iteration was recorded (a lebm function patched or a "
                "method rebound): it is recorded again",
                eager=False,
            )
            self.clear()
            entry = None
        if entry is not None:
            self.entries.move_to_end(key)
            self.misses.clear()
            self.misses_in_a_row = 0
            self._replay(method, entry, leaves, batch_idx, count=True)
            return True
        self.misses.append(key)
        self.misses_in_a_row += 1
        if self.misses_in_a_row > CHURN_LIMIT:
            self.disabled = self.churn_reason()
            self.clear()
            return self._eager(method, self.disabled)
        if self.warmed.get(key, 0) < WARMUP_ITERATIONS:
            self.warmed[key] = self.warmed.pop(key, 0) + 1  # the most recent last
            while len(self.warmed) > WARMED_KEPT:
                self.warmed.pop(next(iter(self.warmed)))
            self.stats.warmups += 1
            store.run_on_capture_stream(lambda: self._direct(method, batch, batch_idx))
            return True
        if store.release_due():
            store.release_all()
        try:
            full = (*request, *state.parts)
            entry = self._record(method, store, leaves, spec, batch_idx, full, declared_reads_, state.described)
        except IterationNotRecorded as failed:
            return self._eager(method, str(failed))  # this iteration runs eagerly, and every later one
        self.entries[key] = entry
        while len(self.entries) > CACHE_SIZE:
            _, dropped = self.entries.popitem(last=False)
            if dropped.valid():
                dropped.store.retire()
        self.recorded_once[key] = None
        while len(self.recorded_once) > WARMED_KEPT:
            self.recorded_once.pop(next(iter(self.recorded_once)))
        self.stats.recordings += 1
        self._replay(method, entry, leaves, batch_idx, count=False)  # the recording counted this step
        return True

    def _eager(self, method: Any, reason: str) -> bool:
        """This iteration runs eagerly (``reason`` said once). In an accumulation window opened in
        direct mode, the gradients its batches did not reach are set to None first, as the eager
        path's ``zero_grad`` would have left them."""
        self.say_once(method, reason)
        self.stats.eager += 1
        if self.window_reached is not None:
            reached = self.window_reached
            for optimizer in method.optimizer_list():
                for group in getattr(optimizer, "optimizer", optimizer).param_groups:
                    for parameter in group["params"]:
                        if parameter.grad is not None and id(parameter) not in reached:
                            parameter.grad = None
            self.window_reached = None
        return False

    def described_state(self, method: Any) -> DescribedState:
        """The method's state as the key describes it (:func:`~lebm.recording.iteration_key.state_parts`),
        described again only when its stamp (:class:`~lebm.recording.key_stamp.StateStamp`) or the
        Trainer's callbacks changed; a description equal to one met before gets that one's token."""
        trainer = attached_trainer(method)
        callbacks = tuple(map(id, trainer.callbacks)) if trainer is not None else ()
        state = self.state
        if state is not None and state.callbacks == callbacks and state.stamp.unchanged():
            return state
        described = Description()
        parts = state_parts(method, described)
        token = self.tokens.get(parts)
        if token is None:
            token = self.tokens[parts] = next(self.token_count)
            self.parts_of[token] = parts
            while len(self.tokens) > WARMED_KEPT:
                self.parts_of.pop(self.tokens.pop(next(iter(self.tokens))), None)
        skip = {*LEFT_OUT_OF_THE_KEY, *NOT_STATE}
        stamp = StateStamp(method, described, skip, self.rates)
        self.state = DescribedState(parts, token, stamp, described, callbacks, state_eager_reason(method))
        return self.state

    def expanded(self, key: IterationKey) -> IterationKey:
        """A lookup key with its state token replaced by the state's parts (for a reader)."""
        return tuple(
            part
            for name, value in key
            for part in (self.parts_of.get(value, ((name, value),)) if name == "state" else ((name, value),))
        )

    def churn_reason(self) -> str:
        """Why :data:`CHURN_LIMIT` iterations in a row met no recording to replay: more different
        iterations in turn than :data:`CACHE_SIZE` recordings (their batch shapes named), or a part of
        the key that changed between the last two (:func:`~lebm.recording.iteration_key.first_difference`)."""
        distinct = list(dict.fromkeys(self.misses))
        if any(key in self.recorded_once for key in distinct):
            shapes = list(dict.fromkeys(dict(key)["batch"] for key in distinct))
            described = "; ".join(", ".join(map(shape_text, shape)) for shape in shapes[:4])
            more = f" and {len(shapes) - 4} more" if len(shapes) > 4 else ""
            return (
                f"{len(distinct)} different iterations come in turn ({len(shapes)} batch shapes: {described}{more}), "
                f"more than the {CACHE_SIZE} recordings a model keeps: each is recorded again before it is replayed. "
                "Give the batches one shape (drop_last, a fixed sequence length)"
            )
        where = first_difference(self.expanded(self.misses[-2]), self.expanded(self.misses[-1])) or "the key"
        return (
            f"{CHURN_LIMIT} iterations in a row were warm-ups or recordings, none a replay: the key changes at every "
            f"iteration ({where} changed between the last two: a setting a callback or a schedule changes each step?)"
        )

    def _direct(self, method: Any, batch: Any, batch_idx: int) -> None:
        """An eager iteration in direct mode (a warm-up): the same updates a recording holds, its
        chains inline as the recording will run them (not through their own graphs)."""
        with method.direct_steps(self), recording_inline():
            method.training_iteration(batch, batch_idx)
        self._note_reached(self.reached_now)
        method.after_iteration()

    def _note_reached(self, reached: set[int] | frozenset[int]) -> None:
        if self.window_reached is not None:
            self.window_reached |= reached

    def _record(
        self,
        method: Any,
        store: GraphStore,
        leaves: list[Any],
        spec: Any,
        batch_idx: int,
        key: IterationKey,
        declared: set[str],
        described: Description,
    ) -> RecordedIteration:
        """Record the iteration over static copies of the batch's tensors (see the module docstring),
        refusing what a replay cannot repeat (:func:`check_the_recording`)."""
        with torch.no_grad():
            static = [leaf.detach().clone() if isinstance(leaf, Tensor) else leaf for leaf in leaves]
        static_batch = tree_unflatten(static, spec)
        stream = method.train_generator
        private = torch.Generator(device=stream.device)
        private.set_state(stream.get_state())
        flag = self.guard_flag(method.device)
        collected: dict[str, Any] = {}
        host_random = HostRandomStates()
        trainer = attached_trainer(method)
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs] if trainer is not None else []
        settings = OptimisationSettings(method.optimizer_list(), schedulers)
        window = dict(key)["updates"][-1]

        code = CodeWatch()

        def body() -> tuple[Tensor, dict[str, Tensor]]:
            collected.clear()
            reads: set[str] = set()
            with (
                method.direct_steps(self, collect=collected),
                method.random_streams.training_from(private),
                method.noting_host_reads(reads),
                recording_an_iteration(),
                NumbersRefused(),
                code,
            ):
                method.training_iteration(static_batch, WatchedIndex(batch_idx, reads))
            refused = code.refusal()
            if refused is not None:
                raise RecordingRefused(refused)
            if "logs" not in collected:
                raise IterationNotRecorded("its training_iteration did not end with finish_training_step")
            check_the_recording(method, key, leaves, declared, reads, collected["logs"], host_random, window)
            changed = settings.changed()
            if changed is not None:
                raise RecordingRefused(
                    f"its training iteration changes {changed}, which a replay would not change again: step schedulers "
                    "and set rates in after_iteration(), which runs on the host after every replay"
                )
            logs, watch = collected["logs"], collected["watch"]
            values = (
                torch.stack([value.detach().reshape(()).float() for value in logs.values()])
                if logs
                else torch.zeros(0, device=method.device)
            )
            flag.logical_or_(method.guard.device_flag({**logs, **watch}, epoch=method.current_epoch))
            return values, {}

        saved = saved_state(method) if store.recording_runs_body else None
        # a CUDA capture runs the Python too: what it assigned and Lightning's count of the step are put back on failure
        uncount = saved_step_count(method)
        unassign = saved_attributes(method, described)
        try:
            with recording_inline(), autocast_without_cache(method.device):
                replay, (values, _) = store.record(body, [private])
        except CaptureBroken:
            raise
        except torch.cuda.OutOfMemoryError as error:
            self.clear()
            store.release_all()  # every recorded graph's memory back to the eager iterations (chains record again)
            torch.cuda.empty_cache()
            self.disabled = (
                f"CUDA ran out of memory while recording an iteration ({first_line(error)}); every recorded graph was "
                "released. Lower the batch size, or add -c recipes/speed/eager_iterations.yaml"
            )
            raise IterationNotRecorded(self.disabled) from error
        except Exception as error:  # noqa: BLE001 - a failed recording: this model's iterations run eagerly
            if saved is not None:
                saved()
            uncount()
            unassign()
            host_random.restore()
            settings.restore()
            cause = first_line(error.__cause__ or error if isinstance(error, IterationNotRecorded) else error)
            if isinstance(error, (RecordingRefused, NotOptedIn)):
                self.disabled = cause
            elif "WatchedIndex" in cause:  # a torch call took the batch index as a number
                self.disabled = f"{UNDECLARED_INDEX} ({cause})"
            else:
                self.disabled = f"its iteration could not be recorded ({cause})"
            raise IterationNotRecorded(self.disabled) from error
        if saved is not None:
            saved()  # the emulation ran the body while recording it: the replay below runs it for real
        names = list(collected["logs"])
        tensors = [leaf for leaf in static if isinstance(leaf, Tensor)]
        reached = frozenset(self.reached_now)
        bindings = Bindings(
            code.ran, [type(method), *(type(m) for m in described.modules.values())], code.c_calls.values()
        )
        return RecordedIteration(replay, tensors, values, names, private, store, store.generation, reached, bindings)

    def _replay(self, method: Any, entry: RecordedIteration, leaves: list[Any], batch_idx: int, count: bool) -> None:
        """Fill the static batch, replay with the training stream, count the step, hand over the values."""
        with torch.no_grad():
            for static, leaf in zip(
                entry.static_batch, (leaf for leaf in leaves if isinstance(leaf, Tensor)), strict=True
            ):
                static.copy_(leaf)
        stream = method.train_generator
        entry.private_generator.set_state(stream.get_state())
        entry.replay()
        stream.set_state(entry.private_generator.get_state())
        self.stats.replays += 1
        self._note_reached(entry.reached)
        if count and method.updates_this_batch:
            method.count_recorded_step()
        values = entry.values.clone()
        logs: dict[str, Any] = dict(zip(entry.names, values.unbind(0), strict=True))
        self.unread += 1
        method.finish_recorded_step(logs, batch_idx)
        method.after_iteration()

    # ----------------------------------------------------------------------------- the guard
    def guard_flag(self, device: torch.device) -> Tensor:
        """The sticky device flag the recorded iterations set when a watched value diverged."""
        if self.flag is None or self.flag.device != device:
            self.flag = torch.zeros((), dtype=torch.bool, device=device)
        return self.flag

    def read_guard(self, force: bool = False, decide: Callable[[bool], bool] | None = None) -> bool:
        """Whether a recorded iteration since the last read diverged: read on the host every
        :data:`GUARD_READ_EVERY` iterations (``force``: now, before a checkpoint, a validation or
        the end of training); ``decide`` turns this rank's verdict into every rank's (DDP: every
        rank reads at the same iterations)."""
        if self.tripped:
            return True  # read before: every later check (a checkpoint on the exception) refuses too
        if self.flag is None or self.unread == 0 or not (force or self.unread >= GUARD_READ_EVERY):
            return False
        self.unread = 0
        bad = bool(self.flag)
        self.tripped = decide(bad) if decide is not None else bad
        return self.tripped

    def start_fit(self) -> None:
        """A new fit (or a resumed one): forget the last fit's recordings, warm-ups, learning-rate
        tensors (its optimisers) and guard verdict."""
        self.clear()
        self.warmed.clear()
        self.rates.clear()
        self.recorded_once.clear()
        self.flag = None
        self.unread = 0
        self.tripped = False
        self.misses.clear()
        self.misses_in_a_row = 0
        self.window_reached = None
        self.state = None

    def rates_for(self, optimizer: torch.optim.Optimizer) -> list[Tensor]:
        """The learning-rate tensors of ``optimizer``'s groups, made on first use (in a warm-up, never
        while recording) and refreshed by :meth:`refresh_rates` before every iteration, outside the
        recording: a refill recorded inside it would replay the rate it had then."""
        held = self.rates.get(id(optimizer))
        if held is None or held.optimizer is not optimizer:
            held = self.rates[id(optimizer)] = LearningRates(optimizer)
        return held.tensors

    def refresh_rates(self) -> None:
        """Refill the learning-rate tensors whose group's rate changed since (a schedule, a resume, a
        hand); make them anew for an optimiser that gained or lost a parameter group."""
        for rates in self.rates.values():
            rates.refresh()


def shape_text(leaf: Hashable) -> str:
    """A batch leaf of a key as a reader writes it: ``"16x2"`` for a tensor's signature
    (``(shape, dtype, device)``), its description otherwise."""
    is_signature = isinstance(leaf, tuple) and len(leaf) == 3 and isinstance(leaf[1], torch.dtype)
    return "x".join(map(str, leaf[0])) if is_signature else repr(leaf)


class IterationNotRecorded(RuntimeError):
    """A training iteration failed to record: the model's iterations run eagerly from now on."""


def check_the_recording(
    method: Any,
    key: IterationKey,
    leaves: list[Any],
    declared: set[str],
    reads: set[str],
    logs: dict[str, Any],
    host_random: HostRandomStates,
    window: frozenset[int] | None,
) -> None:
    """Raise :class:`~lebm.recording.host_reads.RecordingRefused` naming the first thing a recording
    of ``method`` met that a replay cannot repeat: a host value read without being declared
    (``reads`` beyond ``declared``), a step value that is no tensor, a draw from Python's or NumPy's
    random stream, or a part of the key (``key``) that the iteration changed (Python state a replay
    leaves as recorded)."""
    declared_names = {name.rpartition(".")[2] for name in declared}  # self.global_step or the Trainer's
    undeclared = sorted(name for name in reads if name.rpartition(".")[2] not in declared_names)
    if undeclared:
        name = undeclared[0]
        if name == "batch_idx":
            raise RecordingRefused(UNDECLARED_INDEX)
        raise RecordingRefused(
            f"its training iteration reads self.{name} without declaring it: return what it needs of "
            f"{name.rpartition('.')[2]} from iteration_key()"
        )
    constants = [name for name, value in logs.items() if not isinstance(value, Tensor)]
    if constants:
        raise RecordingRefused(
            f"its step logs {constants[0]!r} as a {type(logs[constants[0]]).__name__}, which a replay would repeat as "
            f"recorded (so would a tensor made from it): {NUMBER_ADVICE}"
        )
    drawn = host_random.changed()
    if drawn:
        raise RecordingRefused(
            f"its training iteration draws from {drawn[0]} stream, which a replay does not: draw from the method's "
            "train_generator"
        )
    after = dict(iteration_key(method, leaves, method.iteration_key(), window))
    for name, before in key:
        if name not in CHANGED_BY_AN_ITERATION and after.get(name) != before:
            where = first_difference(before, after.get(name), name) or name
            raise RecordingRefused(
                f"its training iteration changes {where}, which a replay would leave as recorded: keep what changes in "
                "a tensor (a buffer), or change it in after_iteration()"
            )


def why_iterations_eager(method: Any) -> str | None:
    """Why ``method``'s training iterations cannot be recorded now (None: they can):
    :func:`quick_eager_reason`, then :func:`state_eager_reason`."""
    return quick_eager_reason(method) or state_eager_reason(method)


@functools.cache
def _class_reason(kind: type) -> str | None:
    return unaudited_class(kind)


def quick_eager_reason(method: Any) -> str | None:
    """The reasons to run eagerly that are checked at every iteration (cheap): the class is not
    lebm's audited one, no Trainer, 16-mixed, a recovery policy, anomaly detection, chain capture
    off, a process-wide hook, a torch mode or saved-tensor hooks of this thread, a function set on
    the method's instance over one of its class, a callback whose hook runs inside the update (its
    class's or set on the instance)."""
    unaudited = _class_reason(type(method))
    if unaudited is not None:
        return unaudited
    trainer = attached_trainer(method)
    if trainer is None:
        return "the model is not attached to a Trainer"
    if str(getattr(trainer, "precision", "")) == "16-mixed":
        return "16-mixed scales the loss with a gradient scaler that reads its overflow check on the host"
    if method.divergence_recovery is not None:
        return "a divergence recovery policy rolls the model back on the host at every trip"
    if torch.is_anomaly_enabled():
        return "autograd anomaly detection is on: it checks values on the host"
    if not chain_capture_enabled():
        return "chain capture is off for this run (LEBM_CHAIN_CAPTURE=0, recipes/speed/eager_chains.yaml)"
    hooks = next((name for name, held in global_optimizer_hooks().items() if held), None)
    if hooks is not None:
        return f"a process-wide optimiser step hook is registered (torch.optim.optimizer.{hooks}): it runs on the host"
    hooks = next((name for name, held in global_module_hooks().items() if held), None)
    if hooks is not None:
        return f"a process-wide module hook is registered (torch.nn.modules.module.{hooks}), unseen by the key"
    mode = active_thread_modes()
    if mode is not None:
        return f"{mode}, which a replay would not run"
    shadowed = _class_functions(type(method)).intersection(vars(method))
    if shadowed:
        return f"{type(method).__name__}.{min(shadowed)} is replaced on the instance, code lebm has not audited"
    for callback in trainer.callbacks:
        for hook in UPDATE_HOOKS:
            bound = getattr(callback, hook, None)  # the class's hook, or one set on the instance
            function = getattr(bound, "__func__", bound)
            if function is not None and getattr(function, "__module__", "").split(".")[0] not in LIGHTNING:
                return f"the callback {type(callback).__name__} runs {hook} inside every update"
    return None


#: Lightning's packages: a callback hook of theirs does no host work inside the update.
LIGHTNING = ("lightning", "pytorch_lightning")


@functools.cache
def _class_functions(kind: type) -> frozenset[str]:
    """The names of every function ``kind``'s MRO defines (a method, hook or helper of the class)."""
    return frozenset(name for owner in kind.__mro__ for name, value in vars(owner).items() if callable(value))


def state_eager_reason(method: Any) -> str | None:
    """The reasons to run eagerly that the method's state holds (checked when its state is described
    again: :class:`~lebm.recording.key_stamp.StateStamp` sees a hook added, a callback list or an
    optimiser changed): hooks on the method or its parameters, an optimiser without a recorded step."""
    if any(module_hooks(method).values()):
        return f"{type(method).__name__} itself has forward or backward hooks: the key cannot see what they read"
    hooked = next((p for m in tree_modules(method) for p in m.parameters(recurse=False) if tensor_has_hooks(p)), None)
    if hooked is not None:
        name = next(name for name, parameter in method.named_parameters() if parameter is hooked)
        return f"the parameter {name} has a tensor hook (register_hook): the key cannot see what it reads"
    for optimizer in method.optimizer_list():
        refusal = device_step_refusal(getattr(optimizer, "optimizer", optimizer))
        if refusal is not None:
            return refusal
    return None


@contextlib.contextmanager
def counted_only(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, ``optimizer.step()`` finds no gradient, so it updates nothing while its
    wrappers run (Lightning's count of the step and its hooks, a scheduler's note that the optimiser
    stepped): a recorded iteration's update ran on the device. The gradients are put back after it."""
    grads = [(p, p.grad) for group in optimizer.param_groups for p in group["params"]]
    for parameter, _ in grads:
        parameter.grad = None
    # inside a CUDA recording torch refuses a step of a non-capturable optimiser (this one updates nothing)
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    flags = [group.get("capturable", False) for group in optimizer.param_groups]
    if capturing:
        for group in optimizer.param_groups:
            group["capturable"] = True
    try:
        yield
    finally:
        for parameter, grad in grads:
            parameter.grad = grad
        if capturing:
            for group, flag in zip(optimizer.param_groups, flags, strict=True):
                group["capturable"] = flag


def step_directly(method: Any, optimizers: list[Any], loss: Tensor, clip: float | None) -> None:
    """:meth:`lebm.models.Method.step_optimizers` in direct mode (inside a recorded iteration and its
    warm-ups): the same update with nothing on the host. Gradients are zeroed in place at a window's
    first batch (a recording reads them at their address; a parameter that never had one keeps
    None and is skipped, as after ``zero_grad(set_to_none=True)``; one that no batch of the
    accumulation window reached is skipped too, decided over the whole window from
    :attr:`IterationRecorder.window_reached`); ``backward`` as the method's
    ``backward`` hook does it; on an update, the iteration's first step is counted by Lightning
    (:meth:`~lebm.models.Method.count_recorded_step`), each net's gradients are clipped by
    ``torch.nn.utils`` as Lightning's precision plugin clips them, and
    :func:`~lebm.recording.device_adam.device_adam_step` steps it."""
    settings = method.step_settings
    inner = [getattr(optimizer, "optimizer", optimizer) for optimizer in optimizers]
    parameters = [p for optimizer in inner for group in optimizer.param_groups for p in group["params"]]
    recorder = method.iteration_recorder
    _, batch_idx, _ = method._training_position()
    if settings.accumulate == 1 or batch_idx % settings.accumulate == 0:
        with torch.no_grad():
            for parameter in parameters:
                if parameter.grad is not None:
                    parameter.grad.zero_()
    versions = {id(p): None if p.grad is None else tensor_version(p.grad) for p in parameters}
    if settings.accumulate == 1:
        method.backward(loss)
    else:
        trainable = [p for p in parameters if p.requires_grad]
        if trainable:
            method.backward(loss / settings.accumulate, inputs=trainable)
    for parameter in parameters:  # a gradient made or written by this backward pass
        before = versions[id(parameter)]
        if parameter.grad is not None and (before is None or tensor_version(parameter.grad) != before):
            recorder.reached_now.add(id(parameter))
    if settings.accumulate > 1 and not method.updates_this_batch:
        return
    # a gradient kept (zeroed) that no batch of the window reached: eagerly it is None (a window that
    # opened eagerly set it to None itself)
    window = recorder.window_reached
    unreached = (
        frozenset()
        if window is None
        else frozenset(id(p) for p in parameters if p.grad is not None and id(p) not in window | recorder.reached_now)
    )
    reduce = getattr(method.trainer.strategy, "reduce_gradients", None)
    if reduce is not None and method.trainer.world_size > 1:  # between two graphs: each rank's own noise, one average
        outside_the_recording(lambda: reduce(parameters))
    method.count_recorded_step(once=True)
    value, algorithm = settings.clip_for(clip)
    for optimizer in inner:
        if value is not None:
            clipped = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in unreached]
            if algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(clipped, value)
            else:
                torch.nn.utils.clip_grad_value_(clipped, value)
        device_adam_step(optimizer, recorder.rates_for(optimizer), skip=unreached)
        with counted_only(optimizer):  # torch's own step over no gradient: a scheduler sees this optimiser step
            optimizer.step()


def steps_on_the_host(checkpoint: dict[str, Any]) -> None:
    """Put the Adam step counts of ``checkpoint``'s optimiser states on the CPU, where torch's own
    Adam keeps them (a recorded step keeps them on the parameters' device): a checkpoint reads the
    same whichever way it was trained, and an eager resume of it steps without reading the device.

    The checkpoint's per-parameter dicts are the optimiser's own (``Optimizer.state_dict()`` packs
    ``self.state``'s dicts, not copies): each one with a step to move is replaced in the checkpoint
    by a copy, and the live optimiser keeps its device step. Written into the live dict, the host
    copy changed every recorded iteration's key at each checkpoint (one recording and three warm-ups
    an epoch on a GPU: ``tests/recording/test_recorded_iterations_epochs.py``)."""
    for state in checkpoint.get("optimizer_states") or []:
        packed = state.get("state") if isinstance(state, dict) else None
        for index, values in list((packed or {}).items()):
            step = values.get("step") if isinstance(values, dict) else None
            if isinstance(step, Tensor) and step.device.type != "cpu":
                packed[index] = {**values, "step": step.detach().to("cpu")}


def saved_step_count(method: Any) -> Callable[[], None]:
    """Save Lightning's count of the optimiser steps (``trainer.global_step`` of a method that
    optimises manually) and the method's note of the iteration it counted; return what puts them
    back (after a recording that failed once its body had counted the step: the eager iteration
    that follows counts it again)."""
    trainer = attached_trainer(method)
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    state = copy.deepcopy(progress.state_dict())
    counted = method._counted_iteration

    def restore() -> None:
        progress.load_state_dict(state)
        method._counted_iteration = counted

    return restore


def saved_state(method: Any) -> Callable[[], None]:
    """Save every tensor a training iteration of ``method`` may change in place (parameters,
    buffers, gradients, optimiser states, the guard flag) and the device's default random stream;
    return what puts them back (after a recording that also ran its body)."""
    tensors: dict[int, Tensor] = {}
    for tensor in (*method.parameters(), *method.buffers()):
        tensors[id(tensor)] = tensor
        if tensor.grad is not None:
            tensors[id(tensor.grad)] = tensor.grad
    for optimizer in method.optimizer_list():
        for state in getattr(optimizer, "optimizer", optimizer).state.values():
            for value in state.values():
                if isinstance(value, Tensor):
                    tensors[id(value)] = value
    recorder = method.iteration_recorder
    if recorder.flag is not None:
        tensors[id(recorder.flag)] = recorder.flag
    return saved_values(tensors.values(), method.device)
