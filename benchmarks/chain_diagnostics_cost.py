"""What ``ChainDiagnostics`` costs against training, at its default schedule, on a recipe's model.

    python benchmarks/chain_diagnostics_cost.py --recipe recipes/quickstart.yaml [--epochs 10] [--evaluations 2]
        [--batches N] [--n-draws N]

Builds the recipe's model and data and trains ``--epochs`` epochs with a bare Trainer (no
validation, logger, checkpoints or image grids: the denominator is training alone, so the share
is an upper bound for a real run, which spends more per epoch) and a ``ChainDiagnostics`` with
its default settings (chains, draws, groups) that evaluates ``--evaluations`` times during those
epochs (``every_n_epochs = epochs // evaluations``). A timer placed before the callback reads
each epoch's training seconds; the callback's own records give the seconds of each evaluation.

The cost at the default schedule is projected over the recipe's ``max_epochs``: the evaluations
the default ``every_n_epochs`` makes (one per ``every_n_epochs`` epochs, plus one at the end of
training when the last epoch is not one of them) times the median evaluation, over ``max_epochs``
times the median epoch. Prints one JSON line.

Smaller runs for a test of the script's structure (the figures then describe that smaller run):
``--batches N`` trains on the first ``N`` batches of each epoch (``limit_train_batches``; default
every batch) and ``--n-draws N`` gives the callback ``N`` draws per chain (default its own, 50; the
JSON's ``settings`` say which).
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from typing import Any

import lightning as L
import torch
from common import bare_trainer, describe_device, load_recipe

from lebm.callbacks import ChainDiagnostics
from lebm.config import build


class EpochTimer(L.Callback):
    """Seconds from each training epoch's start to its end hook (placed before the diagnostics,
    whose work in the same hook is then not counted)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds.append(time.perf_counter() - self._start)


def default_every_n_epochs() -> int | None:
    """``ChainDiagnostics``' default schedule."""
    return inspect.signature(ChainDiagnostics).parameters["every_n_epochs"].default


def evaluations_per_run(max_epochs: int, every_n_epochs: int | None, at_train_end: bool = True) -> int:
    """How many times the callback runs in a fit of ``max_epochs`` epochs."""
    scheduled = 0 if every_n_epochs is None else max_epochs // every_n_epochs
    last_scheduled = every_n_epochs is not None and max_epochs % every_n_epochs == 0
    return scheduled + int(at_train_end and not last_scheduled)


def steps(sampler: Any) -> int | None:
    inner = getattr(sampler, "sampler", sampler)  # persistent chains run a sampler
    return getattr(inner, "n_steps", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=10, help="epochs trained and timed")
    parser.add_argument("--evaluations", type=int, default=2, help="diagnostics runs during those epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the recipes' CPUThreads: 1)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--batches", type=int, default=None, help="training batches per epoch (default: all)")
    parser.add_argument("--n-draws", type=int, default=None, help="draws per chain (default: the callback's)")
    args = parser.parse_args()
    if args.evaluations < 1 or args.epochs < args.evaluations:
        parser.error("need 1 <= --evaluations <= --epochs")
    sizes = {} if args.n_draws is None else {"n_draws": args.n_draws}
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    L.seed_everything(int(recipe.get("seed_everything") or 0), verbose=False)
    model = build(recipe["model"])
    data = build(recipe["data"])
    timer = EpochTimer()
    diagnostics = ChainDiagnostics(
        every_n_epochs=args.epochs // args.evaluations, at_train_end=False, plot=True, **sizes
    )
    device: list[torch.device] = []
    with tempfile.TemporaryDirectory(prefix="chain-diagnostics-") as folder:  # the plot and diagnostics.jsonl
        trainer = bare_trainer(
            max_epochs=args.epochs,
            limit_train_batches=args.batches,
            accelerator=args.accelerator,
            callbacks=[_DeviceProbe(device), timer, diagnostics],
            default_root_dir=folder,
        )
        start = time.perf_counter()
        trainer.fit(model, data)
        fit_seconds = time.perf_counter() - start

    epoch = statistics.median(timer.seconds[1:] or timer.seconds)  # the first epoch warms up
    evaluation = statistics.median(record["seconds"] for record in diagnostics.history)
    max_epochs = int(recipe["trainer"].get("max_epochs") or args.epochs)
    every = default_every_n_epochs()
    runs = evaluations_per_run(max_epochs, every)
    result = {
        "benchmark": "chain_diagnostics_cost",
        "recipe": args.recipe,
        "device": describe_device(device[0] if device else torch.device("cpu")),
        "epochs_timed": args.epochs,
        "sec_per_epoch_training": round(epoch, 4),
        "sec_per_evaluation": round(evaluation, 4),
        "evaluation_seconds": [round(record["seconds"], 4) for record in diagnostics.history],
        "evaluation_over_epoch": round(evaluation / epoch, 3),
        "settings": {
            "n_chains": diagnostics.n_chains,
            "n_draws": diagnostics.n_draws,
            "n_groups": diagnostics.n_groups,
            "posterior_examples": diagnostics.posterior_examples,
            "prior_steps_per_draw": steps(getattr(model.prior, "sampler", None)),
            "posterior_steps_per_draw": steps(getattr(model, "posterior_sampler", None)),
        },
        "default_every_n_epochs": every,
        "max_epochs": max_epochs,
        "evaluations_per_run": runs,
        "cost_share_at_default_schedule": round(runs * evaluation / (max_epochs * epoch), 4),
        "cost_share_this_run": round(sum(r["seconds"] for r in diagnostics.history) / fit_seconds, 4),
        "fit_seconds_this_run": round(fit_seconds, 2),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


class _DeviceProbe(L.Callback):
    """Reads the device the training ran on (Lightning moves the model back to the CPU after fit)."""

    def __init__(self, found: list[torch.device]) -> None:
        self.found = found

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.found.append(pl_module.device)


if __name__ == "__main__":
    main()
