"""Recorded iterations replay lebm's own audited iterations, and nothing else (device: CPU, the
strict replay emulator; recorded iterations switched on in every test).

Each route by which a held-out review got a user's code replayed (or an old lebm helper replayed
after it was patched) runs here: a subclass of a lebm method, whatever it overrides, runs its
iterations eagerly with one line, every iteration's Python running; a user's net inside a stock
method, a lebm helper patched before the fit, or a helper or a method patched during it, ends in
the weights the eager path trains under the same code, with one line (and, for a change during the
fit, the recordings dropped first). ``lebm.recording.audit`` holds the three allow-lists.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lebm.models.latent_ebm as latent_ebm_module
from lebm.models import LatentEBM, Method, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.recording import iteration_capture
from lebm.recording.audit import AUDITED, unaudited_class
from lebm.samplers import Langevin
from lebm.testing.capture import emulate_on_cpu
from tests.helpers.trainers import quiet_trainer

#: A module-level number the user's code reads (a replay would bake it in).
SCALE = 1.0
#: Batches per epoch; two epochs.
BATCHES = 8


def stock(decoder_net: torch.nn.Module | None = None) -> LatentEBM:
    torch.manual_seed(0)
    net = decoder_net or MLPGenerator(3, [2], hidden=16, out_activation=None)
    return LatentEBM(
        GaussianDecoder(net, 0.3),
        TiltedGaussianPrior(3, EnergyMLP(3, hidden=16), sampler=Langevin(4, 0.4)),
        posterior_sampler=Langevin(4, 0.1),
    )


def data() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(BATCHES * 8, 2, generator=torch.Generator().manual_seed(1))), 8)


def fit(model: Method, recorded: bool, callbacks: list[L.Callback] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Two epochs, recorded (switch on) or eager; the weights and the recorder's lines."""
    torch.manual_seed(7)
    trainer = quiet_trainer(max_epochs=2, accelerator="cpu", limit_val_batches=0, callbacks=callbacks or [])
    with emulate_on_cpu(), iteration_capture(recorded), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, data())
    lines = [
        str(w.message) for w in caught if "iterations" in str(w.message) and "docs/performance.md" in str(w.message)
    ]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, lines


def assert_same(eager: dict[str, Any], recorded: dict[str, Any]) -> None:
    assert eager.keys() == recorded.keys()
    assert not [name for name in eager if not torch.equal(eager[name], recorded[name])]


# ------------------------------------------------------------------------------- a user's class
class Plain(LatentEBM):
    """A subclass that overrides nothing."""


class OverridesTheIteration(LatentEBM):
    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        LatentEBM.training_iteration(self, [batch[0] * SCALE, *batch[1:]], batch_idx)


class OverridesAHook(LatentEBM):
    calls = 0

    def finish_training_step(self, *args: Any, **kwargs: Any) -> Any:
        OverridesAHook.calls += 1  # a host side effect a replay would not repeat
        return super().finish_training_step(*args, **kwargs)


class StatesTheOldOptIn(OverridesAHook):
    records_iterations = True


class BelowTheOldOptIn(StatesTheOldOptIn):
    def finish_training_step(self, *args: Any, **kwargs: Any) -> Any:
        return super().finish_training_step(*args, **kwargs)


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (Plain, "Plain is a subclass of lebm's LatentEBM"),
        (OverridesTheIteration, "OverridesTheIteration is a subclass of lebm's LatentEBM"),
        (OverridesAHook, "OverridesAHook is a subclass of lebm's LatentEBM"),
        (StatesTheOldOptIn, "StatesTheOldOptIn states records_iterations, an opt-in lebm has withdrawn"),
        (BelowTheOldOptIn, "StatesTheOldOptIn states records_iterations, an opt-in lebm has withdrawn"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_a_users_class_runs_its_iterations_eagerly_with_one_line(kind, named, one_thread) -> None:
    model = stock()
    model.__class__ = kind
    OverridesAHook.calls = 0
    _, lines = fit(model, recorded=True)
    stats = model.iteration_recorder.stats
    assert stats.recordings == stats.replays == stats.warmups == 0 and stats.eager == 2 * BATCHES, stats
    assert len(lines) == 1 and named in lines[0] and "\n" not in lines[0], lines
    if issubclass(kind, OverridesAHook):
        assert OverridesAHook.calls == 2 * BATCHES  # every iteration's Python ran


def test_lebms_own_methods_and_nothing_else_are_audited() -> None:
    """The allow-list is lebm's five method classes, each as itself."""
    names = sorted(kind.__name__ for kind in AUDITED if kind.__module__.startswith("lebm."))
    assert names == ["DAMC", "DualMCMC", "JointHierarchicalEBM", "LatentEBM", "MultiStageNCE"]
    assert all(unaudited_class(kind) is None for kind in AUDITED if kind.__module__.startswith("lebm."))
    assert unaudited_class(Method) is not None


# ----------------------------------------------------------------- a user's code in a stock method
class ScaledNet(MLPGenerator):
    """A user's net: its forward reads a module-level number."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z) * SCALE


def scaled_net() -> ScaledNet:
    torch.manual_seed(3)
    return ScaledNet(3, [2], hidden=16, out_activation=None)


def test_a_users_net_in_a_stock_method_keeps_iterations_eager_with_one_line(monkeypatch, one_thread) -> None:
    monkeypatch.setitem(globals(), "SCALE", 3.0)
    eager, _ = fit(stock(scaled_net()), recorded=False)
    model = stock(scaled_net())
    recorded, lines = fit(model, recorded=True)
    assert_same(eager, recorded)
    assert model.iteration_recorder.stats.recordings == 0
    assert len(lines) == 1 and "ScaledNet.forward, code that is not lebm's" in lines[0], lines


def scaled_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """A user's replacement of lebm's reconstruction loss: the original, scaled by :data:`SCALE`."""
    return ORIGINAL_LOSS(*args, **kwargs) * SCALE


ORIGINAL_LOSS = latent_ebm_module.reconstruction_loss


def test_a_lebm_helper_patched_before_the_fit_is_run_not_replayed(monkeypatch, one_thread) -> None:
    monkeypatch.setattr(latent_ebm_module, "reconstruction_loss", scaled_loss)
    monkeypatch.setitem(globals(), "SCALE", 3.0)
    eager, _ = fit(stock(), recorded=False)
    model = stock()
    recorded, lines = fit(model, recorded=True)
    assert_same(eager, recorded)
    assert model.iteration_recorder.stats.replays == 0
    assert len(lines) == 1 and "scaled_loss, code that is not lebm's" in lines[0], lines


class PatchAt(L.Callback):
    """At the batch ``at``, ``patch()`` (a helper or a method replaced during the fit)."""

    def __init__(self, at: int, patch: Callable[[], None]) -> None:
        self.at, self.patch = at, patch

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if trainer.global_step == self.at:
            self.patch()


def finishes_scaled(self: Any, logs: Any, *args: Any, **kwargs: Any) -> Any:
    """A user's replacement of ``finish_training_step`` set on lebm's class during the fit."""
    return ORIGINAL_FINISH(self, logs, *args, **kwargs)


ORIGINAL_FINISH = LatentEBM.finish_training_step


def linear_scaled(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A user's replacement of torch's ``Linear.forward``."""
    return torch.nn.functional.linear(x, self.weight, self.bias) * SCALE


def gelu_scaled(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """A user's replacement of torch's C function ``torch.nn.functional.gelu``."""
    return ORIGINAL_GELU(x, approximate="tanh") * SCALE


ORIGINAL_GELU = torch.nn.functional.gelu


@pytest.mark.parametrize(
    ("where", "name", "replacement"),
    [
        (latent_ebm_module, "reconstruction_loss", scaled_loss),
        (LatentEBM, "finish_training_step", finishes_scaled),
        (torch.nn.Linear, "forward", linear_scaled),
        (torch.nn.functional, "gelu", gelu_scaled),
    ],
    ids=["module-level helper", "method rebound on the class", "torch's Python method", "torch's C function"],
)
def test_a_lebm_function_replaced_during_the_fit_drops_the_recordings(
    where, name, replacement, monkeypatch, one_thread
) -> None:
    """Recorded and replayed before the change; at step 6 the helper (or the method) is replaced:
    the next iteration's check of the bindings drops every recording (one line), the iteration warms
    up and records again, and the watch refuses the replacement (a second line): the weights are
    the eager path's under the same change."""
    monkeypatch.setitem(globals(), "SCALE", 2.0)
    # a patcher of its own for each fit (the test's monkeypatch also holds the conftest's settings,
    # which an undo() would take back mid-test): lebm's own function is back before the second fit
    with pytest.MonkeyPatch.context() as patcher:
        eager, _ = fit(
            stock(), recorded=False, callbacks=[PatchAt(6, lambda: patcher.setattr(where, name, replacement))]
        )
    model = stock()
    with pytest.MonkeyPatch.context() as patcher:
        patching = PatchAt(6, lambda: patcher.setattr(where, name, replacement))
        recorded, lines = fit(model, recorded=True, callbacks=[patching])
    assert_same(eager, recorded)
    stats = model.iteration_recorder.stats
    assert stats.recordings >= 1 and stats.replays >= 2, stats
    assert len(lines) == 2, lines
    assert f"{name} changed since the iteration was recorded" in lines[0]
    assert f"{replacement.__name__}, code that is not lebm's" in lines[1]


class EntersAt(L.Callback):
    """At the batch ``at``, enters ``context`` for the rest of the fit (a mode a callback turns on)."""

    def __init__(self, at: int, context: Any) -> None:
        self.at, self.context = at, context

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if trainer.global_step == self.at:
            self.context.__enter__()

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        self.context.__exit__(None, None, None)


class Doubles(torch.overrides.TorchFunctionMode):
    """A user's mode: every ``tanh`` doubled."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        return out * 2 if func is torch.tanh else out


def pack_twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def unpack_half(x: torch.Tensor) -> torch.Tensor:
    return x / 1.5  # not the inverse: a replay that skipped the hooks trains other weights


@pytest.mark.parametrize(
    "context",
    [Doubles, lambda: torch.autograd.graph.saved_tensors_hooks(pack_twice, unpack_half)],
    ids=["a TorchFunctionMode", "saved-tensor hooks"],
)
def test_a_mode_entered_during_the_fit_keeps_iterations_and_chains_eager(context, one_thread) -> None:
    eager, _ = fit(stock(), recorded=False, callbacks=[EntersAt(6, context())])
    model = stock()
    recorded, lines = fit(model, recorded=True, callbacks=[EntersAt(6, context())])
    assert_same(eager, recorded)
    assert len(lines) == 1 and "which a replay would not run" in lines[0], lines


def test_lebms_function_given_a_users_code_during_the_fit_records_again_and_is_refused(monkeypatch, one_thread) -> None:
    """The same function object, a user's ``__code__``: the code identity is checked, and the watch
    reads the file the code came from."""
    target = latent_ebm_module.reconstruction_loss
    code = target.__code__

    def doubled(decoder: Any, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return decoder.nll(x, z).mean() * 2.0  # reads no global: it runs with lebm's module's globals

    def swap() -> None:
        target.__code__ = doubled.__code__

    try:
        eager, _ = fit(stock(), recorded=False, callbacks=[PatchAt(6, swap)])
        target.__code__ = code
        model = stock()
        recorded, lines = fit(model, recorded=True, callbacks=[PatchAt(6, swap)])
    finally:
        target.__code__ = code
    assert_same(eager, recorded)
    assert len(lines) == 2 and "reconstruction_loss changed since the iteration was recorded" in lines[0], lines
    assert "code that is not lebm's" in lines[1]


def halves_the_gradients(trainer: L.Trainer, module: Any) -> None:
    for parameter in module.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(0.5)


def test_an_update_hook_set_on_a_callback_or_the_model_instance_keeps_iterations_eager(one_thread) -> None:
    """Hooks the recorded update does not call, set on an instance (not a class): named in one line."""
    callback = L.Callback()
    callback.on_after_backward = halves_the_gradients
    eager, _ = fit(stock(), recorded=False, callbacks=[callback])
    recorded, lines = fit(stock(), recorded=True, callbacks=[callback])
    assert_same(eager, recorded)
    assert len(lines) == 1 and "the callback Callback runs on_after_backward" in lines[0], lines
    model = stock()
    model.on_after_backward = lambda: None
    _, lines = fit(model, recorded=True)
    assert len(lines) == 1 and "LatentEBM.on_after_backward is replaced on the instance" in lines[0], lines


def test_the_code_a_recording_may_run_is_lebms_torchs_lightnings_and_the_standard_librarys() -> None:
    """An installed package outside the allow-list is not trusted because it lies in site-packages
    (a one-file module on the list, such as typing_extensions, trusts that file only)."""
    import omegaconf  # noqa: F401 - installed beside lebm, not on the list

    from lebm.recording.audit import trusted_module

    assert trusted_module("lebm.models.latent_ebm") and trusted_module("torch.nn.modules.linear")
    assert trusted_module("lightning.pytorch.core.module") and trusted_module("collections")
    assert trusted_module("typing_extensions")
    assert not trusted_module("omegaconf") and not trusted_module(__name__)


class _CyclicGarbage:
    """An object of this test module (code a recording does not trust) whose finalizer runs when the
    garbage collector frees it."""

    me: Any

    def __del__(self) -> None:
        pass


def test_a_collection_inside_the_watch_does_not_run_garbage_made_outside_as_the_watched_code() -> None:
    """A recording watched code that the iteration never called: the finalizer of garbage the rest of
    the process left (a user's object in a reference cycle), run by an automatic collection that an
    allocation inside the recording set off. It refused that run's recordings by chance (CI,
    2026-11-29: one method's recording under gradient accumulation, in the slow tier's order only)."""
    import gc

    from lebm.recording.audit import CodeWatch

    threshold = gc.get_threshold()
    gc.collect()
    watch = CodeWatch()
    gc.set_threshold(1)  # the next allocation collects
    try:
        with watch:
            garbage = object.__new__(_CyclicGarbage)  # made without a Python call the watch would note
            garbage.me = garbage
            del garbage  # garbage now: freed only by a collection
            made = list(map(list, [()] * 1000))  # allocations: each may set off an automatic collection
        assert watch.foreign is None, watch.foreign
        assert gc.isenabled()  # the collector's setting is back
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    assert len(made) == 1000
