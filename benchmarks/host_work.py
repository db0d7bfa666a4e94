"""The host work of a training iteration around its chains: what a GPU waits for once chains are graphs.

    python benchmarks/host_work.py --recipe recipes/quickstart.yaml [--iters 200] [--batch-size N] [--warmup 20]

With chains captured, a GPU iteration is bound by what the host does around them: Lightning's loop,
the losses' forward and backward passes, the optimiser steps, logging and the divergence guard. This
script measures that part on any device (a CPU included) and prints one JSON line:

- ``ops_outside_chains``: aten operations (views left out) one iteration dispatches outside its
  chains (each one a kernel launch and its Python and dispatcher work on a GPU), and
  ``ops_per_chain_step``: per chain (``prior.sampler`` ...), the operations of one step, with the
  chain's diagnostics as training records them (``"ends"``) and recorded at every step (``True``,
  as before), counted with the chains run eagerly (on a GPU: the kernels its graph records a step);
- ``remainder_ms``: milliseconds per iteration with every chain cut to one step (the host work
  around the chains, plus two chain steps), with training values handed to Lightning at the
  trainer's logging cadence (``log_every_n_steps`` 50, lebm's behaviour) and at every step
  (``log_every_n_steps`` 1, as before): the difference is Lightning's ``self.log``.

Times are medians of ``--repeats`` runs of ``--iters`` iterations after ``--warmup`` warm-up
iterations (default 20), on random data of the recipe's shape; on a CPU, one torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import bare_trainer, describe_device, load_recipe  # noqa: E402
from train_step import CHAIN_ATTRIBUTES, observation_shape, start_in_stage  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.recording import iteration_capture, set_chain_capture  # noqa: E402
from lebm.samplers.chain import ChainTarget  # noqa: E402
from lebm.testing.capture import EmulatedStore, emulate_on_cpu  # noqa: E402

WARMUP = 20


def chains_of(model: Any) -> dict[str, Any]:
    """The model's training chains by attribute path (those it has)."""
    found = {}
    for dotted in CHAIN_ATTRIBUTES:
        owner: Any = model
        for part in dotted.split("."):
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, "run"):
            found[dotted] = owner
    return found


class OpCounter(TorchDispatchMode):
    """Counts aten operations that compute (views and aliases, which launch nothing, are left out),
    apart inside and outside chain calls (``chain`` is set by the caller)."""

    def __init__(self) -> None:
        super().__init__()
        self.outside = 0
        self.inside: Counter[str] = Counter()
        self.chain: str | None = None

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func.is_view:
            pass
        elif self.chain is None:
            self.outside += 1
        else:
            self.inside[self.chain] += 1
        return func(*args, **(kwargs or {}))


def count_chain_calls(model: Any, counter: OpCounter) -> None:
    """Route every chain call of ``model`` through ``counter`` (its ops counted as the chain's)."""
    for name, chain in chains_of(model).items():
        original = type(chain).__call__

        def counted(sampler: Any, *args: Any, _name: str = name, _call: Any = original, **kwargs: Any) -> Any:
            counter.chain = _name
            try:
                return _call(sampler, *args, **kwargs)
            finally:
                counter.chain = None

        chain.__class__ = type(f"Counted{type(chain).__name__}", (type(chain),), {"__call__": counted})


def build_model(recipe: dict[str, Any], seed: int) -> Any:
    torch.manual_seed(seed)
    model = build(recipe["model"])
    start_in_stage(model, None)
    return model


def count_ops(recipe: dict[str, Any], batch_size: int, accelerator: str, record: Any) -> dict[str, Any]:
    """Ops of the third training iteration: outside the chains, and per step of each chain."""
    model = build_model(recipe, 0)
    counter = OpCounter()
    count_chain_calls(model, counter)
    steps = {name: max(int(getattr(chain, "n_steps", 1)), 1) for name, chain in chains_of(model).items()}
    original_init = ChainTarget.__init__

    def with_record(target: ChainTarget, *args: Any, **kwargs: Any) -> None:
        original_init(target, *args, **kwargs)
        if target.record:
            original_init(target, *args, **{**kwargs, "record": record})  # the same target, recording `record`

    class CountThird(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if index == 2:
                counter.__enter__()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int) -> None:
            if index == 2:
                counter.__exit__(None, None, None)

    shape = observation_shape(model)
    data = DataLoader(TensorDataset(torch.rand(batch_size * 3, *shape) * 2 - 1), batch_size=batch_size)
    ChainTarget.__init__ = with_record  # type: ignore[method-assign]
    previous = set_chain_capture(False)  # counted eagerly: on a GPU, what a chain's graph records
    try:
        bare_trainer(max_epochs=1, accelerator=accelerator, devices=1, callbacks=[CountThird()]).fit(model, data)
    finally:
        ChainTarget.__init__ = original_init  # type: ignore[method-assign]
        set_chain_capture(previous)
    per_step = {name: round(count / steps[name], 1) for name, count in counter.inside.items()}
    return {"outside": counter.outside, "per_step": per_step}


#: The iteration whose operations outside graphs are counted: after two warm-ups and the recording.
COUNTED_REPLAY = 5


def count_outside_graphs(recipe: dict[str, Any], batch_size: int, iterations: int = 3) -> dict[str, Any]:
    """Aten operations (views left out) that replayed training iterations dispatch outside their
    recordings, per iteration: the host work a GPU still waits for with recorded iterations on,
    counted on the CPU under the strict emulator (``lebm.testing.capture``), which records and
    replays as a CUDA graph does. Counts ``iterations`` iterations from :data:`COUNTED_REPLAY` on,
    none of them a logging step; ``recorded``: whether every one of them was a replay."""
    model = build_model(recipe, 0)
    counter = OpCounter()
    original_record = EmulatedStore.record

    def record(store: EmulatedStore, body: Any, generators: Any) -> Any:
        replay, outputs = original_record(store, body, generators)

        def counted_replay() -> None:
            counter.chain = "recorded iteration"
            try:
                replay()
            finally:
                counter.chain = None

        return counted_replay, outputs

    last = COUNTED_REPLAY + iterations - 1

    class Count(L.Callback):  # each counted batch from its start to its end (not the loader's next fetch)
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if index == COUNTED_REPLAY:
                self.replays = module.iteration_recorder.stats.replays
            if COUNTED_REPLAY <= index <= last:
                counter.__enter__()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int) -> None:
            if COUNTED_REPLAY <= index <= last:
                counter.__exit__(None, None, None)
            if index == last:
                self.replays = module.iteration_recorder.stats.replays - self.replays

    shape = observation_shape(model)
    n = batch_size * (last + 3)  # the epoch's last batch, which hands its values to Lightning, is not counted
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=batch_size)
    counting = Count()
    EmulatedStore.record = record  # type: ignore[method-assign]
    try:
        with emulate_on_cpu(), iteration_capture(True):
            bare_trainer(max_epochs=1, accelerator="cpu", devices=1, log_every_n_steps=50, callbacks=[counting]).fit(
                model, data
            )
    finally:
        EmulatedStore.record = original_record  # type: ignore[method-assign]
    return {
        "ops_outside_graphs": round(counter.outside / iterations, 1),
        "recorded": counting.replays == iterations,
        "recorder": model.iteration_recorder.stats.as_dict(),
    }


def remainder_ms(
    recipe: dict[str, Any], batch_size: int, accelerator: str, log_every: int, iters: int, warmup: int = WARMUP
) -> tuple[float, str]:
    """Milliseconds per iteration with every chain cut to one step, timed after ``warmup``
    iterations; the device it ran on."""
    model = build_model(recipe, 0)
    for chain in chains_of(model).values():
        inner = getattr(chain, "sampler", chain)  # PersistentChains wraps the sampler that steps
        if hasattr(inner, "n_steps"):
            inner.n_steps = 1
    shape = observation_shape(model)
    clock: dict[str, Any] = {}

    class Clock(L.Callback):
        def _sync(self, module: Any) -> None:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if index == warmup:
                self._sync(module)
                clock["start"] = time.perf_counter()
                clock["device"] = describe_device(module.device)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self._sync(module)
            clock["end"] = time.perf_counter()

    n = batch_size * (warmup + iters)
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=batch_size)
    trainer = bare_trainer(
        max_epochs=1, accelerator=accelerator, devices=1, log_every_n_steps=log_every, callbacks=[Clock()]
    )
    trainer.fit(model, data)
    return (clock["end"] - clock["start"]) / iters * 1e3, clock["device"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=WARMUP, help="iterations before each timing")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--counts-only", action="store_true", help="the operation counts alone, no timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)

    ends = count_ops(recipe, batch_size, args.accelerator, "ends")
    every = count_ops(recipe, batch_size, args.accelerator, True)
    recorded = count_outside_graphs(recipe, batch_size)
    result: dict[str, Any] = {
        "recipe": args.recipe,
        "batch_size": batch_size,
        "ops_outside_graphs": recorded["ops_outside_graphs"],
        "recorded_iterations": {"every_counted_iteration_replayed": recorded["recorded"], **recorded["recorder"]},
        "ops_outside_chains": ends["outside"],
        "ops_per_chain_step": {"ends": ends["per_step"], "every_step": every["per_step"]},
    }
    timings: dict[str, list[float]] = {"cadence": [], "every_step": []}
    for _ in range(0 if args.counts_only else args.repeats):
        for name, log_every in (("cadence", 50), ("every_step", 1)):
            ms, device = remainder_ms(recipe, batch_size, args.accelerator, log_every, args.iters, args.warmup)
            timings[name].append(ms)
            result["device"] = device
    if not args.counts_only:
        result["remainder_ms"] = {name: round(statistics.median(values), 3) for name, values in timings.items()}
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["torch"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
