"""Does an exact sampler help EBM training? ULA against MALA and HMC in the training chains, at equal
wall-clock budgets.

    python experiments/sampler_study.py [--protocol digits|mnist] [--methods latent_ebm hierarchical]
        [--samplers ula mala hmc] [--seeds 0 1] [--budget-fraction 1.0]

Each arm replaces every training chain of a method's recipe (the prior's and, where the method has
one, the posterior's) by one sampler family, with the recipe's steps and step size as the start:

- ``ula``: the recipe's unadjusted Langevin ``Langevin(K, s)`` (the papers' chains);
- ``mala``: ``MALA(K, s)`` whose step adapts by dual averaging towards acceptance 0.574 during the
  first ``--adapt-iterations`` training iterations, then stays fixed;
- ``mala_fixed``: ``MALA(K, s)`` without adaptation (only the accept/reject step added to ULA);
- ``hmc``: ``HMC(K / L, s, n_leapfrog=L)`` (the same ``K`` gradients per chain), adapted towards 0.65;
- ``ula_mala_steps``: ``Langevin(K, s')`` at the step sizes ``s'`` the ``mala`` arm's seed-0 run adapted
  each chain to (run it after ``mala``): what of MALA's effect is its step size.

**Equal wall-clock.** The seconds per training iteration of every arm are measured first on this
machine (``--calibration-steps`` iterations of each arm, interleaved, the median after the first
few), then every arm trains for ``budget / seconds_per_iteration`` iterations, where the budget is
what the recipe's own ULA run takes (``--budget-fraction`` of it). The iteration counts are recorded,
so a rerun on another machine trains the same runs whatever its load.

**Protocols.** ``digits``: the methods' 8x8 quickstarts (``recipes/quickstart.yaml``,
``recipes/hierarchical/quickstart.yaml``); ``mnist``: the offline MNIST anomaly protocol for LatentEBM
(``recipes/latent_ebm/mnist_anomaly_offline.yaml``, held-out digit 1, ``--train-subset`` of the
training pool; needs ``LEBM_DATA``).

**What each run gives** (one record per metric in ``docs/results/<method>_sampler_study.json``, the
mean over seeds with each seed's value), all read from the last checkpoint with seeded generators:

- ``pixel_fd`` (digits): Fréchet distance in pixel space between prior samples drawn by the arm's
  own prior chain and the training digits (as ``experiments/quickstart_digits.py``);
- ``test_mse``: per-pixel MSE of reconstructions of the test split through the arm's posterior;
- ``anomaly_auroc_flipped``, ``anomaly_auprc_flipped`` (digits): AUROC and AUPRC of the score
  ``-log p(x, z)`` separating test digits from the same digits upside down; ``auprc``, ``auroc``
  (mnist): the protocol's, for held-out 1;
- ``prior_rhat_energy``, ``prior_ess_energy``, ``posterior_rhat_energy``, ``posterior_ess_energy``:
  split R-hat and bulk ESS of long runs of the arm's own chains at the end of training, and the
  energy's drift along them (``lebm.callbacks.ChainDiagnostics``: 32 chains, 40 draws of one
  training chain each; ``prior_energy_drift``, ``posterior_energy_drift``);
- ``prior_acceptance``, ``posterior_acceptance``: the chains' mean acceptance over the last fifth of
  training (Metropolis-adjusted arms);
- ``nonfinite_rows``: logged training rows with a non-finite loss (divergences), and ``finished``;
- ``prior_step_size``, ``posterior_step_size``: the step each chain ended training with (adapted);
- ``seconds_per_iteration``, ``iterations``.

``--reevaluate`` reads the recorded runs' checkpoints again and replaces those readings.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quickstart_digits import frechet_distance, pixel_stats  # noqa: E402
from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device  # noqa: E402
from script import positive_int, run_main  # noqa: E402

import lebm  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.metrics.ranking import ranking_metrics  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402

EXPERIMENT = "sampler_study"
RECIPES = {
    ("digits", "latent_ebm"): "recipes/quickstart.yaml",
    ("digits", "hierarchical"): "recipes/hierarchical/quickstart.yaml",
    ("mnist", "latent_ebm"): "recipes/latent_ebm/mnist_anomaly_offline.yaml",
}
N_LEAPFROG = 5
FIGURE = REPO / "docs" / "images" / "sampler_study.png"
DIAGNOSTICS = [
    "--trainer.callbacks+=lebm.callbacks.ChainDiagnostics",
    "--trainer.callbacks.every_n_epochs",
    "null",
    "--trainer.callbacks.n_chains",
    "32",
    "--trainer.callbacks.n_draws",
    "40",
    "--trainer.callbacks.plot",
    "false",
    "--trainer.callbacks.at_test",
    "false",
]


# ---------------------------------------------------------------------------------------------
# the arms


def chain_paths(config: dict) -> dict[str, list[str]]:
    """Where the recipe's training chains sit in its config: ``{"prior": [...keys], "posterior": [...]}``."""
    init = config["model"]["init_args"]
    paths = {"prior": ["model", "init_args", "prior", "init_args", "sampler"]}
    if isinstance(init.get("posterior_sampler"), dict):
        paths["posterior"] = ["model", "init_args", "posterior_sampler"]
    return paths


def at(config: dict, keys: list[str]) -> Any:
    for key in keys:
        config = config[key]
    return config


def arm_sampler(arm: str, n_steps: int, step_size: float, adapt_iterations: int) -> dict:
    """The sampler of ``arm`` replacing a ``Langevin(n_steps, step_size)`` chain (a config dict)."""
    if arm == "ula":
        return {"class_path": "lebm.samplers.Langevin", "init_args": {"n_steps": n_steps, "step_size": step_size}}
    if arm in ("mala", "mala_fixed"):
        adapt = n_steps * adapt_iterations if arm == "mala" else 0
        return {
            "class_path": "lebm.samplers.MALA",
            "init_args": {"n_steps": n_steps, "step_size": step_size, "adapt_steps": adapt},
        }
    if arm == "hmc":
        transitions = max(1, n_steps // N_LEAPFROG)
        return {
            "class_path": "lebm.samplers.HMC",
            "init_args": {
                "n_steps": transitions,
                "step_size": step_size,
                "n_leapfrog": N_LEAPFROG,
                "adapt_steps": transitions * adapt_iterations,
            },
        }
    raise ValueError(f"unknown arm {arm!r}: ula, mala, mala_fixed, hmc or ula_mala_steps")


def mala_step_sizes(protocol: str, method: str) -> dict[str, float]:
    """The step sizes the ``mala`` arm's seed-0 run adapted its chains to (``{"prior": s, ...}``)."""
    run = REPO / "runs" / EXPERIMENT / protocol / method / "mala" / "seed0"
    model = lebm.load(str(newest_last_checkpoint(run)), map_location="cpu")
    return {name.removesuffix("_step_size"): value for name, value in step_sizes(model).items()}


def arm_fragment(
    config: dict, arm: str, adapt_iterations: int, tuned: dict[str, float] | None = None
) -> tuple[dict, dict[str, dict]]:
    """A recipe fragment putting ``arm``'s samplers in every training chain, and those samplers
    (``ula_mala_steps``: ULA at the step sizes ``tuned`` of each chain)."""
    fragment: dict = {}
    samplers = {}
    for chain, keys in chain_paths(config).items():
        settings = at(config, keys)["init_args"]
        step = float(settings["step_size"])
        if arm == "ula_mala_steps":
            arm_name, step = "ula", round((tuned or {})[chain], 4)
        else:
            arm_name = arm
        sampler = arm_sampler(arm_name, int(settings["n_steps"]), step, adapt_iterations)
        samplers[chain] = sampler
        node = fragment
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = sampler
    return fragment, samplers


# ---------------------------------------------------------------------------------------------
# equal wall-clock


class BatchTimer(L.Callback):
    """Seconds of each training batch (optimiser steps and chains included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def time_iterations(recipe: str, fragment: Path, extra: list[str], steps: int, folder: Path) -> list[float]:
    """Seconds per training iteration of ``recipe`` with ``fragment``, ``steps`` iterations in process."""
    built = lebm.from_recipe(
        recipe,
        [
            "-c",
            str(fragment),
            *extra,
            "--trainer.max_steps",
            str(steps),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(folder),
        ],
    )
    timer = BatchTimer()
    settings = {**built.trainer_settings, "enable_model_summary": False}
    trainer = L.Trainer(**settings, callbacks=[timer])
    trainer.fit(built.model, datamodule=built.datamodule)
    return timer.seconds


def calibrate(
    recipe: str, fragments: dict[str, Path], extra: list[str], steps: int, rounds: int, folder: Path
) -> dict[str, float]:
    """The median seconds per iteration of each arm, timed in ``rounds`` interleaved rounds."""
    found: dict[str, list[float]] = {arm: [] for arm in fragments}
    for round_index in range(rounds):
        for arm, fragment in fragments.items():
            seconds = time_iterations(recipe, fragment, extra, steps, folder / f"{arm}_{round_index}")
            found[arm] += seconds[3:]
            print(
                f"calibration {arm} round {round_index}: {statistics.median(seconds[3:]):.4f} s/iteration", flush=True
            )
    return {arm: statistics.median(values) for arm, values in found.items()}


# ---------------------------------------------------------------------------------------------
# training and evaluation


def fit(recipe: str, fragment: Path, extra: list[str], iterations: int, seed: int, run: Path) -> tuple[bool, float]:
    command = [
        "lebm",
        "fit",
        "-c",
        recipe,
        "-c",
        str(fragment),
        *extra,
        "--trainer.max_steps",
        str(iterations),
        "--trainer.max_epochs",
        "100000",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        str(run),
        "--ckpt_path",
        "auto",
        *DIAGNOSTICS,
        *EPOCH_LINES,
    ]
    print("+", shlex.join(command), flush=True)
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO).returncode == 0
    return finished, time.perf_counter() - start


def metrics_rows(run: Path) -> list[dict[str, str]]:
    table = run / "metrics.csv"
    if not table.exists():
        return []
    with table.open() as handle:
        return list(csv.DictReader(handle))


def training_statistics(run: Path) -> dict[str, float]:
    """Acceptance over the last fifth of training and the rows with a non-finite training loss."""
    rows = [row for row in metrics_rows(run) if any(row.get(k) for k in row if k.startswith("train/"))]
    found: dict[str, float] = {}
    if not rows:
        return found
    tail = rows[-max(1, len(rows) // 5) :]
    for column in rows[0]:
        if column.startswith("train/") and column.endswith("_acceptance"):
            values = [float(row[column]) for row in tail if row.get(column)]
            if values:
                chain = column.removeprefix("train/").removesuffix("_acceptance")
                found[f"{chain}_acceptance"] = float(np.mean(values))
    losses = [k for k in rows[0] if k.startswith("train/") and ("loss" in k or "nll" in k)]
    found["nonfinite_rows"] = float(
        sum(any(row.get(k) and not math.isfinite(float(row[k])) for k in losses) for row in rows)
    )
    return found


def diagnostics(run: Path) -> dict[str, float]:
    """R-hat and ESS of the energy from the run's last ``diagnostics.jsonl`` line."""
    lines = (run / "diagnostics.jsonl").read_text().splitlines() if (run / "diagnostics.jsonl").exists() else []
    if not lines:
        return {}
    stats = json.loads(lines[-1])
    names = ("rhat_energy", "ess_energy", "energy_drift")
    keys = [f"{part}_{name}" for part in ("prior", "posterior") for name in names]
    return {key: float(stats[key]) for key in keys if key in stats and stats[key] is not None}


def step_sizes(model) -> dict[str, float]:
    """The step size each training chain ended with: the adapted one of MALA and HMC, else its own."""
    chains = {"prior": getattr(model.prior, "sampler", None), "posterior": getattr(model, "posterior_sampler", None)}
    found = {}
    for chain, sampler in chains.items():
        adapted = getattr(sampler, "adapted_step_size", None) if getattr(sampler, "adapt_steps", 0) else None
        if adapted is not None:
            found[f"{chain}_step_size"] = float(adapted.float().median())
        elif isinstance(getattr(sampler, "step_size", None), (int, float)):
            found[f"{chain}_step_size"] = float(sampler.step_size)
    return found


def evaluate_digits(model, recipe: str) -> dict[str, float]:
    data = build(resolve_recipe(REPO / recipe)["data"])
    data.setup("fit")
    data.setup("test")
    training = torch.cat([batch_observations(b) for b in data.train_dataloader()])
    test = torch.cat([batch_observations(b) for b in data.test_dataloader()])
    generator = torch.Generator().manual_seed(0)
    samples = model.generate(len(training), generator=generator).cpu()
    found = {"pixel_fd": frechet_distance(*pixel_stats(samples), *pixel_stats(training))}
    found["test_mse"] = float(((model.reconstruct(test, generator=generator) - test) ** 2).mean())
    scores = model.score(test, generator=generator).detach().double().numpy()
    flipped = model.score(test.flip(-2), generator=generator).detach().double().numpy()
    auprc, auroc = ranking_metrics(np.r_[scores, flipped], np.r_[np.zeros(len(scores)), np.ones(len(flipped))])
    found["anomaly_auroc_flipped"] = float(auroc)
    found["anomaly_auprc_flipped"] = float(auprc)
    return found


def evaluate_mnist(model, run: Path) -> dict[str, float]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = build(config["data"])
    data.setup("test")
    generator = torch.Generator().manual_seed(0)
    scores, truth, errors = [], [], []
    for batch in data.test_dataloader():
        x = batch_observations(batch)
        scores.append(model.score(x, generator=generator).detach().double())
        truth.append(torch.isin(batch[1], torch.tensor(list(data.anomaly_classes))))
        errors.append(((model.reconstruct(x, generator=generator) - x) ** 2).flatten(1).mean(1))
    auprc, auroc = ranking_metrics(torch.cat(scores).numpy(), torch.cat(truth).double().numpy())
    return {"auprc": float(auprc), "auroc": float(auroc), "test_mse": float(torch.cat(errors).mean())}


def run_arm(
    args, protocol: str, method: str, recipe: str, arm: str, fragment: Path, iterations: int, seed: int
) -> dict:
    run = REPO / "runs" / EXPERIMENT / protocol / method / arm / f"seed{seed}"
    extra = protocol_options(protocol, args)
    finished, seconds = fit(recipe, fragment, extra, iterations, seed, run)
    found: dict[str, float] = {"finished": float(finished), "fit_seconds": seconds}
    found |= training_statistics(run) | diagnostics(run)
    if finished:
        L.seed_everything(seed, verbose=False)
        model = lebm.load(str(newest_last_checkpoint(run)), map_location="cpu")
        model.eval()
        found |= step_sizes(model)
        found |= evaluate_digits(model, recipe) if protocol == "digits" else evaluate_mnist(model, run)
    print(f"{protocol} {method} {arm} seed {seed}: {json.dumps(found)}", flush=True)
    return found


def protocol_options(protocol: str, args) -> list[str]:
    if protocol == "digits":
        return []
    root = os.path.join(os.environ["LEBM_DATA"], "mnist")
    return [
        "--data.init_args.root",
        root,
        "--data.init_args.anomaly_classes",
        "[1]",
        "--data.init_args.train_subset",
        str(args.train_subset),
    ]


def budget_iterations(recipe: str, protocol: str, args) -> int:
    """The iterations of the recipe's own (ULA) run: its epochs times its training batches."""
    built = lebm.from_recipe(recipe, protocol_options(protocol, args))
    built.datamodule.setup("fit")
    batches = len(built.datamodule.train_dataloader())
    epochs = args.epochs or built.trainer_settings["max_epochs"]
    return int(epochs * batches * args.budget_fraction)


def records_of(
    method: str, protocol: str, arm: str, samplers: dict, results: dict[int, dict], meta: dict
) -> list[dict]:
    records = []
    names = sorted({name for found in results.values() for name in found})
    for name in names:
        values = [found[name] for found in results.values() if name in found and math.isfinite(found[name])]
        if not values:
            continue
        records.append(
            {
                "method": method,
                "experiment": EXPERIMENT,
                "protocol": protocol,
                "setting": f"{protocol}: {arm}",
                "sampler": arm,
                "samplers": samplers,
                "metric": name,
                "value": round(float(np.mean(values)), 4),
                "std": round(float(np.std(values)), 4) if len(values) > 1 else None,
                "by_seed": {str(seed): round(found[name], 4) for seed, found in results.items() if name in found},
                **meta,
            }
        )
    return records


def save(output: Path, new: list[dict]) -> None:
    """Replace the records of the same protocol, method and sampler in ``output`` by ``new``."""
    keys = {(r["protocol"], r["method"], r["sampler"]) for r in new}
    old = json.loads(output.read_text()) if output.exists() else []
    kept = [r for r in old if (r.get("protocol"), r.get("method"), r.get("sampler")) not in keys]
    output.write_text(json.dumps([stamped(r) for r in kept + new], indent=1) + "\n")


PANELS = {
    "digits": ["pixel_fd", "test_mse", "anomaly_auroc_flipped", "posterior_rhat_energy", "prior_rhat_energy"],
    "mnist": ["auprc", "test_mse", "auroc", "posterior_rhat_energy", "prior_rhat_energy"],
}
LABELS = {
    "pixel_fd": "pixel FD (lower is better)",
    "test_mse": "test MSE (lower is better)",
    "anomaly_auroc_flipped": "AUROC, upside-down digits",
    "auprc": "AUPRC, held-out 1",
    "auroc": "AUROC, held-out 1",
    "prior_rhat_energy": "prior chains: R-hat of U(z)",
    "posterior_rhat_energy": "posterior chains: R-hat",
    "prior_energy_drift": "prior chains: energy drift",
}


def cut_off_outlier(axes, means: dict[int, float]) -> None:  # type: ignore[no-untyped-def]
    """When one bar is over four times the next highest (a diverged arm), end the axis above the
    others and write the outlier's value at its top."""
    ordered = sorted(means.items(), key=lambda item: item[1], reverse=True)
    if len(ordered) < 2 or ordered[1][1] <= 0 or ordered[0][1] <= 4 * ordered[1][1]:
        return
    top = 1.6 * ordered[1][1]
    axes.set_ylim(0, top)
    axes.text(ordered[0][0], 0.92 * top, f"{ordered[0][1]:.3g}", ha="center", fontsize=7)


def plot(records: list[dict], path: Path) -> None:
    """One row of panels per protocol and method, one panel per metric of :data:`PANELS`: each
    seed's value as a dot, the mean as a bar, per sampler."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = sorted({(r["protocol"], r["method"]) for r in records})
    columns = max(len(PANELS[protocol]) for protocol, _ in groups)
    figure = Figure(figsize=(3.0 * columns, 2.6 * len(groups)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(groups), columns, squeeze=False)
    for row, (protocol, method) in enumerate(groups):
        mine = [r for r in records if (r["protocol"], r["method"]) == (protocol, method)]
        arms = list(dict.fromkeys(r["sampler"] for r in mine))
        for column, metric in enumerate(PANELS[protocol]):
            axes = grid[row][column]
            means = {}
            for index, arm in enumerate(arms):
                found = [r for r in mine if r["sampler"] == arm and r["metric"] == metric]
                if not found:
                    continue
                means[index] = found[0]["value"]
                axes.bar(index, found[0]["value"], color=f"C{index}", alpha=0.35)
                seeds = list(found[0]["by_seed"].values())
                axes.plot([index] * len(seeds), seeds, "o", color=f"C{index}", markersize=4)
            cut_off_outlier(axes, means)
            if not means:
                note = "no such chain (an encoder\ninfers the latents)"
                axes.text(0.5, 0.5, note, ha="center", transform=axes.transAxes)
                axes.set_yticks([])
            axes.set_xticks(range(len(arms)), arms)
            axes.set_title(f"{method}, {protocol}: {LABELS[metric]}" if column == 0 else LABELS[metric], fontsize=8)
            axes.tick_params(labelsize=7)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--samplers", nargs="+", default=["ula", "mala", "hmc"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budget-fraction", type=float, default=1.0)
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="the ULA budget in epochs (default: the recipe's)"
    )
    parser.add_argument("--adapt-iterations", type=int, default=100)
    parser.add_argument("--calibration-steps", type=int, default=15)
    parser.add_argument("--calibration-rounds", type=int, default=2)
    parser.add_argument("--train-subset", type=float, default=0.25, help="mnist: share of the training pool")
    parser.add_argument("--plot-only", action="store_true", help=f"only redraw {FIGURE.relative_to(REPO)}")
    parser.add_argument("--reevaluate", action="store_true", help="read the recorded runs' checkpoints again")
    args = parser.parse_args()
    if args.plot_only:
        return plot(all_records(), FIGURE)
    if args.reevaluate:
        return reevaluate(args.methods)
    methods = args.methods or [m for (p, m) in RECIPES if p == args.protocol]
    for method in methods:
        recipe = RECIPES[(args.protocol, method)]
        config = resolve_recipe(REPO / recipe)
        folder = REPO / "runs" / EXPERIMENT / args.protocol / method
        folder.mkdir(parents=True, exist_ok=True)
        fragments, samplers = {}, {}
        tuned = mala_step_sizes(args.protocol, method) if "ula_mala_steps" in args.samplers else None
        for arm in args.samplers:
            fragment, samplers[arm] = arm_fragment(config, arm, args.adapt_iterations, tuned)
            fragments[arm] = folder / f"{arm}.yaml"
            fragments[arm].write_text(yaml.safe_dump(fragment, sort_keys=False))
        extra = protocol_options(args.protocol, args)
        per_iteration = calibrate(
            recipe, fragments, extra, args.calibration_steps, args.calibration_rounds, folder / "calibration"
        )
        budget_steps = budget_iterations(recipe, args.protocol, args)
        reference = per_iteration.get("ula", min(per_iteration.values()))
        budget_seconds = budget_steps * reference
        print(f"{method}: budget {budget_steps} ULA iterations = {budget_seconds:.0f} s; {per_iteration}", flush=True)
        command = shlex.join(["python", "experiments/sampler_study.py", *sys.argv[1:]])
        output = REPO / "docs" / "results" / f"{method}_{EXPERIMENT}.json"
        for arm in args.samplers:
            iterations = max(1, round(budget_seconds / per_iteration[arm]))
            results = {
                seed: run_arm(args, args.protocol, method, recipe, arm, fragments[arm], iterations, seed)
                | {"seconds_per_iteration": per_iteration[arm], "iterations": float(iterations)}
                for seed in args.seeds
            }
            meta = {
                "budget": f"{budget_seconds:.0f} s of training on this machine: {budget_steps} iterations of ULA "
                f"({args.budget_fraction:g} of {recipe}'s run); this arm {iterations} iterations",
                "recipe": recipe,
                "figure": str(FIGURE.relative_to(REPO / "docs")),
                "command": command,
                "device": this_device(),
                "date": datetime.date.today().isoformat(),
            }
            save(output, records_of(type_name(config), args.protocol, arm, samplers[arm], results, meta))
    plot(all_records(), FIGURE)
    render_results_md()


def reevaluate(methods: list[str] | None = None) -> None:
    """Read every recorded run's last checkpoint again (no training) and replace its evaluation
    records (those of :func:`evaluate_digits`/:func:`evaluate_mnist` and :func:`step_sizes`),
    keeping the training statistics, budget and iteration counts."""
    for path in sorted((REPO / "docs" / "results").glob(f"*_{EXPERIMENT}.json")):
        method = path.name.removesuffix(f"_{EXPERIMENT}.json")
        if methods and method not in methods:
            continue
        records = json.loads(path.read_text())
        arms = {(r["protocol"], r["sampler"]): r for r in records}
        kept = list(records)
        for (protocol, arm), template in arms.items():
            recipe = template["recipe"]
            by_seed: dict[int, dict] = {}
            for seed in template["by_seed"]:
                run = REPO / "runs" / EXPERIMENT / protocol / method / arm / f"seed{seed}"
                L.seed_everything(int(seed), verbose=False)
                model = lebm.load(str(newest_last_checkpoint(run)), map_location="cpu")
                model.eval()
                found = step_sizes(model)
                found |= evaluate_digits(model, recipe) if protocol == "digits" else evaluate_mnist(model, run)
                by_seed[int(seed)] = found
                print(f"{protocol} {method} {arm} seed {seed}: {json.dumps(found)}", flush=True)
            names = {name for found in by_seed.values() for name in found}
            kept = [r for r in kept if not ((r["protocol"], r["sampler"]) == (protocol, arm) and r["metric"] in names)]
            meta = {k: template[k] for k in ("budget", "recipe", "command", "device", "date") if k in template}
            meta["figure"] = str(FIGURE.relative_to(REPO / "docs"))
            kept += records_of(template["method"], protocol, arm, template["samplers"], by_seed, meta)
        path.write_text(json.dumps([stamped(r) for r in kept], indent=1) + "\n")


def all_records() -> list[dict]:
    return [
        r
        for path in sorted((REPO / "docs" / "results").glob(f"*_{EXPERIMENT}.json"))
        for r in json.loads(path.read_text())
    ]


def type_name(config: dict) -> str:
    return config["model"]["class_path"].rsplit(".", 1)[-1]


if __name__ == "__main__":
    run_main(main)
