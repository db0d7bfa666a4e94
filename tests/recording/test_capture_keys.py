"""The capture key is complete, or the chain runs eagerly (device: CPU, strict op-replay emulator).

Under ``emulate_on_cpu()`` a replay re-executes the recorded operations with every Python number
baked in, as a CUDA graph does. So when a field the graph depends on is missing from the key, the
second call below replays the first call's graph and its states differ from the eager chain's: each
case fails if its field is dropped from ``chain_key``. The module-attribute cases live in
``test_chain_capture.py`` (``changes()``); here are the call's own fields, the energy's owner and
closure, and what keeps a chain eager.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from test_chain_capture import Posterior, batches
from torch import Tensor, nn

from lebm.recording import chain_graphs
from lebm.samplers import Langevin
from lebm.testing.capture import emulate_on_cpu


class EnergyOwner:
    """A plain object whose method is the chain's energy and reads one of its attributes."""

    def __init__(self, model: Posterior) -> None:
        self.model = model
        self.temperature = 1.0

    def energy(self, z: Tensor, x: Tensor) -> Tensor:
        return self.model(z, x) / self.temperature


def twice(first: dict[str, Any], second: dict[str, Any], change: Callable[[], None] = lambda: None) -> tuple:
    """Call one sampler with ``first`` then (after ``change``) ``second``; return the second call's
    result, the eager chain of the second call, and the sampler's counters. Each dict holds
    ``energy``, ``x``, and optionally ``reference_precision``, ``record``, ``generator`` (bool),
    ``model``."""
    sampler = Langevin(5, 0.2)

    def call(options: dict[str, Any], chain: Langevin, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed) if options.get("generator", True) else None
        if generator is None:
            torch.manual_seed(seed)
        out = chain(
            options["energy"],
            torch.zeros(len(options["x"]), 3),
            inputs=(options["x"],),
            freeze=[options["model"]],
            reference_precision=options.get("reference_precision", 0.0),
            generator=generator,
            return_diagnostics=options.get("record", False),
        )
        return out[0] if isinstance(out, tuple) else out

    with emulate_on_cpu():
        call(first, sampler, 0)
        change()
        captured = call(second, sampler, 1)
    eager = call(second, Langevin(5, 0.2), 1)
    return captured, eager, chain_graphs(sampler).stats()


def test_the_reference_precision_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    captured, eager, stats = twice(
        {"energy": model, "x": x, "model": model}, {"energy": model, "x": x, "model": model, "reference_precision": 4.0}
    )
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_recording_diagnostics_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    captured, eager, stats = twice(
        {"energy": model, "x": x, "model": model}, {"energy": model, "x": x, "model": model, "record": True}
    )
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_whether_a_generator_is_given_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    captured, eager, stats = twice(
        {"energy": model, "x": x, "model": model}, {"energy": model, "x": x, "model": model, "generator": False}
    )
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_the_inputs_shapes_are_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    y = torch.randn(16, 6)

    def energy(z: Tensor, data: Tensor) -> Tensor:  # reads as many data columns as it is given
        return model.energy(z).squeeze(1) + (torch.tanh(z.sum(1, keepdim=True)) - data).square().sum(1)

    captured, eager, stats = twice(
        {"energy": energy, "x": x, "model": model}, {"energy": energy, "x": y, "model": model}
    )
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_another_energy_function_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    halved = lambda z, data: model(z, data) / 2  # noqa: E731
    captured, eager, stats = twice(
        {"energy": model, "x": x, "model": model}, {"energy": halved, "x": x, "model": model}
    )
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_the_energy_owners_attributes_are_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    owner = EnergyOwner(model)
    options = {"energy": owner.energy, "x": x, "model": model}

    def warm() -> None:
        owner.temperature = 0.5

    captured, eager, stats = twice(options, {**options, "energy": owner.energy}, warm)
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_a_closure_cell_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    temperature = [1.0]
    energy = lambda z, data: model(z, data) / temperature[0]  # noqa: E731

    def change() -> None:
        temperature[0] = 0.5

    options = {"energy": energy, "x": x, "model": model}
    captured, eager, stats = twice(options, options, change)
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_a_modules_chain_capture_key_is_in_the_key() -> None:
    class Keyed(Posterior):
        def __init__(self) -> None:
            super().__init__()
            self._power = 1  # read by forward, left out of the key by chain_capture_ignore ...
            self.chain_capture_ignore = ("_power",)

        def chain_capture_key(self) -> int:  # ... and given back through chain_capture_key
            return self._power

        def forward(self, z: Tensor, x: Tensor) -> Tensor:
            return super().forward(z, x) * self._power

    model, x = Keyed(), batches(1)[0]

    def change() -> None:
        model._power = 2

    options = {"energy": model, "x": x, "model": model}
    captured, eager, stats = twice(options, options, change)
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_an_attribute_listed_in_chain_capture_ignore_records_no_new_graph() -> None:
    model, x = Posterior(), batches(1)[0]
    model.chain_capture_ignore = ("_counter",)
    model._counter = 0

    def change() -> None:
        model._counter += 1

    options = {"energy": model, "x": x, "model": model}
    captured, eager, stats = twice(options, options, change)
    assert stats == {"captures": 1, "replays": 1, "eager_calls": 0} and torch.equal(captured, eager)


def test_a_module_held_in_a_plain_list_is_fingerprinted_with_its_tree() -> None:
    model, x = Posterior(), batches(1)[0]
    extra = nn.Sequential(nn.Linear(3, 1))
    model.held = [extra]  # not a submodule: the chain reads it, the fingerprint must too

    def energy(z: Tensor, data: Tensor) -> Tensor:
        return model(z, data) + model.held[0](z).squeeze(1)

    def change() -> None:
        extra.double().float()  # new storage for its weights, same values

    with torch.no_grad():
        extra[0].weight.mul_(3)
    options = {"energy": energy, "x": x, "model": model}
    captured, eager, stats = twice(options, options, change)
    assert stats["captures"] == 2 and torch.equal(captured, eager)


# ------------------------------------------------------------------ what keeps a chain eager
class Opaque:
    """An object the key cannot read (no ``__dict__``)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 1.0


def eager_reasons() -> dict[str, tuple[Callable[[Posterior], Any], str | None]]:
    """Name -> (how to make the chain uncapturable, the warning it gives, or None)."""

    def forward_hook(model: Posterior) -> Any:
        return model.generator.register_forward_hook(lambda module, args, out: out * 2)

    def backward_hook(model: Posterior) -> Any:
        return model.energy[0].register_full_backward_hook(lambda module, g_in, g_out: None)

    def hook_style_spectral_norm(model: Posterior) -> Any:
        return torch.nn.utils.spectral_norm(model.generator)

    def sync_batchnorm(model: Posterior) -> Any:
        model.energy[1] = nn.SyncBatchNorm(8)

    def an_opaque_attribute(model: Posterior) -> Any:
        model.opaque = Opaque()

    return {
        "a forward hook": (forward_hook, None),
        "a backward hook": (backward_hook, None),
        "the hook-style spectral norm": (hook_style_spectral_norm, None),
        "a SyncBatchNorm": (sync_batchnorm, None),
        "an attribute the key cannot read": (an_opaque_attribute, "cannot see everything"),
    }


@pytest.mark.parametrize("name", list(eager_reasons()))
def test_what_the_key_cannot_see_runs_eagerly(name: str) -> None:
    make, warning = eager_reasons()[name]
    model, x = Posterior(), batches(1)[0]
    make(model)
    model.eval()  # a SyncBatchNorm in eval mode runs on the CPU
    sampler = Langevin(3, 0.2)
    with emulate_on_cpu(), pytest.warns(UserWarning, match=warning) if warning else contextlib.nullcontext():
        for _ in range(2):
            sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model])
    assert chain_graphs(sampler).stats() == {"captures": 0, "replays": 0, "eager_calls": 2}


def test_anomaly_detection_and_launch_blocking_run_chains_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = Posterior(), batches(1)[0]
    sampler = Langevin(3, 0.2)
    with emulate_on_cpu():
        with torch.autograd.set_detect_anomaly(True):
            sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model])
        monkeypatch.setitem(os.environ, "CUDA_LAUNCH_BLOCKING", "1")
        sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model])
        monkeypatch.setitem(os.environ, "CUDA_LAUNCH_BLOCKING", "0")
        sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model])
    assert chain_graphs(sampler).stats() == {"captures": 1, "replays": 0, "eager_calls": 2}


def test_another_method_of_the_same_module_is_in_the_key() -> None:
    class TwoEnergies(Posterior):
        def tempered(self, z: Tensor, x: Tensor) -> Tensor:
            return self(z, x) / 3

    model, x = TwoEnergies(), batches(1)[0]
    first = {"energy": model.forward, "x": x, "model": model}
    captured, eager, stats = twice(first, {**first, "energy": model.tempered})
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_a_tensor_attribute_seen_through_other_strides_is_in_the_key() -> None:
    model, x = Posterior(), batches(1)[0]
    model.mixing = torch.randn(4, 4)

    def energy(z: Tensor, data: Tensor) -> Tensor:
        return model(z, data @ model.mixing)

    def change() -> None:
        model.mixing = model.mixing.t()  # the same storage and shape, read transposed

    options = {"energy": energy, "x": x, "model": model}
    captured, eager, stats = twice(options, options, change)
    assert stats["captures"] == 2 and torch.equal(captured, eager)


def test_a_module_read_only_through_a_closure_is_checked_and_its_warm_up_undone() -> None:
    """No ``freeze``: the energy reaches the model through its closure. The key fingerprints it,
    the warm-up's changes to its BatchNorm statistics are put back, and a hook on it keeps the
    chain eager, as for a module in ``freeze``."""

    def run(emulate: bool, hooked: bool = False) -> tuple[Tensor, Tensor, dict]:
        torch.manual_seed(0)
        model, x = Posterior(), batches(1)[0]
        if hooked:
            model.generator.register_forward_hook(lambda module, args, out: out)
        energy = lambda z, data: model(z, data)  # noqa: E731
        sampler = Langevin(3, 0.2)
        with emulate_on_cpu() if emulate else contextlib.nullcontext():
            for _ in range(2):
                z = sampler(energy, torch.zeros(16, 3), inputs=(x,), generator=torch.Generator().manual_seed(1))
        return z, model.energy[1].num_batches_tracked.clone(), chain_graphs(sampler).stats()

    eager_z, eager_count, _ = run(False)
    captured_z, captured_count, stats = run(True)
    assert stats == {"captures": 1, "replays": 1, "eager_calls": 0}
    assert torch.equal(captured_count, eager_count) and torch.equal(captured_z, eager_z)
    assert run(True, hooked=True)[2] == {"captures": 0, "replays": 0, "eager_calls": 2}
