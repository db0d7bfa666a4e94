"""Recorded iterations stay recorded across epochs that save checkpoints (device: CPU, the strict
replay emulator, with a GPU's step counts emulated where a checkpoint reads them).

On an H200 at 256fb1d the quickstart recorded once per epoch: 10 epochs of 14 batches made 10
recordings and 30 warm-ups, where the CPU emulator made one recording over 3 epochs. The cause:
every epoch's checkpoint (``base.yaml``'s ``ModelCheckpoint``, every epoch) calls
``Method.on_save_checkpoint``, whose ``steps_on_the_host`` puts each Adam step count of the
checkpoint on the host by assigning ``values["step"] = step.to("cpu")`` into the checkpoint's
per-parameter dicts. Those dicts are the optimiser's own (``torch.optim.Optimizer.state_dict()``
packs ``self.state``'s dicts themselves, not copies), so the live optimiser got a host tensor in
place of the step count the recorded iterations read on the device: the optimiser part of the
iteration key changed, the next iteration warmed up under a new key, its first warm-up moved the
step back to the device (``device_adam_step``: one more new key), two more warm-ups and a new
recording followed. One recording and three warm-ups per epoch, as measured. On a CPU the step
counts are on the host already, so the move never happens: the emulator cannot show it unless a
step count is a device tensor when the checkpoint reads it, which :func:`as_on_a_gpu` arranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

import lebm
from lebm.callbacks import ReconstructionGrid, SampleGrid
from lebm.models import Method
from lebm.recording import iteration_capture
from lebm.recording.device_adam import LearningRates, device_adam_step
from lebm.recording.recorded_iteration import steps_on_the_host
from lebm.testing.capture import emulate_on_cpu


class OnTheDevice(torch.Tensor):
    """A CPU tensor standing for a step count a recorded Adam keeps on a GPU: its ``device`` reads
    ``cuda:0``, and a move to the host is new memory, as a copy off a GPU is (any other move is the
    plain tensor's)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        plain = self.as_subclass(torch.Tensor)
        target = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
        moved = plain.to(*args, **kwargs)
        to_the_host = target is not None and torch.device(target).type == "cpu"
        return moved.clone() if to_the_host and moved.data_ptr() == plain.data_ptr() else moved

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        return self.to("cpu")


def live_states(method: Method) -> Iterator[dict[str, Any]]:
    """Each parameter's state dict of each of ``method``'s optimisers (the optimiser's own)."""
    for optimizer in method.optimizer_list():
        yield from getattr(optimizer, "optimizer", optimizer).state.values()


def as_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on (this test), a checkpoint of a method reads its optimisers' step counts as a GPU
    run's: for the duration of ``Method.on_save_checkpoint`` each live step count is an
    :class:`OnTheDevice` view of itself (same memory), and afterwards each step count still that
    view gets its tensor back. A step count the hook replaced in the live optimiser stays replaced,
    by the new host tensor the hook made, as on a GPU. Returns the list that gets a 1 per checkpoint."""
    original = Method.on_save_checkpoint
    saves: list[int] = []

    def on_save_checkpoint(self: Method, checkpoint: dict[str, Any]) -> None:
        saves.append(1)
        held = [(state, state["step"]) for state in live_states(self) if isinstance(state.get("step"), torch.Tensor)]
        for state, step in held:
            state["step"] = step.as_subclass(OnTheDevice)
        try:
            original(self, checkpoint)
        finally:
            for state, step in held:
                if type(state["step"]) is OnTheDevice:
                    state["step"] = step

    monkeypatch.setattr(Method, "on_save_checkpoint", on_save_checkpoint)
    return saves


def test_a_checkpoint_takes_host_copies_of_the_step_counts_and_leaves_the_optimisers_own() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=0.1)
    parameter.grad = torch.ones(3)
    device_adam_step(optimizer, LearningRates(optimizer).tensors)  # the recorded step's state
    state = optimizer.state[parameter]
    state["step"] = live = state["step"].as_subclass(OnTheDevice)  # where a GPU run keeps it
    checkpoint = {"optimizer_states": [optimizer.state_dict()]}
    steps_on_the_host(checkpoint)
    saved = checkpoint["optimizer_states"][0]["state"][0]["step"]
    assert type(saved) is torch.Tensor and saved.device.type == "cpu" and float(saved) == 1.0
    assert saved.data_ptr() != live.data_ptr()  # a host copy
    assert optimizer.state[parameter]["step"] is live  # the optimiser's own count stays on the device


class BatchShapes(L.Callback):
    """The shapes of the training batches the run met."""

    def __init__(self) -> None:
        self.shapes: set[tuple[tuple[int, ...], ...]] = set()

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self.shapes.add(tuple(tuple(leaf.shape) for leaf in batch if isinstance(leaf, torch.Tensor)))


def test_the_quickstart_records_each_iteration_once_over_epochs_that_save_checkpoints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_thread
) -> None:
    """``lebm fit -c recipes/quickstart.yaml`` in this process (its callbacks, a checkpoint every
    epoch among them, but the image grids), 3 epochs of 3 batches, a validation batch after each, short
    chains: each batch shape is recorded once, after two warm-ups (and one more for the very first
    iteration, whose key precedes Adam's state), and every later iteration replays."""
    saves = as_on_a_gpu(monkeypatch)
    epochs, batches = 3, 3
    overrides = {
        "trainer.max_epochs": epochs,
        "trainer.limit_train_batches": batches,
        "trainer.check_val_every_n_epoch": 1,
        "trainer.limit_val_batches": 1,
        "trainer.logger": False,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.default_root_dir": str(tmp_path),
        "data.init_args.batch_size": 20,
        "model.init_args.prior.init_args.sampler.init_args.n_steps": 5,
        "model.init_args.posterior_sampler.init_args.n_steps": 5,
    }
    recipe = lebm.from_recipe("quickstart", overrides)
    # the image grids draw at the last epoch only, once training is over (their long chains: seconds)
    recipe.callbacks = [c for c in recipe.callbacks if not isinstance(c, (SampleGrid, ReconstructionGrid))]
    seen = BatchShapes()
    trainer = recipe.trainer(callbacks=[seen])
    with emulate_on_cpu(), iteration_capture(True):
        trainer.fit(recipe.model, datamodule=recipe.datamodule)
    assert len(saves) >= epochs  # a checkpoint every epoch (and last.ckpt)
    recorder = recipe.model.iteration_recorder
    stats, shapes = recorder.stats, len(seen.shapes)
    assert recorder.disabled is None and stats.eager == 0, recorder.disabled
    assert stats.recordings == shapes and stats.warmups == 2 * shapes + 1, stats
    assert stats.replays == epochs * batches - stats.warmups, stats  # a recording replays its own iteration
    assert all(type(state["step"]) is torch.Tensor for state in live_states(recipe.model))
    saved = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    steps = [values["step"] for state in saved["optimizer_states"] for values in state["state"].values()]
    assert steps and all(float(step) == epochs * batches for step in steps)
