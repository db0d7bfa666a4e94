"""Helpers shared by the benchmark scripts: reading a recipe, naming the device, timing, a bare Trainer,
the recorded-iterations option."""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from lebm.cli.resolve import resolve_recipe
from lebm.recording import set_iteration_capture


def load_recipe(path: str) -> dict[str, Any]:
    """The recipe as ``lebm fit -c path`` runs it: includes expanded, interpolations resolved."""
    return resolve_recipe(path)


def describe_device(device: torch.device) -> str:
    """The GPU's name, the CPU and the number of torch threads, or the device type for any other."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work()`` and return its result and wall-clock seconds (CUDA synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def run_facts(load_before: list[float]) -> dict[str, Any]:
    """What a benchmark's JSON says of its run: torch's version, its CPU threads, and the machine's
    load average before (``load_before``, taken at the start) and after (now)."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def bare_trainer(**settings: Any) -> L.Trainer:
    """A Trainer that only trains: no logger, checkpoints, progress bar, summary or validation, and
    inference mode off (chains run in every hook); ``settings`` add to or override these."""
    defaults: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "inference_mode": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**defaults, **settings})


#: Warm-up iterations with recorded iterations on: the first key, a key's two eager warm-ups, its recording.
RECORDED_WARMUP = 4


def add_recorded_iterations_option(parser: argparse.ArgumentParser) -> None:
    """``--recorded-iterations on|off`` (off unless asked: a benchmark row names its path; lebm's own
    default on CUDA is on)."""
    parser.add_argument(
        "--recorded-iterations",
        choices=("on", "off"),
        default="off",
        help="on: whole training iterations recorded as CUDA graphs (recipes/speed/recorded_iterations.yaml); "
        f"the warm-up is then at least {RECORDED_WARMUP} iterations (a key's eager warm-ups and its recording)",
    )


def apply_recorded_iterations_option(args: argparse.Namespace) -> None:
    """Set the process's switch from ``args.recorded_iterations``, and lengthen ``args.warmup`` to
    :data:`RECORDED_WARMUP` when it is on."""
    set_iteration_capture(args.recorded_iterations == "on")
    if args.recorded_iterations == "on":
        args.warmup = max(args.warmup, RECORDED_WARMUP)
