"""Recorded training iterations equal eager ones (device: CPU, through the strict replay emulator).

With the switch on, every method's whole training iteration (chains, losses, backward passes,
clipping, optimiser steps, EMA) is recorded once per key and replayed by ``lebm.testing.capture``'s
strict emulator, which replays the recorded aten operations with every Python number baked in, as a
CUDA graph does. Twenty iterations then end where the eager path ends: the same parameters, buffers,
optimiser states, learning rates and random streams, bit for bit, with accumulation, clipping,
``bf16-mixed`` and a resume in the middle. A setting a recording baked in and the key did not see
(a learning rate a schedule changed, DAMC's EMA turn or warm-up switch) would replay stale and fail
these comparisons. On a GPU: ``tests/recording/test_recorded_iterations_cuda.py``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint

from lebm.models import Method
from lebm.recording import iteration_capture
from lebm.recording.recorded_iteration import CHURN_LIMIT, GUARD_READ_EVERY, WARMUP_ITERATIONS, why_iterations_eager
from lebm.recording.recorders import set_cpu_store
from lebm.speed import RecordedIterations
from lebm.testing.capture import EmulatedStore, emulate_on_cpu
from lebm.training.guard import TrainingDiverged
from tests.helpers.audited import audited
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, toy_loader
from tests.models.test_chain_capture_methods import without_recording

METHODS = [case for case in CASES if case.in_library]
#: The whole comparisons run in the default tier for LatentEBM and MultiStageNCE (one key; keys that
#: change as stages move on) and in the slow tier for the other methods (their keys and settings are
#: compared in the default tier by the files beside this one, issue 109's test budget).
DEFAULT_TIER = ("LatentEBM", "MultiStageNCE")


def each_method() -> list[Any]:
    """Every method's case, those outside :data:`DEFAULT_TIER` marked ``slow``."""
    return [
        case if case.name in DEFAULT_TIER else pytest.param(case, marks=pytest.mark.slow, id=case.name)
        for case in METHODS
    ]


#: Batches per epoch: two epochs hold 20 iterations (the epoch's end decays every learning rate).
BATCHES = 10


def build(case: Any) -> Method:
    """The case's model with settings every key must see: per-epoch (per-3-update for DAMC)
    learning-rate decay, DAMC's EMA every second update and a warm-up switch at update 8 (both
    recorded and replayed before it), a
    multi-stage prior that moves to its next stage mid-run."""
    torch.manual_seed(0)
    model = without_recording(case.build())
    model.hparams.lr_decay = 0.5
    if case.name == "DAMC":
        model.hparams.update(ema_every=2, warmup_iterations=8, lr_decay_every=3)
    if hasattr(model, "stage_schedule"):
        model.stage_schedule = [7] * model.prior.n_stages
    return model


def state_of(model: Method, trainer: L.Trainer) -> dict[str, Any]:
    """Everything a run leaves: the model's state, every optimiser's state and rates, the streams."""
    state: dict[str, Any] = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for index, optimizer in enumerate(trainer.optimizers):
        for p_index, (param, values) in enumerate(optimizer.state.items()):
            for name, value in values.items():
                state[f"optimizer{index}.{p_index}.{name}"] = torch.as_tensor(value).float().cpu()
            del param
        for g_index, group in enumerate(optimizer.param_groups):
            state[f"optimizer{index}.group{g_index}.lr"] = torch.tensor(group["lr"], dtype=torch.float64)
    state["training stream"] = model.random_streams.train.get_state()
    state["global stream"] = torch.get_rng_state()
    state["global step"] = torch.tensor(trainer.global_step)
    return state


def fit(model: Method, recorded: bool, ckpt_path: str | None = None, **settings: Any) -> dict[str, Any]:
    torch.manual_seed(7)
    options: dict[str, Any] = dict(max_epochs=2, accelerator="cpu", limit_val_batches=1, num_sanity_val_steps=0)
    options.update(settings)
    trainer = quiet_trainer(**options)
    with emulate_on_cpu(), iteration_capture(recorded):
        trainer.fit(model, toy_loader(n_batches=BATCHES), toy_loader(n_batches=1, seed=1), ckpt_path=ckpt_path)
    return state_of(model, trainer)


def assert_same(eager: dict[str, Any], recorded: dict[str, Any]) -> None:
    assert eager.keys() == recorded.keys()
    different = [name for name in eager if not torch.equal(eager[name], recorded[name])]
    assert not different, different[:8]


def assert_replayed(model: Method, at_least: int) -> None:
    recorder = model.iteration_recorder
    stats = recorder.stats
    assert stats.recordings >= 1 and stats.replays >= at_least and stats.eager == 0, (stats, recorder.disabled)


VARIANTS = {
    "plain": {},
    "accumulate 2": {"accumulate_grad_batches": 2},
    "clip": {"gradient_clip_val": 0.05},
    "bf16-mixed": {"precision": "bf16-mixed"},
}


@pytest.mark.parametrize("case", each_method(), ids=lambda case: case.name)
def test_twenty_recorded_iterations_equal_the_eager_path(case, one_thread) -> None:
    eager_model = build(case)
    recorded_model = copy.deepcopy(eager_model)
    assert_same(fit(eager_model, False), fit(recorded_model, True))
    assert_replayed(recorded_model, at_least=10)
    assert eager_model.iteration_recorder.stats.replays == 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", [name for name in VARIANTS if name != "plain"])
@pytest.mark.parametrize("case", METHODS, ids=lambda case: case.name)
def test_recorded_iterations_equal_the_eager_path_with_accumulation_clipping_and_bf16(
    case, variant, one_thread
) -> None:
    settings = VARIANTS[variant]
    eager_model = build(case)
    recorded_model = copy.deepcopy(eager_model)
    assert_same(fit(eager_model, False, **settings), fit(recorded_model, True, **settings))
    assert_replayed(recorded_model, at_least=2)  # DAMC under accumulation cycles through four keys


@pytest.mark.parametrize("case", each_method(), ids=lambda case: case.name)
def test_a_resume_in_the_middle_of_recorded_iterations_ends_equal(case, one_thread, tmp_path: Path) -> None:
    """10 recorded iterations, a checkpoint, a new process's model resumed from it for 10 more
    (recorded again): the end equals 20 eager iterations never stopped."""
    eager_model = build(case)
    first = copy.deepcopy(eager_model)
    resumed = copy.deepcopy(eager_model)
    eager = fit(eager_model, False)
    saving = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    fit(first, True, max_epochs=1, callbacks=[saving], enable_checkpointing=True, default_root_dir=tmp_path)
    assert_replayed(first, at_least=2)
    after = fit(resumed, True, ckpt_path=str(tmp_path / "last.ckpt"), default_root_dir=tmp_path)
    for state in (
        eager,
        after,
    ):  # each fit here reseeds torch's global stream; the chains draw from the training stream
        del state["global stream"]
    assert_same(eager, after)
    assert_replayed(resumed, at_least=2)


def test_a_learning_rate_changed_between_iterations_is_read_by_the_replay(one_thread) -> None:
    """A rate changed by hand mid-run (not by a scheduler) reaches the next replay."""
    case = METHODS[0]
    eager_model = build(case)
    recorded_model = copy.deepcopy(eager_model)

    class HalveAtFive(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
            if trainer.global_step == 5:
                for optimizer in trainer.optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.1

    eager = fit(eager_model, False, max_epochs=1, callbacks=[HalveAtFive()])
    recorded = fit(recorded_model, True, max_epochs=1, callbacks=[HalveAtFive()])
    assert_same(eager, recorded)
    assert_replayed(recorded_model, at_least=4)


def test_the_switch_changes_nothing_on_a_cpu_without_the_emulator(one_thread) -> None:
    """On a CPU there is no recorder: the switch on trains eagerly, to the same numbers."""
    case = METHODS[0]
    eager_model = build(case)
    switched = copy.deepcopy(eager_model)
    torch.manual_seed(7)
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    with iteration_capture(True):
        trainer.fit(switched, toy_loader(n_batches=4))
    torch.manual_seed(7)
    other = quiet_trainer(max_epochs=1, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    other.fit(eager_model, toy_loader(n_batches=4))
    assert_same(state_of(eager_model, other), state_of(switched, trainer))
    assert switched.iteration_recorder.stats.as_dict() == {"recordings": 0, "replays": 0, "warmups": 0, "eager": 0}


class ClipLogger(L.Callback):
    """A user's callback with host work inside every update."""

    def on_before_optimizer_step(self, trainer: L.Trainer, module: Any, optimizer: Any) -> None:
        self.norm = float(sum(p.grad.norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None))


def test_an_update_with_host_work_runs_eagerly_and_says_why_once(one_thread) -> None:
    case = METHODS[0]
    eager_model = build(case)
    recorded_model = copy.deepcopy(eager_model)
    eager = fit(eager_model, False, max_epochs=1, callbacks=[ClipLogger()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorded = fit(recorded_model, True, max_epochs=1, callbacks=[ClipLogger()])
    assert_same(eager, recorded)
    lines = [str(w.message) for w in caught if "training iterations run eagerly" in str(w.message)]
    assert len(lines) == 1 and "ClipLogger runs on_before_optimizer_step" in lines[0], lines
    assert "\n" not in lines[0]
    stats = recorded_model.iteration_recorder.stats
    assert stats.recordings == 0 and stats.eager == BATCHES


def given_optimizers(model: Method, make: Any) -> None:
    """Give ``model`` the optimisers ``make()`` returns, through a subclass that opts in (a function
    held on the instance under a name the iteration calls is not vouched for)."""
    base = type(model).__mro__[1] if getattr(type(model), "given", False) else type(model)
    model.__class__ = audited(type(base.__name__, (base,), {"optimizers": lambda self: make(), "given": True}))


def test_what_cannot_be_recorded_is_named() -> None:
    model = build(METHODS[0])
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu")
    model.trainer = trainer
    given_optimizers(model, lambda: [torch.optim.SGD(model.parameters(), lr=0.1)])
    assert "SGD has no recorded step" in (why_iterations_eager(model) or "")
    given_optimizers(model, lambda: [torch.optim.Adam(model.parameters(), lr=0.1, amsgrad=True)])
    assert "amsgrad=True" in (why_iterations_eager(model) or "")
    given_optimizers(model, lambda: [torch.optim.Adam(model.parameters(), lr=0.1)])
    assert why_iterations_eager(model) is None
    with torch.autograd.set_detect_anomaly(True):
        assert "anomaly" in (why_iterations_eager(model) or "")


class ZeroGradWatcher(L.Callback):
    def on_before_zero_grad(self, trainer: L.Trainer, module: Any, optimizer: Any) -> None:
        pass


def test_host_work_inside_the_update_is_named_not_recorded() -> None:
    """CPU. An optimiser step post-hook, a callback's ``on_before_zero_grad`` and ``16-mixed``
    (its gradient scaler checks overflow on the host) each keep iterations eager, named."""
    model = build(METHODS[0])
    model.trainer = quiet_trainer(max_epochs=1, accelerator="cpu")
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    given_optimizers(model, lambda: [adam])
    assert why_iterations_eager(model) is None
    handle = adam.register_step_post_hook(lambda optimizer, args, kwargs: None)
    assert "Adam has step hooks" in (why_iterations_eager(model) or "")
    handle.remove()
    model.trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=[ZeroGradWatcher()])
    assert "ZeroGradWatcher runs on_before_zero_grad" in (why_iterations_eager(model) or "")
    model.trainer = quiet_trainer(max_epochs=1, accelerator="cpu")
    model.trainer.strategy.precision_plugin.precision = "16-mixed"  # what a GPU run's Trainer holds
    assert "16-mixed" in (why_iterations_eager(model) or "")


class PoisonAt(L.Callback):
    """Sets every decoder weight to NaN in place before iteration ``step``: the replay reads it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in module.decoder.parameters():
                    parameter.fill_(float("nan"))


def test_a_divergence_in_a_recorded_iteration_stops_within_the_guards_delay_before_any_checkpoint(
    one_thread, tmp_path: Path
) -> None:
    model = build(METHODS[0])
    poisoned = WARMUP_ITERATIONS + 4  # a replayed iteration
    saving = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    with pytest.raises(TrainingDiverged, match="recorded iterations") as stopped:
        fit(
            model,
            True,
            max_epochs=3,
            callbacks=[PoisonAt(poisoned), saving],
            enable_checkpointing=True,
            default_root_dir=tmp_path,
        )
    steps = sorted(int(path.stem.split("=")[1]) for path in tmp_path.glob("step=*.ckpt"))
    assert steps and max(steps) <= poisoned  # no checkpoint holds the poisoned weights' updates
    assert f"the last checkpoint, {tmp_path / f'step={max(steps)}.ckpt'}, holds the last good one" in str(stopped.value)
    for path in tmp_path.glob("step=*.ckpt"):
        weights = torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
        assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point()), path
    # without checkpoints in between, the flag is read within GUARD_READ_EVERY replays
    model = build(METHODS[0])
    with pytest.raises(TrainingDiverged) as stopped:
        fit(model, True, max_epochs=3, callbacks=[PoisonAt(poisoned)])
    assert model.trainer.global_step <= poisoned + GUARD_READ_EVERY


def reading_a_sum(self: Any, batch: Any, batch_idx: int) -> None:
    """A training iteration that reads a batch sum on the host, then runs LatentEBM's."""
    float(batch[0].sum())
    type(self).__mro__[1].training_iteration(self, batch, batch_idx)


def test_an_iteration_that_reads_the_host_runs_eagerly_from_its_recording_on(one_thread) -> None:
    """A host read inside the iteration (here ``float`` of a batch sum) fails its recording: that
    iteration and every later one run eagerly, with one line naming the operation, and training ends
    where the eager path ends."""
    runs = []
    for recorded in (False, True):
        model = build(METHODS[0])
        model.__class__ = audited(type("ReadsASum", (type(model),), {"training_iteration": reading_a_sum}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append(fit(model, recorded, max_epochs=1))
    assert_same(*runs)
    lines = [str(w.message) for w in caught if "training iterations run eagerly" in str(w.message)]
    assert len(lines) == 1 and "could not be recorded" in lines[0] and "_local_scalar_dense" in lines[0], lines
    stats = model.iteration_recorder.stats
    assert stats.recordings == 0 and stats.warmups == WARMUP_ITERATIONS + 1 and stats.eager == BATCHES - stats.warmups


def test_a_chain_setting_changed_between_iterations_is_seen_by_the_key(one_thread) -> None:
    """A callback that lowers the posterior chain's step size mid-run (an annealing schedule): the
    key sees the sampler the method holds, so the next iteration is recorded anew, not replayed stale."""

    class Anneal(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
            if trainer.global_step == 6:
                module.posterior_sampler.step_size *= 0.5

    runs = []
    for recorded in (False, True):
        model = build(METHODS[0])
        runs.append(fit(model, recorded, max_epochs=2, callbacks=[Anneal()]))
    assert_same(*runs)
    assert_replayed(model, at_least=8)


class EmulateOnEveryRank(L.Callback):
    """The strict emulator in every process of a run (``lebm_ddp_spawn`` starts new ones), and each
    rank's final weights, training stream and recorder counts written to ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self.previous = set_cpu_store(EmulatedStore())

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        set_cpu_store(self.previous)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        state = {
            "weights": {k: v.clone() for k, v in pl_module.state_dict().items()},
            "stream": pl_module.random_streams.train.get_state(),
            "stats": pl_module.iteration_recorder.stats.as_dict(),
        }
        torch.save(state, self.folder / f"rank{trainer.global_rank}.pt")


def ranks_of_two_ddp_runs(
    tmp_path: Path, kind: type | None = None, callbacks: Callable[[], list[L.Callback]] = list
) -> dict[bool, list[dict[str, Any]]]:
    """The same LatentEBM (of class ``kind`` if given) fitted eagerly and recorded by two
    ``lebm_ddp_spawn`` processes under the emulator: ``{recorded: [rank 0's end, rank 1's end]}``."""
    ranks = {}
    for recorded in (False, True):
        folder = tmp_path / ("recorded" if recorded else "eager")
        folder.mkdir()
        torch.manual_seed(0)
        model = without_recording(METHODS[0].build())
        if kind is not None:
            model.__class__ = kind
        trainer = quiet_trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=2,
            strategy="lebm_ddp_spawn",
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[EmulateOnEveryRank(folder), RecordedIterations(recorded), *callbacks()],
        )
        trainer.fit(model, toy_loader(n_batches=2 * BATCHES))
        ranks[recorded] = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return ranks


@pytest.mark.slow
def test_under_ddp_each_ranks_recorded_iterations_all_reduce_between_graphs_and_equal_the_eager_path(
    tmp_path: Path,
) -> None:
    """Two ``lebm_ddp_spawn`` processes, gradients all-reduced between two recorded graphs: every
    rank ends with the eager run's weights (ranks agree), from its own training stream (ranks differ)."""
    ranks = ranks_of_two_ddp_runs(tmp_path)
    for eager, recorded in zip(ranks[False], ranks[True], strict=True):
        assert_same(eager["weights"], recorded["weights"])
        assert torch.equal(eager["stream"], recorded["stream"])
        assert recorded["stats"]["replays"] >= 4 and recorded["stats"]["eager"] == 0, recorded["stats"]
    first, second = ranks[True]
    assert_same(first["weights"], second["weights"])
    assert not torch.equal(first["stream"], second["stream"])


def test_after_a_trip_no_checkpoint_on_the_exception_holds_diverged_weights_and_a_new_fit_trains(
    one_thread, tmp_path: Path
) -> None:
    model = build(METHODS[0])
    on_exception = OnExceptionCheckpoint(dirpath=tmp_path)
    with pytest.raises(TrainingDiverged):
        fit(
            model,
            True,
            max_epochs=3,
            callbacks=[PoisonAt(WARMUP_ITERATIONS + 4), on_exception],
            enable_checkpointing=True,
            default_root_dir=tmp_path,
        )
    for path in tmp_path.glob("*.ckpt"):
        weights = torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
        assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point()), path
    good = build(METHODS[0])
    model.load_state_dict(good.state_dict())
    fit(model, True, max_epochs=1)  # the last fit's verdict and recordings are forgotten
    assert_replayed(model, at_least=4)


def test_a_setting_that_changes_at_every_iteration_stops_the_recording_in_one_line(one_thread, monkeypatch) -> None:
    """A callback that changes the posterior chain's step size before every batch: no key repeats,
    so after a bounded run of warm-ups the iterations run eagerly, said once, to the eager numbers.
    The bound made 12 (the library's :data:`CHURN_LIMIT` is larger) keeps the run to two epochs."""
    from lebm.recording import recorded_iteration

    churn_limit = 12
    assert churn_limit < CHURN_LIMIT < 4 * BATCHES
    monkeypatch.setattr(recorded_iteration, "CHURN_LIMIT", churn_limit)

    class EveryStep(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
            module.posterior_sampler.step_size *= 0.99

    runs = []
    for recorded in (False, True):
        model = build(METHODS[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append(fit(model, recorded, max_epochs=2, callbacks=[EveryStep()]))
    assert_same(*runs)
    lines = [str(w.message) for w in caught if "training iterations run eagerly" in str(w.message)]
    assert len(lines) == 1 and f"{churn_limit} iterations in a row" in lines[0], lines
    assert "changes at every iteration" in lines[0], lines
    assert "attribute posterior_sampler.step_size changed between the last two" in lines[0], lines
    stats = model.iteration_recorder.stats
    assert stats.recordings == 0 and stats.warmups == churn_limit and stats.eager == 2 * BATCHES - churn_limit
