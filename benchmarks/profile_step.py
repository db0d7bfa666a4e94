"""Where a training iteration's time goes: the device's busy time, the host's work and its calls.

    python benchmarks/profile_step.py --recipe recipes/latent_ebm/svhn.yaml [--precision bf16-mixed]
        [--fast channels_last] [--iters 5] [--warmup 3] [--batch-size N] [--chain-capture on|off]
        [--cudnn-benchmark] [--tf32 pytorch|true|false]

Runs the recipe's method as ``benchmarks/train_step.py`` does (random data of the recipe's shape, a
bare Trainer) and profiles ``--iters`` iterations after ``--warmup`` with ``torch.profiler`` (CPU and,
on a GPU, CUDA activity). Prints one JSON line with, per iteration (milliseconds):

- ``wall_ms``: the profiled iterations' wall-clock time (CUDA synchronised at both ends);
- ``device_busy_ms``: the union of the device's kernel and copy intervals, and ``device_idle_share``,
  the part of ``wall_ms`` the device had nothing to run: the share the host (Lightning's loop, the
  eager passes, launches, logging, synchronisations) keeps it waiting (null on a CPU);
- ``host_ranges_ms``: the host time of ``training_step``, of each chain call (``chain:<name>``) and,
  with recorded iterations, of the key built before each replay (``iteration_key``);
- ``runtime_calls``: per iteration, how many CUDA graph launches, kernel launches, synchronisations
  and copies the host made (``cudaGraphLaunch``, ``cudaLaunchKernel``, ``cudaStreamSynchronize`` ...);
- ``top_host_ops``: the operations with the most host (self CPU) time, and ``top_device_kernels``:
  the kernels with the most device time.

This is the profile issue 37 asks for ("where does an iteration's time go once its chains are
graphs?"); ``benchmarks/gpu_check.py --stages profile`` runs it on a lent GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from typing import Any

import lightning as L
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    add_recorded_iterations_option,
    apply_recorded_iterations_option,
    bare_trainer,
    describe_device,
    load_recipe,
)
from train_step import CHAIN_ATTRIBUTES, observation_shape, start_in_stage  # noqa: E402

from lebm.callbacks import FastNets  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.recording import recorded_iteration, set_chain_capture  # noqa: E402
from lebm.speed.numerics import apply_tf32  # noqa: E402

#: CUDA runtime and driver calls counted per iteration, by the name the profiler gives them.
RUNTIME_CALLS = {
    "graph_launches": ("cudaGraphLaunch", "cuGraphLaunch"),
    "kernel_launches": ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"),
    "synchronisations": (
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaEventSynchronize",
        "cuStreamSynchronize",
        "cuCtxSynchronize",
    ),
    "copies": ("cudaMemcpyAsync", "cudaMemcpy", "cuMemcpyAsync", "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync"),
}


def mark_ranges(model: Any) -> None:
    """Wrap ``training_step``, every chain call of ``model`` and the recorded iterations' key
    (``iteration_key``: the host's work before each replay) in named profiler ranges."""
    step = model.training_step
    key = recorded_iteration.iteration_key
    if not hasattr(key, "ranged"):

        def iteration_key(*args: Any, **kwargs: Any) -> Any:
            with record_function("iteration_key"):
                return key(*args, **kwargs)

        iteration_key.ranged = True  # type: ignore[attr-defined]
        recorded_iteration.iteration_key = iteration_key

    def training_step(*args: Any, **kwargs: Any) -> Any:
        with record_function("training_step"):
            return step(*args, **kwargs)

    model.training_step = training_step
    for dotted in CHAIN_ATTRIBUTES:
        owner: Any = model
        for part in dotted.split("."):
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, "run"):
            continue
        original = type(owner).__call__

        def ranged(sampler: Any, *args: Any, _name: str = dotted, _call: Any = original, **kwargs: Any) -> Any:
            with record_function(f"chain:{_name}"):
                return _call(sampler, *args, **kwargs)

        owner.__class__ = type(f"Ranged{type(owner).__name__}", (type(owner),), {"__call__": ranged})


class ProfileWindow(L.Callback):
    """Profiles the training batches ``warmup`` to ``warmup + iters - 1`` (CUDA synchronised at both ends)."""

    def __init__(self, warmup: int, iters: int) -> None:
        self.warmup, self.iters = warmup, iters
        self.profiler: profile | None = None
        self.wall_s = 0.0
        self.device: torch.device | None = None

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if index == self.warmup:
            self._sync(module)
            self.device = module.device
            activities = [ProfilerActivity.CPU]
            if module.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self.profiler = profile(activities=activities)
            self.profiler.start()
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        index = args[-1]
        if index == self.warmup + self.iters - 1 and self.profiler is not None:
            self._sync(module)
            self.wall_s = time.perf_counter() - self._start
            self.profiler.stop()


#: Events on the device's timeline that are not work: waits the host or a stream made (Kineto
#: records synchronisations there, spanning the wait) and user ranges (training_step, chain:...).
NOT_DEVICE_WORK = {"cuda_sync", "gpu_user_annotation", "user_annotation", "overhead"}


def is_device_work(event: Any) -> bool:
    """Whether a device-side profiler event is a kernel, copy or fill (not a wait or a range)."""
    if getattr(event, "is_user_annotation", False) or getattr(event, "activity_type", None) in NOT_DEVICE_WORK:
        return False
    return not (event.name.endswith(" Sync") or event.name == "Stream Wait Event")  # torch without activity_type


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``intervals`` ``[(start, end)]`` (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def summarise(window: ProfileWindow, iters: int, top: int = 12) -> dict[str, Any]:
    """The per-iteration figures of the profiled window (see the module's docstring)."""
    assert window.profiler is not None, "the profiled batches did not run"
    events = window.profiler.events()

    def per_iteration_ms(microseconds: float) -> float:
        return round(microseconds / 1000 / iters, 3)

    device_intervals = []
    kernel_time: dict[str, float] = defaultdict(float)
    host_ranges: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    host_ops: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for event in events:
        if event.device_type == DeviceType.CUDA:
            if not is_device_work(event):
                continue
            device_intervals.append((event.time_range.start, event.time_range.end))
            kernel_time[event.name] += event.time_range.elapsed_us()
            continue
        if event.name in ("training_step", "iteration_key") or event.name.startswith("chain:"):
            host_ranges[event.name] += event.cpu_time_total
        runtime_name = re.sub(r"_v\d+$", "", event.name)  # CUPTI may name calls with a version: ..._v10000
        for kind, names in RUNTIME_CALLS.items():
            if runtime_name in names:
                calls[kind] += 1
        host_ops[event.name][0] += event.self_cpu_time_total
        host_ops[event.name][1] += 1
    wall_ms = window.wall_s * 1000 / iters
    result: dict[str, Any] = {
        "wall_ms": round(wall_ms, 3),
        "device_busy_ms": None,
        "device_idle_share": None,
        "host_ranges_ms": {name: per_iteration_ms(us) for name, us in sorted(host_ranges.items())},
        "runtime_calls": {kind: round(calls.get(kind, 0) / iters, 1) for kind in RUNTIME_CALLS},
        "top_host_ops": [
            {"name": name, "self_ms": per_iteration_ms(us), "calls": round(count / iters, 1)}
            for name, (us, count) in sorted(host_ops.items(), key=lambda item: -item[1][0])[:top]
        ],
        "top_device_kernels": [
            {"name": name[:120], "ms": per_iteration_ms(us)}
            for name, us in sorted(kernel_time.items(), key=lambda item: -item[1])[:top]
        ],
    }
    if device_intervals:
        busy_ms = union_length(device_intervals) / 1000 / iters
        result["device_busy_ms"] = round(busy_ms, 3)
        result["device_idle_share"] = round(max(0.0, 1 - busy_ms / wall_ms), 3) if wall_ms > 0 else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--fast", default="", help="comma-separated FastNets switches: compile, channels_last")
    parser.add_argument("--chain-capture", choices=("on", "off"), default="on")
    add_recorded_iterations_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="Trainer(benchmark=True): cuDNN times its algorithms per shape"
    )
    parser.add_argument("--tf32", choices=("pytorch", "true", "false"), default="pytorch", help="as a recipe's tf32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    apply_tf32({"true": True, "false": False}.get(args.tf32, "pytorch"))
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = {name: True for name in args.fast.split(",") if name}
    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    torch.manual_seed(args.seed)
    model = build(recipe["model"])
    set_chain_capture(args.chain_capture == "on")
    apply_recorded_iterations_option(args)
    start_in_stage(model, None)
    shape = observation_shape(model)
    mark_ranges(model)
    window = ProfileWindow(args.warmup, args.iters)
    n = batch_size * (args.warmup + args.iters)
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=batch_size, drop_last=True)
    callbacks: list[L.Callback] = [window, *([FastNets(**fast)] if fast else [])]
    trainer = bare_trainer(
        max_epochs=1,
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        benchmark=args.cudnn_benchmark,
        callbacks=callbacks,
    )
    trainer.fit(model, data)
    assert window.device is not None, "no profiled batch ran"
    result = {
        "recipe": args.recipe,
        "method": type(model).__name__,
        "device": describe_device(window.device),
        "precision": args.precision,
        "fast": sorted(fast),
        "chain_capture": args.chain_capture,
        "recorded_iterations": model.iteration_recorder.stats.as_dict() if args.recorded_iterations == "on" else "off",
        "cudnn_benchmark": args.cudnn_benchmark,
        "tf32": args.tf32,
        "batch_size": batch_size,
        "iters": args.iters,
        **summarise(window, args.iters),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
