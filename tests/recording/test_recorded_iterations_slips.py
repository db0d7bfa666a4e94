"""Tests that catch slips the default tier let through (issue 96, item 6): each fails when its
slip is applied alone (device: CPU)."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import pytest
import torch
from test_recorded_iterations import (
    BATCHES,
    METHODS,
    assert_replayed,
    assert_same,
    build,
    fit,
    given_optimizers,
    state_of,
)
from test_recorded_iterations_safety import AtStep, assert_eager_once, both_ways, latent_ebm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.models import LatentEBM, Method
from lebm.recording import iteration_capture
from lebm.recording.host_reads import WatchedIndex
from lebm.recording.recorded_iteration import GUARD_READ_EVERY, IterationRecorder, why_iterations_eager
from lebm.testing.capture import emulate_on_cpu
from lebm.training.stepping import StepSettings
from tests.helpers.audited import audited
from tests.helpers.trainers import quiet_trainer


def test_a_truth_test_of_the_batch_index_is_a_read() -> None:
    """``if batch_idx:`` reads the index (``bool`` among the watched unary reads)."""
    reads: set[str] = set()
    assert WatchedIndex(3, reads)
    assert reads == {"batch_idx"}
    assert not WatchedIndex(0, set())


def test_the_guard_is_read_at_exactly_its_cadence() -> None:
    """The flag is read once GUARD_READ_EVERY iterations are unread, not one later."""
    recorder = IterationRecorder()
    recorder.flag = torch.ones((), dtype=torch.bool)
    recorder.unread = GUARD_READ_EVERY - 1
    assert not recorder.read_guard()
    recorder.unread = GUARD_READ_EVERY
    assert recorder.read_guard()


# --------------------------------------------------------------------------- the key's parts
def fit_on(model: Method, recorded: bool, loader: DataLoader, **settings: Any) -> dict[str, Any]:
    """:func:`test_recorded_iterations.fit` on ``loader`` (one epoch, no validation)."""
    torch.manual_seed(7)
    options: dict[str, Any] = dict(max_epochs=1, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    trainer = quiet_trainer(**{**options, **settings})
    with emulate_on_cpu(), iteration_capture(recorded):
        trainer.fit(model, loader)
    return state_of(model, trainer)


def windows_of_two_kinds(windows: int) -> DataLoader:
    """Accumulation windows of two batches, ``8 + 10`` and ``9 + 10`` rows in turn: the window's
    first batch says (by its shape) which kind the window is; its last batch is the same in both."""
    sizes = [8, 10, 9, 10] * (windows // 2)
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(sum(sizes), 2, generator=generator)
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return DataLoader(
        TensorDataset(data), batch_sampler=[list(range(s, s + n)) for s, n in zip(starts, sizes, strict=True)]
    )


@audited
class ReachesByTheData(LatentEBM):
    """A window's first batch of 8 rows adds ``decoder.extra_a``'s square to the decoder's loss, one
    of 9 rows ``decoder.extra_b``'s: the branch is chosen by the data, so two windows reach different
    parameters before their (identical) last batch."""

    REACHES = {8: "extra_a", 9: "extra_b"}

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        self._reach = self.REACHES.get(batch[0].shape[0])  # gone again when the iteration ends
        try:
            super().training_iteration(batch, batch_idx)
        finally:
            del self._reach

    def step_optimizers(self, optimizers: Any, loss: torch.Tensor, clip: float | None = None) -> None:
        if optimizers is self.optimizer_list()[0] and self._reach is not None:
            loss = loss + (getattr(self.decoder, self._reach) ** 2).sum()
        super().step_optimizers(optimizers, loss, clip)


def test_a_window_whose_earlier_batch_reached_other_parameters_is_not_replayed_from_the_others(one_thread) -> None:
    """The key holds which parameters the window's earlier batches reached: the last batch of an
    ``extra_b`` window must not replay the recording made in an ``extra_a`` window (which steps
    ``extra_a`` and skips ``extra_b``)."""

    def reaching() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = ReachesByTheData
        model.decoder.extra_a = nn.Parameter(torch.ones(2))
        model.decoder.extra_b = nn.Parameter(torch.ones(2))
        return model

    eager_model = reaching()
    recorded_model = copy.deepcopy(eager_model)
    eager = fit_on(eager_model, False, windows_of_two_kinds(12), accumulate_grad_batches=2)
    recorded = fit_on(recorded_model, True, windows_of_two_kinds(12), accumulate_grad_batches=2)
    assert_same(eager, recorded)
    assert_replayed(recorded_model, at_least=4)
    for name in ("extra_a", "extra_b"):  # both stepped, each in its own windows
        assert not torch.equal(getattr(recorded_model.decoder, name).detach(), torch.ones(2)), name


def set_weight_decay(trainer: L.Trainer, module: Any) -> None:
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["weight_decay"] = 0.5


def test_a_weight_decay_changed_mid_run_is_seen_by_the_key(one_thread) -> None:
    """Device Adam bakes ``weight_decay`` in as a Python number: a decay a callback sets at step 5
    must record anew, not replay the recording made without it."""
    eager, recorded, model, lines = both_ways(latent_ebm, lambda: [AtStep(5, set_weight_decay)], max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=4)
    undecayed, _, _, _ = both_ways(latent_ebm)  # the decay changes the run
    assert not torch.equal(undecayed["model.decoder.net.net.0.weight"], eager["model.decoder.net.net.0.weight"])


def set_gradients_to_none(trainer: L.Trainer, module: Any) -> None:
    for optimizer in trainer.optimizers:
        optimizer.zero_grad(set_to_none=True)


class GradientsAfterEachBatch(L.Callback):
    """Keeps every parameter's gradient (None where it has none) after each training batch."""

    def __init__(self) -> None:
        self.kept: list[dict[str, torch.Tensor | None]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, index: int) -> None:
        self.kept.append({name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()})


def test_gradients_set_to_none_between_iterations_are_seen_by_the_key(one_thread) -> None:
    """A callback's ``zero_grad(set_to_none=True)`` at step 5 drops the gradients a recording writes
    to: the key holds each gradient's address, so the next iterations record anew, and after every
    batch the parameters hold the eager path's gradients (not None, a replay writing the old ones)."""
    ends, kept = [], []
    for recorded in (False, True):
        model = latent_ebm()
        seen = GradientsAfterEachBatch()
        ends.append(fit(model, recorded, max_epochs=2, callbacks=[AtStep(5, set_gradients_to_none), seen]))
        kept.append(seen.kept)
    assert_same(*ends)
    assert_replayed(model, at_least=4)
    eager, replayed = kept
    assert len(eager) == len(replayed) == 2 * BATCHES
    assert all(grad is not None for grads in eager for grad in grads.values())
    different = [
        (batch, name)
        for batch, (grads, others) in enumerate(zip(eager, replayed, strict=True))
        for name, grad in grads.items()
        if others[name] is None or not torch.equal(grad, others[name])
    ]
    assert not different, different[:8]


# ---------------------------------------------------------------------------- the undo
@audited
class MarksItselfAndReadsTheStep(LatentEBM):
    """Adds an attribute, ``_mark``, in its iteration (``after_iteration`` removes it) and doubles
    its batch when the mark is already there; reads ``self.global_step`` undeclared, so its recording
    is refused (after running the body, which added the mark)."""

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        scale = 2.0 if "_mark" in vars(self) else 1.0
        self._mark = True
        _ = self.global_step  # undeclared: the recording is refused
        super().training_iteration([batch[0] * scale], batch_idx)

    def after_iteration(self) -> None:
        super().after_iteration()
        vars(self).pop("_mark", None)


def test_an_attribute_a_refused_recording_added_is_gone_in_the_eager_rerun(one_thread) -> None:
    """The undo of a refused recording puts the method's ``__dict__`` back as it was, removing what
    the recording added: the eager re-run of that iteration does not find the mark (and double its
    batch)."""

    def marking() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = MarksItselfAndReadsTheStep
        return model

    eager, recorded, model, lines = both_ways(marking)
    assert_same(eager, recorded)
    assert_eager_once(model, lines, "self.global_step without declaring it")
    assert "_mark" not in vars(model)


# -------------------------------------------------------------------- declared host reads
@audited
class DeclaresOneReadsTheOther(LatentEBM):
    """Declares ``global_step >= 8`` in ``iteration_key()`` through ``declares`` (the method's
    ``self.global_step`` or ``self.trainer.global_step``) and scales its batch by 2 from step 8 on,
    reading the step through ``reads``."""

    declares = "global_step"
    reads = "trainer.global_step"

    def step_through(self, name: str) -> int:
        return self.trainer.global_step if name == "trainer.global_step" else self.global_step

    def iteration_key(self) -> tuple[bool]:
        return (self.step_through(self.declares) >= 8,)

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        scale = 2.0 if self.step_through(self.reads) >= 8 else 1.0
        super().training_iteration([batch[0] * scale], batch_idx)


@pytest.mark.parametrize(
    ("declares", "reads"), [("global_step", "trainer.global_step"), ("trainer.global_step", "global_step")]
)
def test_the_step_declared_through_the_method_or_the_trainer_declares_both(declares, reads, one_thread) -> None:
    """docs/performance.md: a read of ``self.global_step`` or ``self.trainer.global_step`` in
    ``iteration_key()`` declares the step, whichever the iteration reads. The recording's check
    (``check_the_recording``) must compare the names without their ``trainer.`` prefix: the
    iteration is recorded and replayed, with no line, not refused and run eagerly (which would still
    end equal: hence the checks on the line and the replays). Both ways round: today a read of
    ``self.global_step`` notes ``trainer.global_step`` too (Lightning's property reads the Trainer's
    through the watched class's ``__getattribute__``, a lebm frame), so declaring through the
    method passes a whole-name comparison; declaring through the Trainer and reading through the
    method does not."""

    def declaring() -> LatentEBM:
        model = latent_ebm()
        model.__class__ = audited(
            type("DeclaresOneReadsTheOther", (DeclaresOneReadsTheOther,), {"declares": declares, "reads": reads})
        )
        return model

    eager, recorded, model, lines = both_ways(declaring, max_epochs=2)
    assert_same(eager, recorded)
    assert not lines
    assert_replayed(model, at_least=8)


# ------------------------------------------------------------------- process-wide hooks
def test_a_process_wide_backward_module_hook_keeps_iterations_eager() -> None:
    """``register_module_full_backward_hook`` and ``register_module_full_backward_pre_hook`` run
    inside every module's backward pass, unseen by the key: each keeps the iterations eager, named."""
    model = build(METHODS[0])
    model.trainer = quiet_trainer(max_epochs=1, accelerator="cpu")
    given_optimizers(model, lambda: [torch.optim.Adam(model.parameters(), lr=0.1)])
    assert why_iterations_eager(model) is None
    for register in (
        nn.modules.module.register_module_full_backward_hook,
        nn.modules.module.register_module_full_backward_pre_hook,
    ):
        handle = register(lambda *args: None)
        try:
            assert "process-wide module hook" in (why_iterations_eager(model) or ""), register.__name__
        finally:
            handle.remove()
    assert why_iterations_eager(model) is None


# ------------------------------------------------------------------------------ clipping
def test_a_clip_algorithm_set_alone_mid_run_keeps_the_clip_value() -> None:
    """A callback that sets only ``trainer.gradient_clip_algorithm`` mid-run changes how the value
    in force clips; it does not turn clipping off."""
    model = build(METHODS[0])
    model.trainer = quiet_trainer(max_epochs=1, accelerator="cpu")
    model._step_settings = StepSettings(1, 0.05, "norm")  # what a fit with gradient_clip_val=0.05 took over
    model.trainer.gradient_clip_algorithm = "value"
    assert model.step_settings == StepSettings(1, 0.05, "value")
    assert (model.trainer.gradient_clip_val, model.trainer.gradient_clip_algorithm) == (None, None)
