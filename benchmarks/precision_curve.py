"""A short training curve under two precisions, from the same initial weights and random streams.

    LEBM_DATA=../shared/data python benchmarks/precision_curve.py --recipe recipes/latent_ebm/svhn.yaml \
        --data recipes/data/mnist_offline.yaml --iters 100 [--precisions 32-true,bf16-mixed]

Builds the recipe's model and datamodule (real data: set ``LEBM_DATA``; ``--data`` swaps in
another data fragment at the recipe's image size and channels, e.g. the offline MNIST digits as
32x32x3 images for the SVHN-shaped recipe, whose data is not available offline), trains ``--iters``
iterations once per precision (same seed, same initial state dict) and records every logged
training scalar at every iteration. Prints one JSON line: per precision the seconds per
iteration and the mean of each scalar over the first and the last ``--window`` iterations, and per
scalar the largest difference between the precisions' window means. Nothing is tested: this
shows what bf16 autocast does to a curve that fp32 draws.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import lightning as L
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import bare_trainer  # noqa: E402

from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402


class ScalarRecorder(L.Callback):
    """Every training scalar the method logged, at every iteration, and the iteration times."""

    def __init__(self, iters: int) -> None:
        self.iters = iters
        self.rows: list[dict[str, float]] = []
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)
        self.rows.append(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and v.numel() == 1}
        )
        if len(self.times) >= self.iters:
            trainer.should_stop = True  # over as many epochs as it takes


def train(
    recipe: dict[str, Any], initial: dict[str, torch.Tensor], precision: str, iters: int, seed: int
) -> ScalarRecorder:
    L.seed_everything(seed, verbose=False)
    model = build(recipe["model"])
    model.load_state_dict(initial)
    recorder = ScalarRecorder(iters)
    bare_trainer(
        max_epochs=-1,  # the recorder stops after `iters` batches
        accelerator="auto",
        devices=1,
        precision=precision,
        callbacks=[recorder],
    ).fit(model, build(recipe["data"]))
    return recorder


def window_means(rows: list[dict[str, float]], window: int) -> dict[str, dict[str, float]]:
    names = sorted(set().union(*rows))
    return {
        name: {
            "first": statistics.fmean(row[name] for row in rows[:window] if name in row),
            "last": statistics.fmean(row[name] for row in rows[-window:] if name in row),
        }
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="a data fragment to train on instead of the recipe's data")
    args = parser.parse_args()
    recipe = resolve_recipe(args.recipe)
    if args.data:
        shape = {key: recipe["data"]["init_args"][key] for key in ("image_size", "channels")}
        recipe["data"] = resolve_recipe(args.data)["data"]
        recipe["data"]["init_args"].update(shape)
    torch.manual_seed(args.seed)
    initial = build(recipe["model"]).state_dict()
    result: dict[str, Any] = {
        "recipe": args.recipe,
        "data": args.data,
        "iters": args.iters,
        "window": args.window,
        "runs": {},
    }
    for precision in args.precisions.split(","):
        recorder = train(recipe, initial, precision, args.iters, args.seed)
        result["runs"][precision] = {
            "sec_per_iter": round(statistics.median(recorder.times[min(2, len(recorder.times) - 1) :]), 4),
            "scalars": window_means(recorder.rows, args.window),
        }
    runs = list(result["runs"].values())
    if len(runs) == 2:
        result["largest_window_difference"] = {
            name: max(abs(runs[0]["scalars"][name][w] - runs[1]["scalars"][name][w]) for w in ("first", "last"))
            for name in runs[0]["scalars"]
            if name in runs[1]["scalars"]
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
