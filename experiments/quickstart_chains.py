"""The quickstart's sample grids: the prior's training chain against shorter and longer chains.

    python experiments/quickstart_chains.py [--run runs/quickstart_chains] [--seeds 0 1 2 3 4]

Trains the LatentEBM quickstart once (``lebm fit -c quickstart`` into ``runs/quickstart_chains``, with
a second ``ModelCheckpoint`` that keeps epochs 25, 50, 75 and 100: the recipe keeps only the newest),
unless ``--run`` names a folder whose checkpoints are there. Then, from the last checkpoint, for each
setting of a grid of Langevin chains (steps x step size; the training chain is the official LEBM SVHN
setting, 60 steps of 0.4: Pang et al., NeurIPS 2020, arXiv 2006.08205, ``train_svhn.py`` of
github.com/bpucla/latent-space-EBM-prior) and each seed, it draws 1,437 samples (as many as there are
training digits) with ``model.generate(n, sampler=Langevin(steps, step_size), generator=...)``, every
setting from the same seeded starts, and records:

- ``pixel_fd`` (the record's value: mean over the seeds, ``std`` their spread): the Fréchet distance
  between the samples and the 1,437 training digits in raw 64-pixel space, as
  ``experiments/quickstart_digits.py`` measures it (lower is better);
- ``mean_energy``: the mean prior energy ``U(z)`` of the chains' ends (the samples are drawn as
  ``generate`` draws them, prior chain then decoder, keeping the latents; checked once per checkpoint
  to equal ``generate``'s);
- ``seconds_per_1000_samples``: CPU seconds (one torch thread, as ``lebm.speed.CPUThreads`` gives the
  quickstart) per 1,000 samples, the median over the seeds: process time, so that other work on a
  shared machine does not count; a wall clock on an idle machine reads about the same;
- ``finite``: whether every chain and sample stayed finite (else ``pixel_fd`` is over the finite
  ones; a setting with fewer than two finite samples gets no record, only a printed line).

The earlier checkpoints get fewer steps (``--early-steps``) at the training step size and at the
step size of the last checkpoint's lowest pixel FD. A reference record: the pixel FD of the training
digits' own reconstructions (posterior chain), what the decoder gives latents inferred from data, about
the best a prior chain can give with this decoder, with the mean prior energy of those posterior
latents. The figure goes to ``docs/images/quickstart_chains.png``, the records to
``docs/results/latent_ebm_quickstart_chains.json``, and ``docs/results.md`` is regenerated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.linalg import LinAlgWarning
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quickstart_digits import frechet_distance, pixel_stats  # noqa: E402
from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device, with_progress  # noqa: E402
from script import run_lebm, run_main  # noqa: E402

import lebm  # noqa: E402
from lebm.callbacks import to_uint8_grid  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.models import LatentEBM  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402
from lebm.models.priors import Prior  # noqa: E402
from lebm.samplers import Langevin  # noqa: E402

EXPERIMENT = "quickstart_chains"
RECIPE = "recipes/quickstart.yaml"
RUN = "runs/quickstart_chains"
OUTPUT = REPO / "docs" / "results" / f"latent_ebm_{EXPERIMENT}.json"
FIGURE = REPO / "docs" / "images" / f"{EXPERIMENT}.png"
#: The prior's training chain (recipes/latent_ebm/_method.yaml: e_l_steps, e_l_step_size) and the
#: steps of SampleGrid's last-epoch grid (recipes/base.yaml).
TRAINING_CHAIN, GRID_LONG_STEPS = (60, 0.4), 200
#: Samples in each of the figure's grids (4 rows of 8, the same starts in each).
GRID_SAMPLES = 32
#: Every how many epochs the extra ModelCheckpoint keeps a checkpoint.
KEEP_EVERY = 25
KEPT_CHECKPOINTS = [
    "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
    "--trainer.callbacks.every_n_epochs",
    str(KEEP_EVERY),
    "--trainer.callbacks.save_top_k",
    "-1",
    "--trainer.callbacks.save_on_train_epoch_end",
    "true",
    "--trainer.callbacks.filename",
    "kept-{epoch}",
]


@dataclass
class Reading:
    """What one chain setting gives at one checkpoint, over the seeds."""

    epoch: int
    steps: int
    step_size: float
    fds: list[float]
    energies: list[float]
    seconds_per_1000: list[float]
    finite: bool

    @property
    def fd(self) -> float:
        return statistics.fmean(self.fds)

    @property
    def fd_std(self) -> float:
        return statistics.stdev(self.fds) if len(self.fds) > 1 else 0.0


def fit_command(run: str) -> list[str]:
    """The ``lebm fit`` of the quickstart this experiment samples (checkpoints kept every 25 epochs)."""
    return [
        "lebm",
        "fit",
        "-c",
        "quickstart",
        "--trainer.default_root_dir",
        run,
        "--overwrite",
        "true",
        *KEPT_CHECKPOINTS,
        *EPOCH_LINES,
    ]


def fit(run: str) -> None:
    """Train the quickstart into ``run``."""
    command = fit_command(run)
    print("+", shlex.join(command), flush=True)
    run_lebm(command)


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{epoch (1-based): checkpoint}``: the kept ones (``kept-epoch=E.ckpt``, E 0-based) and the last."""
    found = {int(path.stem.split("=")[-1]) + 1: path for path in (run_dir / "checkpoints").glob("kept-epoch=*.ckpt")}
    last = newest_last_checkpoint(run_dir)
    epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    return {**found, epoch: last}


def training_digits() -> torch.Tensor:
    """All 1,437 training digits of the quickstart ``(N, 1, 8, 8)`` in [-1, 1], in order (its training
    loader drops the last partial batch)."""
    data = build(resolve_recipe(REPO / RECIPE)["data"])
    data.setup("fit")
    return torch.cat([batch_observations(batch) for batch in DataLoader(data.train_dataset, batch_size=500)])


def chain(steps: int, step_size: float) -> Langevin:
    """``Langevin(steps, step_size)``; 0 steps (the chains' Gaussian starts) without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Langevin(steps, step_size)


def finite_fd(samples: torch.Tensor, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """The pixel FD of the finite samples against ``reference`` (mean, covariance); nan for < 2 of
    them. The digits' covariance is singular (border pixels that are always blank), which scipy's
    matrix square root warns of; the distance is the one ``quickstart_digits.py`` records."""
    flat = samples.flatten(1)
    kept = samples[torch.isfinite(flat).all(1)]
    if len(kept) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        return frechet_distance(*pixel_stats(kept), *reference)


def draw(model: LatentEBM, sampler: Langevin, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(z, samples, CPU seconds)``: what ``model.generate(n, sampler=sampler, generator=seeded)``
    runs (prior chain, then the decoder), keeping the latents for their energy."""
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a chain that leaves the finite numbers is recorded, not warned
        with torch.no_grad(), model.evaluation_statistics():
            z = model.prior.sample(n, sampler=sampler, generator=torch.Generator().manual_seed(seed))
            samples = model.decoder.decode(z)
    return z, samples, time.process_time() - start


def check_generate(model: LatentEBM, n: int, seed: int) -> None:
    """:func:`draw` gives what ``model.generate`` gives, for the training chain."""
    sampler = chain(*TRAINING_CHAIN)
    samples = model.generate(n, sampler=sampler, generator=torch.Generator().manual_seed(seed))
    if not torch.equal(draw(model, sampler, n, seed)[1], samples):
        raise RuntimeError("the samples drawn here differ from model.generate's with the same chain and seed")


def read_setting(
    model: LatentEBM,
    epoch: int,
    steps: int,
    step_size: float,
    seeds: list[int],
    reference: tuple[np.ndarray, np.ndarray],
    n: int,
) -> tuple[Reading, torch.Tensor]:
    """The reading of one chain setting over ``seeds``, and the first seed's samples."""
    fds, energies, seconds, finite, first = [], [], [], True, None
    for seed in seeds:
        z, samples, cpu_seconds = draw(model, chain(steps, step_size), n, seed)
        seconds.append(cpu_seconds / n * 1000)
        finite = finite and bool(torch.isfinite(z).all() and torch.isfinite(samples).all())
        fds.append(finite_fd(samples, reference))
        with torch.no_grad():
            energy = model.prior.energy(z)
        energies.append(float(energy[torch.isfinite(energy)].mean()))
        first = samples if first is None else first
    return Reading(epoch, steps, step_size, fds, energies, seconds, finite), first


@dataclass
class Floor:
    """The training digits' reconstructions: their pixel FD to the digits, and the mean prior energy
    of the posterior latents that decode into them."""

    fd: float
    energy: float


def reconstruction_floor(
    model: LatentEBM, digits: torch.Tensor, reference: tuple[np.ndarray, np.ndarray], seed: int
) -> Floor:
    """What ``model.reconstruct(digits)`` runs (the posterior chain, then the decoder), keeping the
    latents for their energy."""
    torch.manual_seed(seed)
    z = model.infer(digits)
    with torch.no_grad(), model.evaluation_statistics():
        return Floor(finite_fd(model.decoder.decode(z).cpu(), reference), float(model.prior.energy(z).mean()))


def sweep(
    model: LatentEBM, epoch: int, settings: list[tuple[int, float]], seeds: list[int], digits: torch.Tensor
) -> tuple[list[Reading], dict[tuple[int, float], torch.Tensor]]:
    """The readings of ``settings`` at one checkpoint, and each setting's first-seed samples."""
    reference = pixel_stats(digits)
    check_generate(model, len(digits), seeds[0])
    readings, samples = [], {}
    for steps, size in with_progress(settings, f"epoch {epoch}: chain setting"):
        reading, first = read_setting(model, epoch, steps, size, seeds, reference, len(digits))
        readings.append(reading)
        samples[(steps, size)] = first
        energy = statistics.fmean(reading.energies)
        print(
            f"epoch {epoch}: {steps} x {size}: pixel FD {reading.fd:.3f} ± {reading.fd_std:.3f}, "
            f"U(z) {energy:.2f}, {statistics.median(reading.seconds_per_1000):.2f} s/1000, finite {reading.finite}",
            flush=True,
        )
    return readings, samples


def grid_settings(steps: list[int], sizes: list[float]) -> list[tuple[int, float]]:
    """Every (steps, size), with 0 steps once (the starts do not depend on the size)."""
    settings = [(0, sizes[0])] if 0 in steps else []
    return settings + [(k, s) for s in sizes for k in steps if k > 0]


def best(readings: list[Reading]) -> Reading:
    """The finite reading of lowest mean pixel FD."""
    return min((r for r in readings if r.finite), key=lambda r: r.fd)


def label(steps: int, size: float) -> str:
    """``"60 x 0.4"``, or ``"0 steps"`` for the chains' starts."""
    return "0 steps" if steps == 0 else f"{steps} x {size:g}"


def setting_text(reading: Reading) -> str:
    """The record's setting; steps padded with spaces, so the results page lists them in order."""
    chain_text = (
        "0 steps (the N(0, 1) starts)" if reading.steps == 0 else f"Langevin {reading.steps:>4} x {reading.step_size:g}"
    )
    note = " (training chain)" if (reading.steps, reading.step_size) == TRAINING_CHAIN else ""
    return f"epoch {reading.epoch:>3}, {chain_text}{note}"


def records(readings: list[Reading], floor: Floor, command: str, seeds: list[int], n: int) -> list[dict]:
    """The JSON records: a ``pixel_fd`` record per reading, then the reconstructions' reference."""
    common = {
        "method": "LatentEBM",
        "experiment": EXPERIMENT,
        "metric": "pixel_fd",
        "budget": f"quickstart (100 epochs); {n:,} samples, seeds {' '.join(map(str, seeds))}",
        "command": command,
        "fit_command": shlex.join(fit_command(RUN)),
        "device": this_device(),
        "date": datetime.date.today().isoformat(),
    }
    rows = [
        {
            **common,
            "setting": setting_text(r),
            "value": round(r.fd, 4),
            "std": round(r.fd_std, 4),
            "epoch": r.epoch,
            "n_steps": r.steps,
            "step_size": r.step_size if r.steps else None,
            "mean_energy": round(statistics.fmean(r.energies), 4),
            "seconds_per_1000_samples": round(statistics.median(r.seconds_per_1000), 4),
            "finite": r.finite,
            "pixel_fd_by_seed": [round(v, 4) for v in r.fds],
        }
        for r in readings
        if not math.isnan(r.fd)
    ]
    for r in readings:
        if math.isnan(r.fd):
            print(f"epoch {r.epoch}: {label(r.steps, r.step_size)} left the finite numbers: no record", flush=True)
    last = max(r.epoch for r in readings)
    reference = {**common, "setting": f"epoch {last:>3}, reference: training digits reconstructed (posterior chain)"}
    values = {"value": round(floor.fd, 4), "epoch": last, "mean_energy": round(floor.energy, 4)}
    return [*rows, {**reference, **values}]


def draw_lines(
    axes: Axes,
    readings: list[Reading],
    key: Callable[[Reading], Any],
    name: Callable[[Any], str],
    value: Callable[[Reading], float] = lambda r: r.fd,
    spread: Callable[[Reading], float] = lambda r: r.fd_std,
) -> None:
    """``value`` (with ``spread`` as error bars) against steps, a line per ``key(reading)`` named
    ``name(key)``; the chains' starts (0 steps, shared by every step size) begin each line."""
    starts = {r.epoch: r for r in readings if r.steps == 0}
    groups: dict = {}
    for reading in readings:
        if reading.steps > 0:
            groups.setdefault(key(reading), []).append(reading)
    for index, (group, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda r: r.steps)
        start = starts.get(members[0].epoch)
        members = ([start] if start is not None else []) + members
        axes.errorbar(
            [r.steps for r in members],
            [value(r) for r in members],
            yerr=[spread(r) for r in members],
            marker=".",
            capsize=2,
            color=f"C{index}",
            label=name(group),
        )
    axes.axvline(TRAINING_CHAIN[0], color="0.85", linewidth=6, zorder=0)
    axes.set_xscale("symlog", linthresh=20, linscale=0.5)
    axes.set_xlim(left=-2)
    axes.set_xlabel("Langevin steps (grey: the training chain's 60)", fontsize=9)
    axes.grid(alpha=0.3)


def gaussian_stationary_energy(latent_dim: int, precision: float, step_size: float) -> float:
    """The mean energy ``precision * |z|^2 / 2`` that Langevin's code-form steps of ``step_size``
    (``z <- z - s^2/2 grad U + s eps``) keep on the Gaussian reference alone: its stationary law is
    ``N(0, v I)`` with ``v = 1 / (precision * (1 - precision * s^2 / 4))``, wider than the target's
    ``1 / precision`` by the discretisation (the chain has no accept-reject step)."""
    return latent_dim / (2 * (1 - precision * step_size**2 / 4))


def figure(
    last: list[Reading], earlier: list[Reading], floor: Floor, pictures: dict[str, torch.Tensor], prior: Prior
) -> Figure:
    """Pixel FD and prior energy against steps (a line per step size), pixel FD at each kept
    checkpoint, and the sample grids; ``prior``'s size and reference give the dotted energies."""
    fig = Figure(figsize=(11, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1])
    fd_axes, energy_axes, epochs_axes = top.subplots(1, 3)
    epoch = max(r.epoch for r in last)
    draw_lines(fd_axes, last, key=lambda r: r.step_size, name=lambda s: f"step size {s:g}")
    fd_axes.axhline(floor.fd, color="0.3", linestyle="--", linewidth=1, label="reconstructed digits")
    fd_axes.set_title(f"epoch {epoch}: pixel FD to the training digits", fontsize=10)
    fd_axes.set_ylabel("pixel FD (mean ± sd over seeds)", fontsize=9)
    highest = max(r.fd + r.fd_std for r in last)
    fd_axes.set_ylim(floor.fd - 0.03, highest + 0.6 * (highest - floor.fd))  # room for the legend
    fd_axes.legend(fontsize=7, ncol=2, loc="upper center")
    draw_lines(
        energy_axes,
        last,
        key=lambda r: r.step_size,
        name=lambda s: f"step size {s:g}",
        value=lambda r: statistics.fmean(r.energies),
        spread=lambda r: 0.0,
    )
    sizes = list(dict.fromkeys(r.step_size for r in last if r.steps > 0))
    for index, size in enumerate(sizes):
        level = gaussian_stationary_energy(prior.latent_dim, prior.reference_precision, size)
        energy_axes.axhline(level, color=f"C{index}", linestyle=":", linewidth=1)
    energy_axes.set_title(f"epoch {epoch}: mean prior energy U(z)", fontsize=10)
    energy_axes.text(
        0.98,
        0.5,
        "dotted: the chain's stationary U\non the Gaussian reference alone",
        fontsize=7,
        transform=energy_axes.transAxes,
        horizontalalignment="right",
    )
    size = TRAINING_CHAIN[1]
    at_size = [r for r in earlier + last if r.step_size == size or r.steps == 0]
    draw_lines(epochs_axes, at_size, key=lambda r: r.epoch, name=lambda e: f"epoch {e}")
    epochs_axes.set_title(f"pixel FD, step size {size:g}, kept checkpoints", fontsize=10)
    epochs_axes.legend(fontsize=7)
    for axes, (title, images) in zip(bottom.subplots(1, len(pictures)), pictures.items(), strict=True):
        axes.imshow(to_uint8_grid(images[:GRID_SAMPLES], nrow=8, min_size=32))
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    return fig


def earlier_readings(
    found: dict[int, Path], last_epoch: int, settings: list[tuple[int, float]], seeds: list[int], digits: torch.Tensor
) -> list[Reading]:
    """The readings of ``settings`` at every kept checkpoint before ``last_epoch``."""
    readings = []
    for epoch in sorted(e for e in found if e != last_epoch):
        model = lebm.load(str(found[epoch]), map_location="cpu").eval()
        readings += sweep(model, epoch, settings, seeds, digits)[0]
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help=f"reuse this run folder (default: fit the quickstart into {RUN})")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 20, 60, 100, 200, 400, 1000])
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--early-steps", type=int, nargs="+", default=[0, 60, 200, 1000], help="at earlier checkpoints")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)  # as lebm.speed.CPUThreads gives the quickstart's small nets; CPU seconds per thread
    if args.run is None:
        fit(RUN)
    run_dir = REPO / (args.run or RUN)
    found = checkpoints(run_dir)
    digits = training_digits()
    last_epoch = max(found)
    model = lebm.load(str(found[last_epoch]), map_location="cpu").eval()
    last, samples = sweep(model, last_epoch, grid_settings(args.steps, args.step_sizes), args.seeds, digits)
    floor = reconstruction_floor(model, digits, pixel_stats(digits), args.seeds[0])
    print(
        f"epoch {last_epoch}: the training digits reconstructed: pixel FD {floor.fd:.3f}, U(z) {floor.energy:.2f}",
        flush=True,
    )
    winner = best(last)
    sizes = list(dict.fromkeys([TRAINING_CHAIN[1], winner.step_size]))
    earlier = earlier_readings(found, last_epoch, grid_settings(args.early_steps, sizes), args.seeds, digits)
    command = shlex.join(["python", "experiments/quickstart_chains.py", *(["--run", args.run] if args.run else [])])
    written = [stamped(r) for r in records(earlier + last, floor, command, args.seeds, len(digits))]
    OUTPUT.write_text(json.dumps(written, indent=2) + "\n")
    pictures = {
        f"training chain {label(*TRAINING_CHAIN)}": samples[TRAINING_CHAIN],
        f"last-epoch grid {label(GRID_LONG_STEPS, TRAINING_CHAIN[1])}": samples[(GRID_LONG_STEPS, TRAINING_CHAIN[1])],
        f"lowest FD {label(winner.steps, winner.step_size)}": samples[(winner.steps, winner.step_size)],
    }
    fig = figure(last, earlier, floor, pictures, model.prior)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=80, metadata={"Software": None})
    print(f"wrote {OUTPUT.relative_to(REPO)} and {FIGURE.relative_to(REPO)}", flush=True)
    render_results_md()


if __name__ == "__main__":
    run_main(main)
