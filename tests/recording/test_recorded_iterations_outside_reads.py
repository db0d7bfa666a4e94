"""What a recorded iteration's user code reads beyond the method, reached by the routes a held-out
review found open (device: CPU, the strict replay emulator).

Each case is trained eagerly and recorded, and compared bit for bit: a value the key can hold (a
plain number reached through a ``functools.partial``, a helper class's static method, a user energy
net's ``forward``) re-records when it changes; one it cannot hold (a dict in a closure cell or a
default argument, a ``random.Random`` on the method) runs the iteration eagerly with one line; a
scheduler stepped, or ``trainer.callback_metrics`` read, inside the iteration runs eagerly with a
line whose advice (``after_iteration()``) records. A user package named like a standard-library
module is the user's code, not trusted code.
"""

from __future__ import annotations

import enum
import functools
import random
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from test_recorded_iterations import assert_replayed, assert_same
from test_recorded_iterations_safety import AtStep, assert_eager_once, both_ways, latent_ebm
from test_recorded_iterations_vouching import as_class

from lebm.models import LatentEBM
from lebm.recording.vouching import unvouched_code

#: A module-level weight a callback anneals (read through a partial, a helper class, a net's forward).
BETA = 1.0


def reset_beta(trainer: Any = None, module: Any = None) -> None:
    global BETA
    BETA = 1.0


def anneal(trainer: Any, module: Any) -> None:
    global BETA
    BETA = 2.0


@pytest.fixture(autouse=True)
def beta_put_back() -> Any:
    yield
    reset_beta()


def annealed_at_step_5() -> list[L.Callback]:
    return [AtStep(0, reset_beta), AtStep(5, anneal)]


# ----------------------------------------------------------------- plain values reached by a route
def scaled(x: torch.Tensor, power: int) -> torch.Tensor:
    return x * BETA**power


weighted = functools.partial(scaled, power=1)


class Schedules:
    """A helper class of the user's whose static method reads the annealed global."""

    @staticmethod
    def weighted(x: torch.Tensor) -> torch.Tensor:
        return x * BETA


def weighing(name: str, weigh: Callable[[Any, torch.Tensor], torch.Tensor]) -> type:
    """An opted-in LatentEBM whose iteration weighs its batch by ``weigh(self, x)`` (the route under
    test lies inside ``weigh``, which the iteration reaches through its closure)."""

    def training_iteration(self: Any, batch: Any, batch_idx: int) -> None:
        LatentEBM.training_iteration(self, [weigh(self, batch[0])], batch_idx)

    body = {"records_iterations": True, "training_iteration": training_iteration, "__module__": __name__}
    return type(name, (LatentEBM,), body)


ThroughAPartial = weighing("ThroughAPartial", lambda self, x: weighted(x))
ThroughAHelperClass = weighing("ThroughAHelperClass", lambda self, x: Schedules.weighted(x))


def with_a_tempered_energy() -> LatentEBM:
    """A LatentEBM, not opted in (it overrides nothing), whose energy net's ``forward`` is the
    user's and divides by the annealed global."""
    model = latent_ebm()
    net = model.prior.energy_net
    base = type(net)

    def forward(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return base.forward(self, *args, **kwargs) / BETA

    net.__class__ = type("TemperedEnergy", (base,), {"forward": forward, "__module__": __name__})
    return model


@pytest.mark.parametrize(
    "make",
    [
        as_class(ThroughAPartial),
        as_class(ThroughAHelperClass),
        pytest.param(with_a_tempered_energy, marks=pytest.mark.slow),  # the __call__ case below is the fast one
    ],
    ids=["functools.partial", "a helper class's static method", "a user net's forward"],
)
def test_a_plain_value_reached_by_another_route_is_seen_by_the_key(make, one_thread) -> None:
    eager, recorded, model, lines = both_ways(make, annealed_at_step_5)
    assert BETA == 2.0
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=2)
    assert model.iteration_recorder.stats.recordings >= 2  # the change reached the key: recorded anew


# ------------------------------------------------- routes a second review found: keyed, or eager with a line
user_settings = types.ModuleType("user_settings")  # a user's package holding a module, read as pkg.settings.BETA
user_settings.settings = types.ModuleType("user_settings.settings")  # type: ignore[attr-defined]
user_settings.settings.BETA = 1.0  # type: ignore[attr-defined]


@torch.enable_grad()
def decorated(x: torch.Tensor) -> torch.Tensor:
    """A helper behind a library's decorator (whose wrapper's code is torch's)."""
    return x * BETA


class Annealer:
    """A plain object of the user's held on the method; its method reads the global."""

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        return x * BETA


ThroughANestedModule = weighing("ThroughANestedModule", lambda self, x: x * user_settings.settings.BETA)
ThroughADecoratedHelper = weighing("ThroughADecoratedHelper", lambda self, x: decorated(x))
ThroughAHeldObject = weighing("ThroughAHeldObject", lambda self, x: self.annealer.weight(x))


class ThroughGetattr(LatentEBM):
    records_iterations = True
    weighting = "annealed"

    def weight_annealed(self, x: torch.Tensor) -> torch.Tensor:
        return x * BETA

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([getattr(self, "weight_" + self.weighting)(batch[0])], batch_idx)


def annealed_weight(x: torch.Tensor) -> torch.Tensor:
    return x * BETA


class ThroughADispatchTable(LatentEBM):
    records_iterations = True
    WEIGHTINGS = {"annealed": annealed_weight}

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([self.WEIGHTINGS["annealed"](batch[0])], batch_idx)


def with_an_energy_whose(kind: str) -> Any:
    """A LatentEBM, not opted in, whose energy net's class is the user's: its ``__call__`` divides
    by the annealed global, or its ``forward`` multiplies by a class attribute a callback sets."""

    def make() -> LatentEBM:
        model = latent_ebm()
        net = model.prior.energy_net
        base = type(net)
        if kind == "__call__":
            body = {"__call__": lambda self, *a, **k: base.__call__(self, *a, **k) / BETA}
        else:
            body = {"forward": lambda self, *a, **k: base.forward(self, *a, **k) * type(self).SCALE, "SCALE": 1.0}
        net.__class__ = type(f"Energy{kind}", (base,), {**body, "__module__": __name__})
        return model

    return make


def with_an_annealer(model: LatentEBM) -> LatentEBM:
    model.annealer = Annealer()  # type: ignore[attr-defined]
    return model


def anneal_everywhere(trainer: Any, module: Any) -> None:
    anneal(trainer, module)
    user_settings.settings.BETA = 2.0  # type: ignore[attr-defined]
    net = module.prior.energy_net
    if "SCALE" in vars(type(net)):
        type(net).SCALE = 2.0


def reset_everywhere(trainer: Any, module: Any) -> None:
    reset_beta()
    user_settings.settings.BETA = 1.0  # type: ignore[attr-defined]
    net = module.prior.energy_net
    if "SCALE" in vars(type(net)):  # the eager run's copy and the recorded one share the class
        type(net).SCALE = 1.0


@pytest.mark.parametrize(
    "make",
    [
        as_class(ThroughANestedModule),
        as_class(ThroughADecoratedHelper),
        lambda: with_an_annealer(as_class(ThroughAHeldObject)()),
        as_class(ThroughGetattr),
        as_class(ThroughADispatchTable),
        with_an_energy_whose("__call__"),
        with_an_energy_whose("class attribute"),
    ],
    ids=[
        "pkg.settings.BETA",
        "a helper behind torch.enable_grad",
        "a held object's method",
        "a method reached by getattr",
        "a dispatch table on the class",
        "a user net's __call__",
        "a user net's class attribute",
    ],
)
def test_a_value_reached_by_a_route_the_second_review_found_is_seen_by_the_key(make, one_thread) -> None:
    callbacks = lambda: [AtStep(0, reset_everywhere), AtStep(5, anneal_everywhere)]  # noqa: E731
    eager, recorded, model, lines = both_ways(make, callbacks)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=2)
    assert model.iteration_recorder.stats.recordings >= 2  # the change reached the key: recorded anew


class Mode(enum.Enum):
    PLAIN = 1
    ANNEALED = 2


MODE = Mode.ANNEALED


class BranchesOnAnEnum(LatentEBM):
    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        factor = 1.5 if MODE is Mode.ANNEALED else 1.0
        super().training_iteration([batch[0] * factor], batch_idx)


def test_an_enum_constant_is_a_plain_value(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(BranchesOnAnEnum))
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)


class ClipsItsOwnWay(LatentEBM):
    def clip_gradients(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        super().clip_gradients(optimizer, 0.01, "value")


class ScalesItsBackward(LatentEBM):
    records_iterations = True

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        super().manual_backward(loss * 0.5, *args, **kwargs)


@pytest.mark.parametrize(
    ("kind", "named"),
    [(ClipsItsOwnWay, "ClipsItsOwnWay.clip_gradients"), (ScalesItsBackward, "ScalesItsBackward.manual_backward")],
)
def test_an_override_of_a_hook_the_recorded_update_does_not_call_runs_eagerly(kind, named, one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(kind), gradient_clip_val=0.05)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named, "a recorded update does not call")


# ------------------------------------------------------------ values no key can hold: eager, one line
def closing_over(settings: dict[str, float]) -> type:
    class ClosesOverADict(LatentEBM):
        records_iterations = True

        def training_iteration(self, batch: Any, batch_idx: int) -> None:
            super().training_iteration([batch[0] * settings["weight"]], batch_idx)

    return ClosesOverADict


SCHEDULE = {"weight": 1.0}


def weight_of(x: torch.Tensor, schedule: dict[str, float] = SCHEDULE) -> torch.Tensor:
    return x * schedule["weight"]


class ReadsADefaultArgument(LatentEBM):
    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([weight_of(batch[0])], batch_idx)


class DrawsFromItsOwnRandom(LatentEBM):
    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * (1.0 + 0.01 * self.augment.random())], batch_idx)


def with_a_random(model: LatentEBM) -> LatentEBM:
    model.augment = random.Random(0)  # type: ignore[attr-defined]
    return model


CLOSED_OVER = {"weight": 1.0}


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (as_class(closing_over(CLOSED_OVER)), "(closure 'settings') (dict)"),
        (as_class(ReadsADefaultArgument), "weight_of (default 0) (dict)"),
        (lambda: with_a_random(as_class(DrawsFromItsOwnRandom)()), "augment holds a Random"),
    ],
    ids=["a dict in a closure cell", "a dict as a default argument", "a random.Random on the method"],
)
def test_a_value_the_key_cannot_hold_runs_eagerly_with_one_line(make, named, one_thread) -> None:
    def change(trainer: Any, module: Any) -> None:
        CLOSED_OVER["weight"] = SCHEDULE["weight"] = 2.0

    def put_back(trainer: Any, module: Any) -> None:
        CLOSED_OVER["weight"] = SCHEDULE["weight"] = 1.0

    eager, recorded, model, lines = both_ways(make, lambda: [AtStep(0, put_back), AtStep(5, change)])
    put_back(None, None)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named)


# --------------------------------------------------------------------- host work inside the iteration
class Decays(LatentEBM):
    """LatentEBM's optimisers, each with a per-iteration exponential decay of its rate."""

    def configure_optimizers(self) -> Any:
        optimizers = super().configure_optimizers()
        optimizers = optimizers[0] if isinstance(optimizers, tuple) else optimizers
        return optimizers, [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.7) for o in optimizers]


class StepsItsSchedulerInside(Decays):
    """Steps its learning-rate schedulers inside the iteration (Lightning's manual idiom)."""

    records_iterations = True

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration(batch, batch_idx)
        for scheduler in self.lr_schedulers():
            scheduler.step()


class StepsItsSchedulerAfter(Decays):
    """The line's advice: the same steps in ``after_iteration()``."""

    records_iterations = True

    def after_iteration(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()


def test_a_scheduler_stepped_inside_the_iteration_runs_eagerly_and_the_advice_records(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(StepsItsSchedulerInside))
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "changes optimiser 0's 'lr'", "after_iteration()")
    advised, recorded, model, lines = both_ways(as_class(StepsItsSchedulerAfter))
    assert_same(advised, recorded)
    assert not lines
    assert_replayed(model, at_least=4)
    assert torch.equal(advised["optimizer0.group0.lr"], eager["optimizer0.group0.lr"])  # decayed as often


class ReadsTheLoggedMetrics(LatentEBM):
    records_iterations = True

    def iteration_key(self) -> Any:
        return len(self.trainer.callback_metrics)  # declared: still no key can hold the tensors

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        logged = self.trainer.callback_metrics.get("train/decoder_nll")
        factor = 1.0 if logged is None else 1.0 + 1e-3 * torch.tanh(logged.detach())
        super().training_iteration([batch[0] * factor], batch_idx)


def test_reading_the_trainers_logged_metrics_runs_eagerly_with_a_line_naming_them(one_thread) -> None:
    eager, recorded, model, lines = both_ways(as_class(ReadsTheLoggedMetrics))
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "reads trainer.callback_metrics", "stays eager")


# ------------------------------------------------------------------------ trusted code, by location
def test_a_users_package_named_like_a_standard_library_module_is_the_users_code(tmp_path, monkeypatch) -> None:
    """``sched`` is a standard-library name: a user's package of that name is walked and vouched
    as the user's (trusted code is known by where its file lies, not by its name)."""
    package = tmp_path / "sched"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from lebm.models import LatentEBM

            class Annealed(LatentEBM):
                def training_iteration(self, batch, batch_idx):
                    super().training_iteration([batch[0] * 2.0], batch_idx)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sched", raising=False)
    import sched  # the user's

    assert sched.__file__.startswith(str(tmp_path))
    model = latent_ebm()
    model.__class__ = sched.Annealed
    assert "Annealed.training_iteration overrides" in (unvouched_code(model) or "")


# ------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_under_ddp_a_global_changed_mid_run_is_seen_on_every_rank(tmp_path) -> None:
    """Two ``lebm_ddp_spawn`` processes, each annealing the module-level weight at step 5 that the
    opted-in iteration reads through a ``functools.partial``: every rank ends with the eager run's
    weights, and the recorded ranks replayed (the key re-recorded at the change)."""
    from test_recorded_iterations import ranks_of_two_ddp_runs

    ranks = ranks_of_two_ddp_runs(tmp_path, ThroughAPartial, annealed_at_step_5)
    for eager, recorded in zip(ranks[False], ranks[True], strict=True):
        assert_same(eager["weights"], recorded["weights"])
        assert recorded["stats"]["replays"] >= 2 and recorded["stats"]["recordings"] >= 2, recorded["stats"]
