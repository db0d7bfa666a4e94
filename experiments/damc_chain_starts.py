"""What DAMC's amortizer buys: Langevin chains started from it against chains started from noise.

    python experiments/damc_chain_starts.py [--seeds 1 2 3] [--checkpoints A.ckpt B.ckpt ...]

Trains the DAMC quickstart (``recipes/damc/quickstart.yaml``: 8x8 digits, 90 epochs) once per seed
into ``runs/damc/chain_starts/seed<k>`` (``--seed_everything k``), unless that folder already holds a
checkpoint; ``--checkpoints`` reads given checkpoints instead (each run's seed from its
``config.yaml``). Then, from each last checkpoint, on the run's own held-out test digits, for the
same number of Langevin steps ``K``, chains started from the amortizer against chains started from
``N(0, I)`` noise (the model's ``"noise"`` start: LatentEBM's):

- **posterior chains**, ``--chains`` (4) independent chains per test digit, with the training
  posterior chain (``model.posterior_sampler``: Langevin, 10 steps of 0.1 in the quickstart) and with
  the evaluation chain (``model.evaluation_sampler``: the same without noise), started from the
  online amortizer's conditional samples ``Q(x)`` or from noise: the mean posterior energy
  ``U(z|x) = -log p(x, z)`` (``model.posterior_chain_energy`` plus the reference term, the energy the
  chain's diagnostics record), the per-pixel reconstruction MSE of ``g(z)``, and the rank-normalised
  split R-hat and bulk ESS (:mod:`lebm.metrics.mixing`, as ``ChainDiagnostics`` computes them) of each
  digit's chains' energy traces over draws ``1..K`` (the start left out), the median over digits
  (training chain only: the noise-free evaluation chain is gradient descent, with nothing to mix in);
- **prior chains**, 1,437 chains (as many as there are training digits), with the training prior
  chain (``model.prior.sampler``: 20 steps of 0.4), started from the amortizer's unconditional samples
  ``Q(None)`` or from noise: the mean prior energy ``U(z) = E(z) + ||z||^2 / 2``, the pixel Fréchet
  distance of ``g(z)`` to the training digits (``experiments/quickstart_digits.py``'s), and R-hat and
  ESS over groups of 4 chains (the median over groups);
- **the steps noise needs**: the smallest ``K`` at which the noise-started chain's mean energy (and
  the posterior's MSE) reaches the amortizer-started chain's at the training chain's ``K`` (posterior
  10, prior 20), per seed, searched up to ``--match-steps`` (1,000); with the cost of one ``Q`` draw
  in Langevin steps of the same chain (CPU process time), what those steps are worth. The pixel FD
  is not monotone in ``K`` (the noise chains pass through a minimum), so for it the records keep the
  noise chains' best FD over every step up to ``--fd-steps`` (200) and the first ``K`` (if any)
  reaching the FD of ``Q``'s own samples (``K = 0``: what ``model.generate`` decodes).

An energy is defined up to a constant, which differs from run to run: compare starts within a seed
(the steps noise needs are found per seed); the figure draws the prior's energy relative to each
seed's Q-started chain at K = 200.

Each chain is run one step at a time (``Langevin(1, s)`` continued from its last state with one
random stream, the same numbers as one ``K``-step call: checked against the chain's own ``energy``
diagnostics, on the first seed). Records go to ``docs/results/damc_chain_starts.json`` (value: the
mean over the seeds at the training ``K``, ``std`` their spread, ``by_seed``, and the series over ``steps``),
the figure to ``docs/images/damc_chain_starts.png``, and ``docs/results.md`` is regenerated
(``--redraw``: only the figure, from the records, and the pages).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.linalg import LinAlgWarning
from torch import Tensor
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quickstart_digits import frechet_distance, pixel_stats  # noqa: E402
from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device, with_progress  # noqa: E402
from script import run_lebm, run_main  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.metrics.mixing import bulk_ess, split_rhat  # noqa: E402
from lebm.models import DAMC  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402
from lebm.samplers import Langevin, NoiseStart  # noqa: E402

EXPERIMENT = "chain_starts"
RECIPE = "recipes/damc/quickstart.yaml"
RUNS = "runs/damc/chain_starts"
OUTPUT = REPO / "docs" / "results" / f"damc_{EXPERIMENT}.json"
FIGURE = REPO / "docs" / "images" / f"damc_{EXPERIMENT}.png"
#: The K at which the series are kept (and drawn).
STEPS = [0, 5, 10, 20, 50, 100, 200]
#: Chains per group for the prior's R-hat and ESS (the posterior's: the chains of one digit).
PRIOR_GROUP = 4
STARTS = {"amortizer": "Q start", "noise": "N(0, I) start"}


@dataclass
class Trace:
    """One kind of chain from one start: per step ``k = 0..K`` (state after ``k`` steps) the
    per-chain energy and quality (posterior: per-pixel squared error; prior: nothing per chain),
    and the batch quality per step (prior: pixel FD, at :data:`STEPS` and wherever asked)."""

    energy: np.ndarray  # (K + 1, n)
    error: np.ndarray | None = None  # (K + 1, n): posterior per-pixel MSE of each chain
    fd: dict[int, float] = field(default_factory=dict)  # prior: pixel FD at some k

    def mean_energy(self, k: int) -> float:
        return float(self.energy[k].mean())

    def mse(self, k: int) -> float:
        assert self.error is not None
        return float(self.error[k].mean())


def fit_command(seed: int | str) -> list[str]:
    return [
        "lebm",
        "fit",
        "-c",
        RECIPE,
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        f"{RUNS}/seed{seed}",
        *EPOCH_LINES,
    ]


def run_checkpoint(seed: int) -> Path:
    """The last checkpoint of ``runs/damc/chain_starts/seed<seed>``, fitting the quickstart there first
    when it has none."""
    run = REPO / RUNS / f"seed{seed}"
    if not any((run / "checkpoints").glob("last*.ckpt")):
        command = fit_command(seed)
        print("+", shlex.join(command), flush=True)
        run_lebm(command)
    return newest_last_checkpoint(run)


def run_config(checkpoint: Path) -> dict:
    """The ``config.yaml`` the run of ``checkpoint`` saved (``<run>/checkpoints/<file>``)."""
    path = checkpoint.parent.parent / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the data split is read from the run's config")
    return yaml.safe_load(path.read_text())


def load_damc(checkpoint: Path) -> DAMC:
    """The DAMC of ``checkpoint`` in eval mode. Its ``generation_sampler`` is given rebuilt from the
    checkpoint's own config: ``DAMC.__init__`` passes that argument to ``check_sampler``, which takes
    a sampler, not the config a checkpoint stores, so a plain ``lebm.load`` of a DAMC checkpoint with
    a generation sampler fails."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    sampler = saved.get("generation_sampler")
    extra = {"generation_sampler": build(sampler)} if isinstance(sampler, dict) else {}
    return DAMC.load_from_checkpoint(str(checkpoint), map_location="cpu", **extra).eval()


def digits(config: dict) -> tuple[Tensor, Tensor]:
    """The run's held-out test digits and its training digits ``(N, 1, 8, 8)`` in [-1, 1]."""
    data = build(config["data"])
    data.setup("fit")
    data.setup("test")
    test = torch.cat([batch_observations(b) for b in data.test_dataloader()])
    train = torch.cat([batch_observations(b) for b in DataLoader(data.train_dataset, batch_size=500)])
    return test, train


def one_step(sampler: Langevin) -> Langevin:
    """``sampler``'s step as a chain of one step (its step size, noise, clipping and form)."""
    return Langevin(1, sampler.step_size, noise_std=sampler.noise_std, grad_clip=sampler.grad_clip, form=sampler.form)


def posterior_energy(model: DAMC, z: Tensor, x: Tensor) -> Tensor:
    """``U(z|x)`` per chain ``(B,)``: what the posterior chain samples (reference term included)."""
    with torch.no_grad():
        return model.posterior_chain_energy(z, x) + model.prior.reference_precision * z.square().sum(1) / 2


def posterior_trace(model: DAMC, x: Tensor, z0: Tensor, sampler: Langevin, steps: int, seed: int) -> Trace:
    """The posterior chains from ``z0`` for ``steps`` steps of ``sampler``, one step per call."""
    step = one_step(sampler)
    generator = torch.Generator().manual_seed(seed)
    pixels = x[0].numel()
    z = z0
    energies, errors = [], []
    for k in range(steps + 1):
        if k:
            z = model.infer(x, start=z, sampler=step, generator=generator)
        energies.append(posterior_energy(model, z, x).numpy())
        with torch.no_grad():
            errors.append((model.decoder.squared_error(x, z) / pixels).numpy())
    return Trace(np.stack(energies), np.stack(errors))


def check_stepwise(model: DAMC, x: Tensor, z0: Tensor, sampler: Langevin, steps: int, seed: int, trace: Trace) -> None:
    """One ``steps``-step call of ``sampler`` from ``z0`` ends where the stepwise chain does, and its
    ``energy`` diagnostics (the batch-mean ``U`` before each step) are the trace's energies."""
    chain = Langevin(
        steps, sampler.step_size, noise_std=sampler.noise_std, grad_clip=sampler.grad_clip, form=sampler.form
    )
    generator = torch.Generator().manual_seed(seed)
    _, stats = model.infer(x, start=z0, sampler=chain, generator=generator, return_diagnostics=True)
    recorded = stats["energy"].double().numpy()
    mine = trace.energy[:steps].mean(1)
    if not np.allclose(recorded, mine, rtol=1e-4, atol=1e-3):
        raise RuntimeError(f"the chain's energy diagnostics {recorded[:3]} differ from the stepwise trace's {mine[:3]}")


def pixel_fd(samples: Tensor, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """The pixel FD of ``samples`` to ``reference`` (mean, covariance); the digits' covariance is
    singular (always-blank border pixels), which scipy's matrix square root warns of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        return frechet_distance(*pixel_stats(samples), *reference)


def prior_trace(
    model: DAMC,
    z0: Tensor,
    sampler: Langevin,
    steps: int,
    seed: int,
    reference: tuple[np.ndarray, np.ndarray],
    fd_every_step_to: int = 0,
) -> Trace:
    """The prior chains from ``z0``, one step per call; the pixel FD at :data:`STEPS` and at every
    step up to ``fd_every_step_to``."""
    step = one_step(sampler)
    generator = torch.Generator().manual_seed(seed)
    z = z0
    energies, fds = [], {}
    for k in range(steps + 1):
        if k:
            z = model.prior.sample(len(z), sampler=step, start=z, generator=generator)
        with torch.no_grad():
            energies.append(model.prior.energy(z).numpy())
            if k in STEPS or k <= fd_every_step_to:
                fds[k] = pixel_fd(model.decoder.decode(z), reference)
    return Trace(np.stack(energies), fd=fds)


def mixing(energy: np.ndarray, k: int, group: int, interleaved: bool) -> tuple[float, float]:
    """The median over targets of split R-hat and bulk ESS of the energy traces over draws ``1..k``:
    chains ``i, i + n/group, ...`` share a target (``interleaved``: the posterior's, chain ``c`` of
    digit ``i`` at row ``c n + i``), else consecutive runs of ``group`` chains (the prior's)."""
    if k < 4:
        return math.nan, math.nan
    draws = energy[1 : k + 1].T  # (chains, k)
    n = draws.shape[0] // group
    targets = (
        [draws[i::n][:group] for i in range(n)]
        if interleaved
        else [draws[g * group : (g + 1) * group] for g in range(n)]
    )
    rhats = [split_rhat(t) for t in targets]
    esses = [bulk_ess(t) for t in targets]
    return float(np.nanmedian(rhats)), float(np.nanmedian(esses))


def first_reaching(curve: np.ndarray | dict[int, float], target: float) -> int | None:
    """The smallest ``k`` whose value is at most ``target`` (None: none is)."""
    items = enumerate(curve) if isinstance(curve, np.ndarray) else sorted(curve.items())
    return next((k for k, value in items if value <= target), None)


def cpu_seconds(work: Any, repeats: int = 3) -> float:
    """The least CPU process time of ``repeats`` calls of ``work()``."""
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def study(checkpoint: Path, seed: int, args: argparse.Namespace, check: bool) -> dict[str, Any]:
    """Every reading of one run: ``{(chain, start): {metric: value, "series": {...}}}`` and the
    steps noise needs."""
    model = load_damc(checkpoint)
    test, train = digits(run_config(checkpoint))
    reference = pixel_stats(train)
    x = test.repeat(args.chains, 1, 1, 1)  # chain c of digit i at row c * N + i
    streams = torch.Generator().manual_seed(1000 + seed)
    # the posterior's noise start is the model's own ("noise": N(0, posterior_init_std^2 I)), the
    # prior's the prior's own (N(0, init_std^2 I)); Q(x) given the digits, Q(None) without
    posterior_noise = model.chain_initializer("noise")
    prior_noise = NoiseStart(model.prior.latent_dim, model.prior.init_std)
    starts = {
        "amortizer": lambda n, context: model.amortizer.start(n, context=context, generator=streams),
        "noise": lambda n, context: (posterior_noise if context is not None else prior_noise).start(
            n, generator=streams
        ),
    }
    longest = max(STEPS)
    readings: dict[tuple[str, str], dict[str, Any]] = {}
    chains = {"posterior": model.posterior_sampler, "evaluation": model.evaluation_sampler}
    for chain, sampler in chains.items():
        k_ref = sampler.n_steps
        traces = {}
        for start in STARTS:
            z0 = starts[start](len(x), x)
            steps = longest if start == "amortizer" else max(longest, args.match_steps)
            traces[start] = posterior_trace(model, x, z0, sampler, steps, seed)
            if check and chain == "posterior" and start == "amortizer":
                check_stepwise(model, x, z0, sampler, k_ref, seed, traces[start])
        for start, trace in traces.items():
            reading: dict[str, Any] = {
                "energy": trace.mean_energy(k_ref),
                "mse": trace.mse(k_ref),
                "series": {"energy": [trace.mean_energy(k) for k in STEPS], "mse": [trace.mse(k) for k in STEPS]},
                "n_steps": k_ref,
            }
            if chain != "evaluation":  # a noise-free chain is gradient descent: no distribution to mix in
                reading["rhat_energy"], reading["ess_energy"] = mixing(trace.energy, k_ref, args.chains, True)
                mixed = [mixing(trace.energy, k, args.chains, interleaved=True) for k in STEPS]
                reading["series"].update({"rhat_energy": [m[0] for m in mixed], "ess_energy": [m[1] for m in mixed]})
            readings[(chain, start)] = reading
        noise, amortized = traces["noise"], traces["amortizer"]
        assert noise.error is not None
        readings[(chain, "noise")].update(
            {
                "steps_to_match_energy": first_reaching(noise.energy.mean(1), amortized.mean_energy(k_ref)),
                "steps_to_match_mse": first_reaching(noise.error.mean(1), amortized.mse(k_ref)),
                "match_targets": {"energy": amortized.mean_energy(k_ref), "mse": amortized.mse(k_ref)},
            }
        )

    prior_sampler = model.prior.sampler
    k_ref = prior_sampler.n_steps
    n = len(train)
    traces = {}
    for start in STARTS:
        z0 = starts[start](n, None)
        steps = longest if start == "amortizer" else max(longest, args.match_steps)
        fd_to = 0 if start == "amortizer" else args.fd_steps
        traces[start] = prior_trace(model, z0, prior_sampler, steps, seed, reference, fd_every_step_to=fd_to)
    for start, trace in traces.items():
        rhat, ess = mixing(trace.energy, k_ref, PRIOR_GROUP, interleaved=False)
        mixed = [mixing(trace.energy, k, PRIOR_GROUP, interleaved=False) for k in STEPS]
        readings[("prior", start)] = {
            "energy": trace.mean_energy(k_ref),
            "pixel_fd": trace.fd[k_ref],
            "rhat_energy": rhat,
            "ess_energy": ess,
            "series": {
                "energy": [trace.mean_energy(k) for k in STEPS],
                "pixel_fd": [trace.fd[k] for k in STEPS],
                "rhat_energy": [m[0] for m in mixed],
                "ess_energy": [m[1] for m in mixed],
            },
            "n_steps": k_ref,
        }
    noise, amortized = traces["noise"], traces["amortizer"]
    best = min(noise.fd, key=lambda k: noise.fd[k])
    readings[("prior", "noise")].update(
        {
            "steps_to_match_energy": first_reaching(noise.energy.mean(1), amortized.mean_energy(k_ref)),
            "match_targets": {"energy": amortized.mean_energy(k_ref)},
            # the pixel FD is not monotone in K: its best, and the first K that reaches Q's samples' own
            "pixel_fd_best": {"value": noise.fd[best], "steps": best, "searched_to": max(noise.fd)},
            "steps_to_match_q_alone_pixel_fd": first_reaching(noise.fd, amortized.fd[0]),
        }
    )

    # what a Q draw costs, in Langevin steps of the same chains (CPU process time)
    z, z_prior = starts["noise"](len(x), x), starts["noise"](n, None)
    posterior_step, prior_step = one_step(model.posterior_sampler), one_step(prior_sampler)
    costs = {
        "posterior": cpu_seconds(lambda: model.amortizer.start(len(x), context=x, generator=streams))
        / cpu_seconds(lambda: model.infer(x, start=z, sampler=posterior_step, generator=streams)),
        "prior": cpu_seconds(lambda: model.amortizer.start(n, generator=streams))
        / cpu_seconds(lambda: model.prior.sample(n, sampler=prior_step, start=z_prior, generator=streams)),
    }
    return {
        "readings": readings,
        "q_cost_in_steps": costs,
        "sampling_steps": model.amortizer.sampling_steps,
        "test_digits": len(test),
        "prior_chains": n,
        "epoch": torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1,
    }


#: Each row of the page: its chain, the K its values are read at, its start.
SETTINGS = {
    ("posterior", "amortizer"): "posterior, training chain, K = {k}: Q(x) start",
    ("posterior", "noise"): "posterior, training chain, K = {k}: N(0, I) start",
    ("evaluation", "amortizer"): "posterior, evaluation chain (no noise), K = {k}: Q(x) start",
    ("evaluation", "noise"): "posterior, evaluation chain (no noise), K = {k}: N(0, I) start",
    ("prior", "amortizer"): "prior chain, K = {k}: Q(None) start",
    ("prior", "noise"): "prior chain, K = {k}: N(0, I) start",
}
SAMPLER_NAMES = {
    "posterior": "model.posterior_sampler",
    "evaluation": "model.evaluation_sampler",
    "prior": "model.prior.sampler",
}


def spread(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, 0.0
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def records(results: dict[int, dict[str, Any]], args: argparse.Namespace, command: str, fitted: bool) -> list[dict]:
    """The records: per setting and metric the mean over the seeds (``std``, ``by_seed``) at the
    training ``K``, with the series over :data:`STEPS` (mean over seeds, and per seed)."""
    seeds = sorted(results)
    first = results[seeds[0]]
    today = datetime.date.today().isoformat()
    budget = (
        f"quickstart ({first['epoch']} epochs) per seed, seeds {' '.join(map(str, seeds))}; "
        f"{first['test_digits']} test digits x {args.chains} chains, {first['prior_chains']} prior chains; "
        f"noise chains searched to {args.match_steps} steps"
    )
    common = {
        "method": "DAMC",
        "experiment": EXPERIMENT,
        "budget": budget,
        "recipe": RECIPE,
        "command": command,
        **({"fit_command": " ".join(fit_command("<k>"))} if fitted else {}),
        "device": this_device(),
        "date": today,
        "figure": f"images/{FIGURE.name}",
    }
    out = []
    for (chain, start), label in SETTINGS.items():
        per_seed = {seed: results[seed]["readings"][(chain, start)] for seed in seeds}
        reading = per_seed[seeds[0]]
        setting = label.format(k=reading["n_steps"])
        base = {
            **common,
            "setting": setting,
            "chain": "prior" if chain == "prior" else "posterior",
            "sampler": SAMPLER_NAMES[chain],
            "start": start,
            "n_steps": reading["n_steps"],
        }
        for metric in ("energy", "mse", "pixel_fd", "rhat_energy", "ess_energy"):
            if metric not in reading:
                continue
            values = [per_seed[s][metric] for s in seeds]
            mean, std = spread(values)
            by_steps = [[per_seed[s]["series"][metric][i] for s in seeds] for i in range(len(STEPS))]
            extra = {}
            if metric == "pixel_fd" and "pixel_fd_best" in reading:
                extra = {
                    "pixel_fd_best_by_seed": {
                        str(s): {k: rounded(v) for k, v in per_seed[s]["pixel_fd_best"].items()} for s in seeds
                    },
                    "steps_to_match_q_alone_pixel_fd_by_seed": {
                        str(s): per_seed[s]["steps_to_match_q_alone_pixel_fd"] for s in seeds
                    },
                }
            out.append(
                {
                    **base,
                    "metric": metric,
                    "value": rounded(mean),
                    "std": rounded(std),
                    "by_seed": {str(s): rounded(v) for s, v in zip(seeds, values, strict=True)},
                    "steps": STEPS,
                    f"{metric}_by_steps": [rounded(spread(column)[0]) for column in by_steps],
                    f"{metric}_by_steps_by_seed": {
                        str(s): [rounded(v) for v in per_seed[s]["series"][metric]] for s in seeds
                    },
                    **extra,
                }
            )
        for metric in ("steps_to_match_energy", "steps_to_match_mse"):
            if metric not in reading:
                continue
            found = {s: per_seed[s][metric] for s in seeds}
            reached = [v for v in found.values() if v is not None]
            if not reached:
                print(
                    f"{setting}: {metric} not reached by {args.match_steps} steps for any seed: no record", flush=True
                )
                continue
            mean, std = spread([float(v) for v in reached])
            what = metric.removeprefix("steps_to_match_")
            out.append(
                {
                    **base,
                    "metric": metric,
                    "value": round(mean, 1),
                    "std": round(std, 1),
                    "by_seed": {str(s): v for s, v in found.items()},
                    "reached_by_seeds": f"{len(reached)} of {len(seeds)}",
                    "searched_to": args.match_steps,
                    "matches": f"the Q-started chain's mean {what} at K = {reading['n_steps']}",
                    "target_by_seed": {str(s): rounded(per_seed[s]["match_targets"][what]) for s in seeds},
                    "q_draw_cost_in_chain_steps": {
                        str(s): round(results[s]["q_cost_in_steps"]["prior" if chain == "prior" else "posterior"], 2)
                        for s in seeds
                    },
                    "q_sampling_steps": first["sampling_steps"],
                }
            )
    return out


def seed_series(records: list[dict], chain: str, start: str, metric: str) -> dict[str, list[float]]:
    """``{seed: values at STEPS}`` of ``metric`` for ``chain`` (a key of :data:`SAMPLER_NAMES`) and ``start``."""
    record = next(
        r for r in records if r["sampler"] == SAMPLER_NAMES[chain] and r["start"] == start and r["metric"] == metric
    )
    return record[f"{metric}_by_steps_by_seed"]


def draw_figure(records: list[dict]) -> Figure:
    """From the records: posterior MSE and energy, prior energy and pixel FD against K, both starts,
    the mean over seeds bold, each seed faint. The prior's energy is drawn relative to each seed's
    Q-started chain at the longest K: an energy is defined up to a constant, which differs by seed."""
    fig = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(fig)
    panels = [
        ("posterior", "mse", "posterior chains: reconstruction MSE per pixel"),
        ("posterior", "energy", "posterior chains: mean U(z|x)"),
        ("prior", "energy", "prior chains: mean U(z), less the Q-started chain's at K = 200"),
        ("prior", "pixel_fd", "prior chains: pixel FD of g(z) to the training digits"),
    ]
    steps = records[0]["steps"]
    for axes, (kind, metric, title) in zip(fig.subplots(2, 2).ravel(), panels, strict=True):
        chains = ["posterior", "evaluation"] if kind == "posterior" else ["prior"]
        relative = kind == "prior" and metric == "energy"
        for chain in chains:
            level = {s: v[-1] for s, v in seed_series(records, chain, "amortizer", metric).items()}
            for index, start in enumerate(STARTS):
                colour, style = f"C{index}", "--" if chain == "evaluation" else "-"
                by_seed = seed_series(records, chain, start, metric)
                series = [[v - level[s] if relative else v for v in values] for s, values in by_seed.items()]
                for one in series:
                    axes.plot(steps, one, color=colour, linestyle=style, alpha=0.25, linewidth=0.8)
                mean = np.mean(np.array(series, dtype=float), axis=0)
                name = STARTS[start] + (", evaluation chain (no noise)" if chain == "evaluation" else "")
                axes.plot(steps, mean, color=colour, linestyle=style, marker="o", markersize=3, label=name)
        k_ref = next(r["n_steps"] for r in records if r["sampler"] == SAMPLER_NAMES[chains[0]])
        axes.axvline(k_ref, color="grey", linestyle=":", linewidth=1)
        axes.set_xscale("symlog", linthresh=5, linscale=0.5)
        axes.set_xlim(0, max(steps) * 1.1)
        if not relative:
            axes.set_yscale("log")
        axes.set_xticks(steps)
        axes.set_xticklabels([str(k) for k in steps])
        axes.set_xlabel("Langevin steps K (dotted: the training chain's)", fontsize=9)
        axes.set_title(title, fontsize=10)
        axes.legend(fontsize=7)
    seeds = " ".join(records[0]["by_seed"])
    fig.suptitle(
        f"DAMC quickstart: chains from the amortizer Q against chains from noise (seeds {seeds}: "
        "the mean bold, each seed faint)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def summary(results: dict[int, dict[str, Any]]) -> None:
    """A line per seed: the readings at the training K and the steps noise needs."""
    for seed, result in sorted(results.items()):
        r = result["readings"]
        q, noise = r[("posterior", "amortizer")], r[("posterior", "noise")]
        prior_q, prior_noise = r[("prior", "amortizer")], r[("prior", "noise")]
        print(
            f"seed {seed}: posterior K={q['n_steps']}: MSE Q {q['mse']:.4f} noise {noise['mse']:.4f}, "
            f"U Q {q['energy']:.2f} noise {noise['energy']:.2f}; noise needs {noise['steps_to_match_mse']} steps "
            f"(MSE), {noise['steps_to_match_energy']} (energy). Prior K={prior_q['n_steps']}: noise needs "
            f"{prior_noise['steps_to_match_energy']} steps (energy); its best pixel FD {prior_noise['pixel_fd_best']}, "
            f"Q alone's {prior_q['series']['pixel_fd'][0]:.3f}. A Q draw costs "
            f"{result['q_cost_in_steps']['posterior']:.1f} posterior / {result['q_cost_in_steps']['prior']:.1f} "
            "prior chain steps",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help=f"fit or reuse {RUNS}/seed<k>")
    parser.add_argument("--checkpoints", nargs="+", help="read these DAMC checkpoints instead (seed: their config's)")
    parser.add_argument("--redraw", action="store_true", help="only redraw the figure from the records, and the pages")
    parser.add_argument("--chains", type=int, default=4, help="posterior chains per test digit")
    parser.add_argument("--match-steps", type=int, default=1000, help="noise-started chains run this far (>= 200)")
    parser.add_argument(
        "--fd-steps", type=int, default=200, help="prior noise chains: the pixel FD at every step up to this"
    )
    args = parser.parse_args()
    if args.redraw:
        save_figure(json.loads(OUTPUT.read_text()))
        render_results_md()
        return
    torch.set_num_threads(1)  # the quickstart's nets are small; CPU seconds per thread
    if args.checkpoints:
        found = {}
        for path in map(Path, args.checkpoints):
            found[int(run_config(path).get("seed_everything") or len(found))] = path
    else:
        found = {seed: run_checkpoint(seed) for seed in args.seeds}
    results = {}
    for index, seed in enumerate(with_progress(sorted(found), "seed")):
        results[seed] = study(found[seed], seed, args, check=index == 0)
    summary(results)
    parts = ["python", "experiments/damc_chain_starts.py"]
    if args.checkpoints:
        parts += ["--checkpoints", *args.checkpoints]
    else:
        parts += ["--seeds", *map(str, args.seeds)]
    if args.chains != 4:
        parts += ["--chains", str(args.chains)]
    if args.match_steps != 1000:
        parts += ["--match-steps", str(args.match_steps)]
    written = records(results, args, shlex.join(parts), not args.checkpoints)
    OUTPUT.write_text(json.dumps([stamped(r) for r in written], indent=1) + "\n")
    save_figure(written)
    print(f"wrote {OUTPUT.relative_to(REPO)} and {FIGURE.relative_to(REPO)}", flush=True)
    render_results_md()


def save_figure(written: list[dict]) -> None:
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    draw_figure(written).savefig(FIGURE, dpi=80, metadata={"Software": None})


if __name__ == "__main__":
    run_main(main)
