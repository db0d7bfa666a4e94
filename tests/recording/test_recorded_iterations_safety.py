"""Recorded iterations replay only what their key vouches for (device: CPU, the strict replay emulator).

Each test is something a researcher does mid-run that a recording could bake in: freezing or
unfreezing a net, a private setting, reading the step, a tensor hook, a global optimiser hook, a
parameter reached by one micro-batch of an accumulation window, a sampler that did not opt in to
capture, ``self.log`` or a Python number in the step's logs, Python's or NumPy's random stream, a
parameter group added, a clipping value changed by a callback, state the iteration itself changes.
Each run is compared with the eager path, bit for bit: the recorded run either replays and matches,
or runs eagerly and says why in one line that names the cause. The strict emulator replays the
recorded aten operations with every Python number baked in, as a CUDA graph does, so a stale
replay shows as a different end.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from test_recorded_iterations import BATCHES, METHODS, assert_replayed, assert_same, build, fit
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import LatentEBM
from lebm.recording.recorded_iteration import CACHE_SIZE
from lebm.samplers import ChainTarget, Langevin, Sampler
from tests.helpers.audited import audited
from tests.models.cases import toy_loader

EAGER_LINE = "training iterations run eagerly"


def both_ways(
    make: Callable[[], Any], callbacks: Callable[[], list[L.Callback]] = list, **settings: Any
) -> tuple[dict[str, Any], dict[str, Any], Any, list[str]]:
    """The same model trained eagerly and recorded (one epoch of :data:`BATCHES` batches unless
    ``settings`` say otherwise): ``(eager end, recorded end, the recorded model, its eager lines)``."""
    settings = {"max_epochs": 1, **settings}
    eager_model = make()
    recorded_model = copy.deepcopy(eager_model)
    random.seed(0)
    np.random.seed(0)
    eager = fit(eager_model, False, callbacks=callbacks(), **settings)
    random.seed(0)
    np.random.seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorded = fit(recorded_model, True, callbacks=callbacks(), **settings)
    lines = [str(w.message) for w in caught if EAGER_LINE in str(w.message)]
    return eager, recorded, recorded_model, lines


def latent_ebm() -> LatentEBM:
    return build(METHODS[0])


def assert_eager_once(model: Any, lines: list[str], *names: str) -> None:
    """One line, naming each of ``names``, and no iteration replayed."""
    assert len(lines) == 1 and all(name in lines[0] for name in names), lines
    assert "\n" not in lines[0]
    assert model.iteration_recorder.stats.replays == 0, model.iteration_recorder.stats


class AtStep(L.Callback):
    """Calls ``change(trainer, module)`` before the batch of global step ``step``."""

    def __init__(self, step: int, change: Callable[[L.Trainer, Any], None]) -> None:
        self.step = step
        self.change = change

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if trainer.global_step == self.step:
            self.change(trainer, module)


def first_decoder_weight(module: Any) -> nn.Parameter:
    return next(module.decoder.parameters())


# ------------------------------------------------------------------------------------ freezing
def test_a_weight_frozen_mid_run_stays_frozen_under_replay(one_thread) -> None:
    """``requires_grad_(False)`` at step 5: the key holds every stepped parameter's flag, so the
    next iteration records anew; the frozen weight and its Adam step count stop, as eagerly."""
    freeze = lambda: [AtStep(5, lambda t, m: first_decoder_weight(m).requires_grad_(False))]  # noqa: E731
    eager, recorded, model, _ = both_ways(latent_ebm, freeze, max_epochs=2)
    assert_same(eager, recorded)
    assert_replayed(model, at_least=4)


def test_a_weight_unfrozen_mid_run_trains_under_replay(one_thread) -> None:
    def frozen() -> LatentEBM:
        model = latent_ebm()
        first_decoder_weight(model).requires_grad_(False)
        return model

    unfreeze = lambda: [AtStep(5, lambda t, m: first_decoder_weight(m).requires_grad_(True))]  # noqa: E731
    eager, recorded, model, _ = both_ways(frozen, unfreeze, max_epochs=2)
    assert_same(eager, recorded)
    assert_replayed(model, at_least=4)
    assert not torch.equal(
        frozen().decoder.state_dict()["net.net.0.weight"], model.decoder.state_dict()["net.net.0.weight"]
    )


def test_a_whole_net_frozen_mid_run_fails_as_the_eager_path_does(one_thread) -> None:
    """Freezing the prior's energy leaves its loss nothing to differentiate: the eager path raises,
    and so does the recorded one (its first iteration after the change is a warm-up, run eagerly)."""
    freeze = lambda: [AtStep(6, lambda t, m: m.prior.requires_grad_(False))]  # noqa: E731
    errors = []
    for recorded in (False, True):
        with pytest.raises(RuntimeError, match="does not require grad") as raised:
            fit(latent_ebm(), recorded, max_epochs=1, callbacks=freeze())
        errors.append(str(raised.value))
    assert errors[0] == errors[1]


# ------------------------------------------------------------------------ what the key must see
@audited
class Scaled(LatentEBM):
    """Scales every batch by a private setting, ``self._noise_scale``."""

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration([batch[0] * self._noise_scale], batch_idx)


def test_a_private_setting_changed_mid_run_is_seen_by_the_key(one_thread) -> None:
    def scaled() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = Scaled
        model._noise_scale = 1.0
        return model

    double = lambda: [AtStep(5, lambda t, m: setattr(m, "_noise_scale", 2.0))]  # noqa: E731
    eager, recorded, model, lines = both_ways(scaled, double)
    assert_same(eager, recorded)
    assert_replayed(model, at_least=2)


@audited
class ReadsTheHost(LatentEBM):
    """Scales every batch by ``1 + 0.01 * <what it reads>``: the step, the epoch or the batch index."""

    reads = "global_step"

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        if self.reads == "batch_idx":
            value = batch_idx
        else:
            owner, _, name = self.reads.rpartition(".")
            value = getattr(self.trainer if owner == "trainer" else self, name)
        super().training_iteration([batch[0] * (1 + 0.01 * value)], batch_idx)


@pytest.mark.parametrize(
    "read",
    [  # one read of each kind in the default tier: the method's attribute, the argument, the Trainer's
        "global_step",
        pytest.param("current_epoch", marks=pytest.mark.slow),
        "batch_idx",
        pytest.param("trainer.global_step", marks=pytest.mark.slow),
        "trainer.current_epoch",
    ],
)
def test_a_step_epoch_or_batch_index_read_undeclared_runs_eagerly_with_one_line(read, one_thread) -> None:
    def reading() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = audited(type(f"Reads_{read.replace('.', '_')}", (ReadsTheHost,), {"reads": read}))
        return model

    eager, recorded, model, lines = both_ways(reading, max_epochs=2)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, read.rpartition(".")[2], "without declaring it")
    assert type(model.trainer) is L.Trainer  # the Trainer's class is put back after watching it


@audited
class DeclaresItsSwitch(LatentEBM):
    """Scales the batch by 2 from step 8 on, and declares the switch in ``iteration_key()``."""

    def iteration_key(self) -> tuple[bool]:
        return (self.global_step >= 8,)

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        scale = 2.0 if self.global_step >= 8 else 1.0
        super().training_iteration([batch[0] * scale], batch_idx)


def test_a_step_read_that_iteration_key_declares_is_replayed(one_thread) -> None:
    def declaring() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = DeclaresItsSwitch
        return model

    eager, recorded, model, lines = both_ways(declaring, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=8)


# ------------------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("kind", ["register_hook", "register_post_accumulate_grad_hook"])
def test_a_tensor_hook_on_a_parameter_runs_eagerly_with_one_line(kind, one_thread) -> None:
    scale = [1.0]

    def hooked() -> LatentEBM:
        model = latent_ebm()
        weight = first_decoder_weight(model)
        if kind == "register_hook":
            weight.register_hook(lambda grad: grad * scale[0])
        else:

            def scale_after(parameter: torch.Tensor) -> None:
                parameter.grad.mul_(scale[0])

            weight.register_post_accumulate_grad_hook(scale_after)
        return model

    def change(trainer: L.Trainer, module: Any) -> None:
        scale[0] = 3.0

    runs = []
    for recorded in (False, True):
        scale[0] = 1.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append(fit(hooked(), recorded, max_epochs=1, callbacks=[AtStep(5, change)]))
    assert_same(*runs)
    lines = [str(w.message) for w in caught if EAGER_LINE in str(w.message)]
    assert len(lines) == 1 and "net.net.0.weight has a tensor hook" in lines[0], lines


@pytest.mark.parametrize("where", ["optimizer step", "module forward"])
def test_a_process_wide_hook_runs_eagerly_with_one_line(where, one_thread) -> None:
    calls = []
    if where == "optimizer step":
        handle = register_optimizer_step_post_hook(lambda *args: calls.append(1))
    else:
        handle = nn.modules.module.register_module_forward_hook(lambda *args: calls.append(1))
    try:
        eager, recorded, model, lines = both_ways(latent_ebm)
    finally:
        handle.remove()
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "process-wide")
    assert calls


# ------------------------------------------------------------------------------ accumulation
@audited
class ReachesExtraFirst(LatentEBM):
    """Adds ``decoder.extra``'s square to the decoder's loss on the first batch of every
    accumulation window of 2 only (declared in ``iteration_key()``): the window's last batch does
    not reach it, and its update must step it all the same."""

    def iteration_key(self) -> tuple[bool]:
        return (self.opens_window(),)

    def opens_window(self) -> bool:
        return self._training_position()[1] % 2 == 0

    def step_optimizers(self, optimizers: Any, loss: torch.Tensor, clip: float | None = None) -> None:
        if optimizers is self.optimizer_list()[0] and self.opens_window():
            loss = loss + (self.decoder.extra**2).sum()
        super().step_optimizers(optimizers, loss, clip)


def test_a_parameter_reached_by_an_earlier_micro_batch_of_the_window_is_stepped(one_thread) -> None:
    def extra() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = ReachesExtraFirst
        model.decoder.extra = nn.Parameter(torch.ones(2))
        return model

    eager, recorded, model, lines = both_ways(extra, accumulate_grad_batches=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=2)
    assert not torch.equal(model.decoder.extra.detach(), torch.ones(2))  # stepped


# ---------------------------------------------------------------------------------- samplers
class RandomLength(Sampler):
    """A user's sampler, not opted in to capture: 1 to 3 runs of a Langevin chain, by Python's ``random``."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def run(self, target: ChainTarget, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(random.randint(1, 3)):
            z = self.inner.run(target, z, generator=generator)
        return z


@pytest.mark.parametrize("sampler", ["RandomLength", "Langevin"])
def test_a_sampler_that_did_not_opt_in_keeps_iterations_eager(sampler, one_thread) -> None:
    def holding() -> LatentEBM:
        model = latent_ebm()
        if sampler == "RandomLength":
            model.posterior_sampler = RandomLength(Langevin(5, 0.1))
        else:
            model.posterior_sampler = Langevin(5, 0.1, cuda_graph=False)
        return model

    eager, recorded, model, lines = both_ways(holding)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, f"{sampler} did not opt in to capture")


# ---------------------------------------------------------------------------------- logging
@audited
class LogsItself(LatentEBM):
    """Logs the batch's sum with ``self.log`` inside its iteration."""

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        super().training_iteration(batch, batch_idx)
        self.log("train/batch_sum", batch[0].sum())


@audited
class LogsAFloat(LatentEBM):
    """Puts a Python float into its step's logs."""

    def finish_training_step(self, logs: Any, watch: Any = None, batch_idx: int = 0) -> None:
        super().finish_training_step({**logs, "train/constant": 1.5}, watch, batch_idx)


@pytest.mark.parametrize(
    ("kind", "named"),
    [(LogsItself, "self.log('train/batch_sum'"), (LogsAFloat, "'train/constant' as a float")],
)
def test_logging_outside_the_step_tensors_runs_eagerly_with_one_line(kind, named, one_thread) -> None:
    def logging() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = kind
        return model

    eager, recorded, model, lines = both_ways(logging)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named)
    if kind is LogsItself:  # what a checkpoint or early stopping watching it reads: the last batch's sum
        last = next(iter(toy_loader(n_batches=BATCHES)))  # every batch differs; the eager run logged the last
        assert model.trainer.callback_metrics["train/batch_sum"].item() != pytest.approx(last[0].sum().item())


@audited
class DrawsOnTheHost(LatentEBM):
    """Scales its batch by a draw from Python's or NumPy's global random stream."""

    stream = "python"

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        draw = random.random() if self.stream == "python" else float(np.random.rand())
        super().training_iteration([batch[0] * (1 + 0.01 * draw)], batch_idx)


@pytest.mark.parametrize(("stream", "named"), [("python", "Python's random"), ("numpy", "NumPy's random")])
def test_a_draw_from_a_host_random_stream_runs_eagerly_with_one_line(stream, named, one_thread) -> None:
    def drawing() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = audited(type(f"Draws_{stream}", (DrawsOnTheHost,), {"stream": stream}))
        return model

    eager, recorded, model, lines = both_ways(drawing)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named)


@audited
class Alternates(LatentEBM):
    """Flips a flag at every iteration and scales its batch by it: state the iteration itself changes,
    a public attribute (``flip``) or the element of a list it holds (``mode[0]``)."""

    flip = False
    in_a_list = False

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        if self.in_a_list:
            self.mode[0] = not self.mode[0]
            flipped = self.mode[0]
        else:
            self.flip = flipped = not self.flip
        super().training_iteration([batch[0] * (2.0 if flipped else 1.0)], batch_idx)


@pytest.mark.parametrize(("in_a_list", "named"), [(False, "changes attribute flip"), (True, "changes attribute mode")])
def test_python_state_the_iteration_changes_runs_eagerly_with_one_line(in_a_list, named, one_thread) -> None:
    """Its two values make two keys that would each replay without flipping: refused, naming the
    flag, and undone (the list's element too), so the eager iterations after it flip as eagerly."""

    def alternating() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = audited(type("Alternates", (Alternates,), {"in_a_list": in_a_list}))
        model.mode = [False]
        return model

    eager, recorded, model, lines = both_ways(alternating)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, named)


# ------------------------------------------------------------------- optimisers and the Trainer
def test_a_param_group_added_and_removed_mid_run_records_again(one_thread) -> None:
    extra = nn.Parameter(torch.ones(3))

    def add(trainer: L.Trainer, module: Any) -> None:
        trainer.optimizers[0].add_param_group({"params": [extra], "lr": 1e-3})

    def remove(trainer: L.Trainer, module: Any) -> None:
        trainer.optimizers[0].param_groups.pop()

    changes = lambda: [AtStep(5, add), AtStep(12, remove)]  # noqa: E731
    eager, recorded, model, lines = both_ways(latent_ebm, changes, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)


def test_a_gradient_clip_value_set_by_a_callback_mid_run_acts_in_both_paths(one_thread) -> None:
    """A callback sets ``trainer.gradient_clip_val`` at step 5: both paths clip from then on (the
    run ends elsewhere than without it), and the Trainer keeps the value after the run."""
    clip = lambda: [AtStep(5, lambda t, m: setattr(t, "gradient_clip_val", 0.01))]  # noqa: E731
    eager, recorded, model, lines = both_ways(latent_ebm, clip)
    assert_same(eager, recorded)
    assert_replayed(model, at_least=2)
    assert model.trainer.gradient_clip_val == 0.01
    unclipped, _, _, _ = both_ways(latent_ebm)
    assert not torch.equal(unclipped["model.decoder.net.net.0.weight"], eager["model.decoder.net.net.0.weight"])


# --------------------------------------------------------------------------- the fallback line
def shapes_in_turn(n_shapes: int, rounds: int) -> DataLoader:
    """Batches of ``n_shapes`` different sizes (8, 9, ...) in turn, ``rounds`` times."""
    sizes = [8 + k for k in range(n_shapes)] * rounds
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(sum(sizes), 2, generator=generator)
    batches, start = [], 0
    for size in sizes:
        batches.append(list(range(start, start + size)))
        start += size
    return DataLoader(TensorDataset(data), batch_sampler=batches)


def test_more_batch_shapes_than_the_cache_holds_are_named_in_the_line(one_thread, monkeypatch) -> None:
    """Three shapes in turn through a cache of two recordings (the recorder's limits made small, so
    that the run is short; the library's are :data:`CACHE_SIZE` and ``CHURN_LIMIT``): warm-ups,
    three recordings (the third evicts the first), then a shape recorded again before it comes
    back, until the churn limit stops recording with one line that names the shapes."""
    from lebm.recording import iteration_capture, recorded_iteration
    from lebm.testing.capture import emulate_on_cpu
    from tests.helpers.trainers import quiet_trainer

    cache_size, churn_limit = 2, 11  # the 12th miss in a row (the fourth round's third shape) stops it
    assert (cache_size, churn_limit) < (CACHE_SIZE, recorded_iteration.CHURN_LIMIT)
    monkeypatch.setattr(recorded_iteration, "CACHE_SIZE", cache_size)
    monkeypatch.setattr(recorded_iteration, "CHURN_LIMIT", churn_limit)
    model = latent_ebm()
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    with emulate_on_cpu(), iteration_capture(True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, shapes_in_turn(cache_size + 1, rounds=5))
    lines = [str(w.message) for w in caught if EAGER_LINE in str(w.message)]
    assert len(lines) == 1, lines
    assert f"{cache_size + 1} different iterations come in turn ({cache_size + 1} batch shapes: " in lines[0]
    assert "10x2" in lines[0]  # shapes named as sizes
    assert f"more than the {cache_size} recordings a model keeps" in lines[0]
    assert "changes at every iteration" not in lines[0]
    assert model.iteration_recorder.stats.recordings > cache_size + 1  # a shape evicted was recorded again
