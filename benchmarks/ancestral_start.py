"""What one start of DAMC's amortizer costs: the ancestral sampler of a batch, eager and captured.

    python benchmarks/ancestral_start.py [--recipes recipes/damc/mnist_anomaly_offline.yaml,recipes/damc/svhn.yaml]
        [--iters 5] [--batch-size N] [--accelerator cpu|gpu|auto] [--threads N] [--precision 32-true|bf16-mixed]

For each recipe, its model's amortizer ``Q`` starts one batch of chains conditioned on random
observations of the recipe's shape (``Q.start(n, context=x, generator=stream)``, what every training
iteration runs through the EMA copy), the median over ``--iters`` calls after two warm-up calls:

- ``eager_sec``: with whole-chain capture off (every reverse step launched from Python);
- ``captured_sec`` (CUDA only; null elsewhere): with capture on, the start replayed as one graph
  recorded in the warm-up calls, and ``captured_vs_eager`` (eager over captured);
- ``sec_per_step``: the eager start over its ``sampling_steps``.

Prints one JSON line with the device, torch, the thread count and the machine's load average
before and after (``os.getloadavg()``: on a shared machine the seconds grow with it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import describe_device, load_recipe, run_facts, timed  # noqa: E402
from train_step import observation_shape  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.recording import chain_capture, chain_graphs  # noqa: E402

DEFAULT_RECIPES = ("recipes/damc/mnist_anomaly_offline.yaml", "recipes/damc/svhn.yaml")
#: Calls before timing: the first records the captured start, the second replays it once.
WARMUP_CALLS = 2


def time_start(amortizer: Any, x: torch.Tensor, device: torch.device, iters: int, capture: bool) -> float:
    """The median seconds of ``amortizer.start`` on ``x`` over ``iters`` calls after the warm-up."""
    generator = torch.Generator(device).manual_seed(0)

    def work() -> torch.Tensor:
        return amortizer.start(x.shape[0], context=x, generator=generator)

    with chain_capture(capture):
        for _ in range(WARMUP_CALLS):
            timed(device, work)
        return statistics.median(timed(device, work)[1] for _ in range(iters))


def time_recipe(recipe_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """One recipe's start, eager and (on CUDA) captured."""
    recipe = load_recipe(recipe_path)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    torch.manual_seed(0)
    model = build(recipe["model"])
    device = torch.device("cuda" if args.accelerator in ("gpu", "auto") and torch.cuda.is_available() else "cpu")
    amortizer = model.amortizer.to(device).train()
    x = torch.rand(batch_size, *observation_shape(model), device=device) * 2 - 1
    bf16 = args.precision == "bf16-mixed"
    with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        eager = time_start(amortizer, x, device, args.iters, capture=False)
        captured = time_start(amortizer, x, device, args.iters, capture=True) if device.type == "cuda" else None
    return {
        "recipe": recipe_path,
        "device": describe_device(device),
        "batch_size": batch_size,
        "sampling_steps": amortizer.sampling_steps,
        "eager_sec": round(eager, 5),
        "sec_per_step": round(eager / amortizer.sampling_steps, 6),
        "captured_sec": None if captured is None else round(captured, 5),
        "captured_vs_eager": None if captured is None else round(eager / captured, 2),
        "capture_stats": chain_graphs(amortizer).stats(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated DAMC recipes")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="one batch size for all recipes (default: each's)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = [time_recipe(path, args) for path in args.recipes.split(",") if path]
    print(json.dumps({"rows": rows, "iters": args.iters, "precision": args.precision, **run_facts(load_before)}))


if __name__ == "__main__":
    main()
