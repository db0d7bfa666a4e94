"""Recorded iterations replay only code lebm vouches for, and key on what it reads outside the method
(device: CPU, the strict replay emulator).

A user's class that overrides ``training_iteration`` or a hook the iteration calls runs eagerly,
with one line naming the class, the function and the opt-in, until its own body states
``records_iterations = True``. Code that opted in is watched for what it reads outside the method:
module-level constants (read directly, through a function held on the method, or through a module)
go into the key, a module-level list or an assignment to a global refuses, and the class's own
attributes and identity are part of the key. Each run is compared with the eager path, bit for bit.
"""

from __future__ import annotations

import types
from typing import Any

import lightning as L
import pytest
import torch
from test_recorded_iterations import assert_replayed, assert_same
from test_recorded_iterations_safety import AtStep, assert_eager_once, both_ways, latent_ebm

from lebm.models import LatentEBM
from lebm.recording.vouching import reached_functions, unvouched_code

#: A module-level constant the iterations below read (a callback changes it mid-run).
SCALE = 1.0
#: A module-level counter the iteration below appends to: a host side effect a replay does not repeat.
CALLS: list[int] = []
#: A module of the user's holding a constant, read as ``settings.FACTOR``.
settings = types.ModuleType("user_settings")
settings.FACTOR = 1.0  # type: ignore[attr-defined]


def as_class(kind: type) -> Any:
    """A maker of LatentEBM models whose class is ``kind``."""

    def make() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = kind
        return model

    return make


def reset_globals(trainer: Any = None, module: Any = None) -> None:
    """This module's globals as written (each run starts from them: a callback at step 0)."""
    global SCALE
    SCALE = 1.0
    CALLS.clear()
    settings.FACTOR = 1.0  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def globals_put_back() -> Any:
    """Every test starts from this module's globals as written."""
    yield
    reset_globals()


# ----------------------------------------------------------------------------- vouch by code
class Overrides(LatentEBM):
    """Scales its batch by 2: an iteration of the user's, not opted in."""

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * 2.0], batch_idx)


class OverridesAHook(LatentEBM):
    """Adds a term to every loss in ``step_optimizers``, a hook the iteration calls; not opted in."""

    def step_optimizers(self, optimizers: Any, loss: Any, clip: float | None = None) -> None:
        super().step_optimizers(optimizers, loss * 1.5, clip)


class OptsIn(Overrides):
    """The same iteration, opted in."""

    records_iterations = True


class OverridesAgain(OptsIn):
    """Overrides the opted-in iteration again, without opting in itself."""

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * 0.5], batch_idx)


class AddsUnrelatedMethods(LatentEBM):
    """Overrides nothing the iteration calls (a hook of the run's start, a helper of its own)."""

    def on_train_start(self) -> None:
        super().on_train_start()
        self.started = True

    def a_helper_of_its_own(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (Overrides, "Overrides.training_iteration overrides"),
        (OverridesAHook, "OverridesAHook.step_optimizers overrides"),
        (OverridesAgain, "OverridesAgain.training_iteration overrides"),
    ],
)
def test_code_of_the_users_that_did_not_opt_in_runs_eagerly_with_one_line(kind, named, one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(kind))
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named, "records_iterations = True", "has not opted in")
    assert model.iteration_recorder.stats.warmups == 0  # decided before any warm-up


def test_code_that_opted_in_is_recorded(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(OptsIn))
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)


def test_a_subclass_that_overrides_nothing_the_iteration_calls_is_recorded(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(AddsUnrelatedMethods))
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)


def test_a_function_held_on_the_instance_under_a_hook_name_runs_eagerly_with_one_line(one_thread) -> None:
    def holding() -> LatentEBM:
        model = latent_ebm()
        doubled = lambda self, batch, batch_idx: LatentEBM.training_iteration(self, [batch[0] * 2.0], batch_idx)  # noqa: E731
        model.training_iteration = types.MethodType(doubled, model)  # type: ignore[method-assign]
        return model

    eager, recorded, model, lines = both_ways(holding)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "training_iteration is a function held on the instance")


def test_the_hooks_the_iteration_calls_are_found_through_lebms_own_functions() -> None:
    """``step_directly`` (a module-level function) calls ``method.backward``: overriding it is seen."""
    reached, _ = reached_functions(LatentEBM)
    assert {"training_iteration", "step_optimizers", "finish_training_step", "backward"} <= reached.keys()
    assert "on_train_start" not in reached and "configure_optimizers" not in reached


def test_a_function_assigned_onto_lebms_own_class_is_not_vouched_for() -> None:
    kind = type("Patched", (LatentEBM,), {})
    model = latent_ebm()
    model.__class__ = kind
    assert unvouched_code(model) is None
    kind.finish_training_step = lambda self, *args, **kwargs: None  # type: ignore[attr-defined]
    assert "Patched.finish_training_step overrides" in (unvouched_code(model) or "")


# ------------------------------------------------------------------- what opted-in code reads
class ReadsAGlobal(LatentEBM):
    """Scales its batch by the module-level ``SCALE``."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * SCALE], batch_idx)


class ReadsThroughAHeldFunction(LatentEBM):
    """Scales its batch by what a function held on the method returns (it reads ``SCALE``)."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * self.scale()], batch_idx)


class ReadsAModulesAttribute(LatentEBM):
    """Scales its batch by ``settings.FACTOR``, a module of the user's."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * settings.FACTOR], batch_idx)


def current_scale() -> float:
    return SCALE


@pytest.mark.parametrize("how", ["directly", "through a held lambda", "through a module"])
def test_a_module_level_constant_changed_mid_run_is_seen_by_the_key(how, one_thread) -> None:
    def make() -> LatentEBM:
        kind = {"directly": ReadsAGlobal, "through a module": ReadsAModulesAttribute}
        model = as_class(kind.get(how, ReadsThroughAHeldFunction))()
        if how == "through a held lambda":
            model.scale = lambda: current_scale()
        return model

    def change(trainer: Any, module: Any) -> None:
        global SCALE
        SCALE = 2.0
        settings.FACTOR = 2.0  # type: ignore[attr-defined]

    eager, recorded, model, lines = both_ways(make, lambda: [AtStep(0, reset_globals), AtStep(5, change)])
    assert SCALE == 2.0
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=2)
    assert model.iteration_recorder.stats.recordings >= 2  # the change reached the key: recorded anew


class CountsInAList(LatentEBM):
    """Appends to a module-level list at every iteration: a host side effect outside the method."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        CALLS.append(1)
        super().training_iteration([batch[0] * (1.0 + 0.001 * len(CALLS))], batch_idx)


class AssignsAGlobal(LatentEBM):
    """Assigns a module-level global at every iteration."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        global SCALE
        SCALE = SCALE + 0.001
        super().training_iteration([batch[0] * SCALE], batch_idx)


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (CountsInAList, "reads test_recorded_iterations_vouching.CALLS (list), outside the method"),
        (AssignsAGlobal, "test_recorded_iterations_vouching.SCALE (an assignment to a module-level global)"),
    ],
)
def test_a_module_level_value_the_key_cannot_hold_runs_eagerly_with_one_line(kind, named, one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(kind), lambda: [AtStep(0, reset_globals)])
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named)
    assert len(CALLS) == (10 if kind is CountsInAList else 0)  # every iteration ran its Python


# ------------------------------------------------------------------------------- the class
class ScaledByAClassAttribute(LatentEBM):
    """Scales its batch by a class attribute."""

    records_iterations = True
    factor = 1.0

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * self.factor], batch_idx)


class PhaseTwo(ScaledByAClassAttribute):
    """A phase-2 class a callback switches the model to: another factor."""

    factor = 3.0


def test_a_class_attribute_changed_mid_run_is_seen_by_the_key(one_thread) -> None:
    kind = type("Scaled", (ScaledByAClassAttribute,), {"records_iterations": True})
    factor = lambda step, value: AtStep(step, lambda t, m: setattr(kind, "factor", value))  # noqa: E731
    eager, recorded, model, lines = both_ways(as_class(kind), lambda: [factor(0, 1.0), factor(5, 2.0)])
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=2)
    assert model.iteration_recorder.stats.recordings == 2


def test_the_class_switched_mid_run_is_seen_by_the_key(one_thread) -> None:
    switch = lambda: [AtStep(5, lambda t, m: setattr(m, "__class__", PhaseTwo))]  # noqa: E731
    eager, recorded, model, lines = both_ways(as_class(ScaledByAClassAttribute), switch)
    assert type(model) is PhaseTwo
    assert_same(eager, recorded)
    assert not lines
    assert model.iteration_recorder.stats.recordings == 2


# ------------------------------------------------------------ numbers made into tensors, logged
def learning_rate(module: Any) -> float:
    return module.optimizer_list()[0].param_groups[0]["lr"]


class LogsTheRateAsATensor(LatentEBM):
    """Logs its decoder's learning rate as ``torch.tensor(lr)`` in its step: baked in by a recording."""

    records_iterations = True

    def finish_training_step(self, logs: Any, watch: Any = None, batch_idx: int = 0) -> None:
        super().finish_training_step({**logs, "train/lr": torch.tensor(learning_rate(self))}, watch, batch_idx)


class LogsTheRateAfterTheIteration(LatentEBM):
    """Logs its decoder's learning rate in ``after_iteration``, as the refusal's line advises."""

    def after_iteration(self) -> None:
        super().after_iteration()
        self.log("train/lr", learning_rate(self))


class LoggedRates(L.Callback):
    """Every step's logged ``train/lr``."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int) -> None:
        self.rates.append(float(trainer.callback_metrics["train/lr"]))


def test_a_tensor_made_from_a_python_number_runs_eagerly_with_a_line_that_says_what_works(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(LogsTheRateAsATensor), max_epochs=2)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "makes a tensor from a Python number", "after_iteration()")


def test_the_advice_of_the_line_records_and_logs_every_rate(one_thread) -> None:
    """The learning rate logged in ``after_iteration`` follows the per-epoch decay under replay."""
    logged: list[LoggedRates] = []

    def logging() -> list[L.Callback]:
        logged.append(LoggedRates())
        return [logged[-1]]

    eager, recorded, model, lines = both_ways(as_class(LogsTheRateAfterTheIteration), logging, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=8)
    assert logged[0].rates == logged[1].rates and len(set(logged[1].rates)) == 2, [c.rates for c in logged]


# -------------------------------------------------------------------------------- the Trainer
class ReadsTheTrainer(LatentEBM):
    """Scales its batch by what it reads of the Trainer beyond the step and the epoch."""

    records_iterations = True
    reads = "fit_loop"
    declares = False

    def iteration_key(self) -> Any:
        return (self.read(),) if self.declares else super().iteration_key()

    def read(self) -> float:
        if self.reads == "fit_loop":
            return float(self.trainer.fit_loop.epoch_loop.batch_idx % 2)
        return float(len(self.trainer.callbacks))

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * (1.0 + 0.01 * self.read())], batch_idx)


@pytest.mark.parametrize("reads", ["fit_loop", "callbacks"])
def test_a_trainer_read_beyond_the_key_runs_eagerly_with_one_line(reads, one_thread) -> None:
    kind = type(f"Reads_{reads}", (ReadsTheTrainer,), {"reads": reads, "records_iterations": True})
    eager, recorded, model, lines = both_ways(as_class(kind))
    assert_same(eager, recorded)
    assert_eager_once(model, lines, f"self.trainer.{reads} without declaring it")
    assert type(model.trainer) is L.Trainer


def test_a_trainer_read_that_iteration_key_declares_is_replayed(one_thread) -> None:
    kind = type("DeclaresTheLoop", (ReadsTheTrainer,), {"declares": True, "records_iterations": True})
    eager, recorded, model, lines = both_ways(as_class(kind))
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)
