"""FID of a DualMCMC checkpoint's raw generator samples and of their EBM revisions by several data chains.

    LEBM_DATA=../shared/data python experiments/dual_mcmc_revision_sweep.py \\
        --ckpt runs/dual_mcmc/mnist_offline_record/checkpoints/last.ckpt [--samples 5000] [--reference 5000]
    LEBM_DATA=../shared/data python experiments/dual_mcmc_revision_sweep.py --curve runs/dual_mcmc/mnist_offline_record

**Sweep** (``--ckpt``): ``--samples`` latents ``z ~ N(0, I)`` are drawn once from a generator seeded
with ``--seed`` and shared by every row; ``g(z)`` is decoded once (in batches of ``--batch-size``,
the generator's BatchNorm on batch statistics as the model evaluates) and is the raw row. Each
chain of ``--chains`` (``STEPSxSTEP`` or ``STEPSxSTEP:NOISE``) revises those same images with the
data chain ``x <- x - (s^2 / 2) grad E(x) + n eps``, once for each noise of ``--noises`` (default
the official 1e-3, and 0: no noise) unless the chain names its own. Every chain starts from the
checkpoint's energy net (the spectral norm's power-iteration vectors included) and draws its noise
from the same per-batch seeds, so rows differ by their chain alone. By default the chains run the
spectral norm's power iteration as the official code does (``--no-power-iteration``: eval-mode
spectral norm; see ``DualMCMC``'s ``evaluation_power_iteration``).

The FID of every set is computed against ``--reference`` real training images of the checkpoint's
datamodule (all of them when fewer; a fixed random subset when more), with torch-fidelity's
Inception-v3 from ``$LEBM_DATA/fid_inception/`` (``--features small``: lebm's tiny random conv
net, for tests and quick runs, not a perceptual metric). Images in [-1, 1] are rounded to uint8 by
the Inception wrapper. The reference statistics are cached in ``--cache-dir`` (keyed by the data,
the count and the extractor's weights) and computed only once.

**Curve** (``--curve RUN_DIR``): every ``epoch=*.ckpt`` of ``RUN_DIR/checkpoints`` (or of
``RUN_DIR``) is scored the same way with the raw samples and one chain (``--curve-chain``, default
the official test chain 70 x 0.4, n = 1e-3), on the same latents.

**Records**: one JSON record per row (``method``, ``experiment``, ``metric`` and ``value`` = the
FID, then ``chain``, ``steps``, ``step_size``, ``noise_std``, ``seconds`` (the chain's wall-clock
time for all samples; the decoding's for the raw row), ``fid_seconds``, ``checkpoint``, ``epochs``,
``global_step``, ``samples``, ``reference``, ``features``, ``power_iteration``, ``budget``,
``command``, ``device``, ``date``), written to ``--out`` (default
``docs/results/dual_mcmc_mnist_revision_sweep.json``) and ``--curve-out`` (default
``docs/results/dual_mcmc_mnist_revision_curve.json``, with ``epoch``) after every row and printed;
records under ``docs/results/`` regenerate ``docs/results.md``. A stopped sweep thus keeps the rows
it finished, and ``--resume`` keeps those made with the same checkpoint, latents, reference and
extractor and scores only the others.

Cost on 2 CPU cores, 5,000 samples: Inception takes about 15 s per 100 images, so a row takes
12 (10 steps) to 14 minutes (70 steps: the chain itself about 4 minutes), 11 rows by default;
``--samples 500 --reference 500 --chains 30x0.5`` is a quick look.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from records import render_results_md, stamped, this_device  # noqa: E402
from script import run_main  # noqa: E402

from lebm.callbacks.fid import CACHE_FORMAT  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.data import ImageDataModule  # noqa: E402
from lebm.metrics.fid import (  # noqa: E402
    OFFLINE_INCEPTION_WEIGHTS,
    FIDMetrics,
    InceptionFeatures,
    ReferenceState,
    SmallConvFeatures,
    extractor_fingerprint,
    load_reference_state,
    save_reference_state,
)
from lebm.metrics.references import REFERENCE_SUBSET_SEED, batch_seed, reference_batches  # noqa: E402
from lebm.models import DualMCMC  # noqa: E402
from lebm.samplers import Langevin  # noqa: E402

DEFAULT_CHAINS = "30x0.5,70x0.4,10x0.5,20x0.4,5x0.5"  # training chain, official test chain, shorter ones
DEFAULT_NOISES = "0.001,0"
OFFICIAL_NOISE = 1e-3
FALLBACK_DATA = "recipes/dual_mcmc/mnist_offline.yaml"
RESULTS = REPO / "docs" / "results"


@dataclass(frozen=True)
class Chain:
    """One data chain: ``steps`` Langevin steps of size ``step_size``, noise ``noise_std``."""

    steps: int
    step_size: float
    noise_std: float

    @property
    def label(self) -> str:
        return f"{self.steps}x{self.step_size:g}"

    @property
    def metric(self) -> str:
        return f"fid_revised_{self.label}_noise{self.noise_std:g}"

    def sampler(self) -> Langevin:
        return Langevin(self.steps, self.step_size, noise_std=self.noise_std)


def parse_chains(spec: str, noises: str, option: str = "--chains") -> list[Chain]:
    """``"30x0.5,70x0.4:0"`` with noises ``"0.001,0"`` -> 30 x 0.5 at n = 1e-3 and n = 0, then 70 x 0.4 at n = 0
    (errors name ``option``, the argument ``spec`` came from)."""
    levels = [float(n) for n in noises.split(",") if n.strip()]
    chains: list[Chain] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(\d+)x([0-9.eE+-]+)(?::([0-9.eE+-]+))?", item)
        if match is None:
            raise SystemExit(f"{option}: {item!r} is not STEPSxSTEP or STEPSxSTEP:NOISE (e.g. 30x0.5 or 30x0.5:0)")
        steps, step = int(match[1]), float(match[2])
        for noise in [float(match[3])] if match[3] is not None else levels:
            if steps < 1 or step <= 0 or noise < 0:
                raise SystemExit(f"{option}: {item!r} needs steps >= 1, a step size > 0 and a noise >= 0")
            chains.append(Chain(steps, step, noise))
    if not chains:
        raise SystemExit(f"{option} names no chain")
    return chains


# ------------------------------------------------------------------------------ inputs
def load_model(path: Path, device: torch.device, power_iteration: bool) -> tuple[DualMCMC, dict[str, Any]]:
    """The model in eval mode on ``device`` and what the checkpoint says about its training."""
    model = DualMCMC.load_from_checkpoint(path, map_location=device, weights_only=True)
    model.hparams.evaluation_power_iteration = power_iteration
    model.eval()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    info = {
        "epochs": int(raw["epoch"]) + 1 if "epoch" in raw else None,
        "global_step": int(raw["global_step"]) if "global_step" in raw else None,
        "datamodule": raw.get("datamodule_hyper_parameters"),
    }
    return model, info


def build_data(hparams: dict[str, Any] | None, data_config: str | None) -> tuple[Any, dict[str, Any]]:
    """The datamodule whose training images are the reference: ``--data``'s, else the checkpoint's
    ``ImageDataModule``, else the offline MNIST recipe's; with a description for the cache key."""
    if data_config is None and hparams and "dataset" in hparams:
        # a checkpoint of ``lebm fit`` also holds LightningCLI's _class_path and _instantiator
        arguments = {key: value for key, value in hparams.items() if not key.startswith("_")}
        return ImageDataModule(**arguments), {"class": "lebm.data.ImageDataModule", "hparams": arguments}
    path = Path(data_config or FALLBACK_DATA)
    config = resolve_recipe(path if path.is_absolute() else REPO / path)["data"]
    return build(config), {"config": config}


def feature_extractor(kind: str, weights: str) -> nn.Module:
    if kind == "small":
        return SmallConvFeatures()
    if "$LEBM_DATA" in weights and "LEBM_DATA" not in os.environ:
        raise SystemExit("set LEBM_DATA to the folder holding fid_inception/ (e.g. ../shared/data), or give --weights")
    return InceptionFeatures(weights)


def reference_state(
    data: Any,
    description: dict[str, Any],
    limit: int,
    extractor: nn.Module,
    cache_dir: Path,
    batch_size: int,
    device: torch.device,
) -> ReferenceState:
    """FID's real side: ``limit`` training images (all when fewer), from the cache or embedded and cached."""
    key = {
        "data": description,
        "reference": limit,
        "subset_seed": REFERENCE_SUBSET_SEED,
        "extractor": getattr(extractor, "name", type(extractor).__qualname__),
        "fingerprint": extractor_fingerprint(extractor),
        "format": CACHE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir / f"sweep_ref_train_{limit}_{digest}.npz"
    if path.is_file():
        state = load_reference_state(path)
        print(f"reference: {state.n} training images, cached in {path}", flush=True)
        return state
    data.setup("fit")
    loader = data.train_dataloader()
    total = min(limit, len(loader.dataset))
    metrics = FIDMetrics(extractor).to(device)
    start, done = time.perf_counter(), 0
    for images in reference_batches(loader, limit, 0, 1, batch_size):
        metrics.update(images.to(device), real=True)
        done += len(images)
        print(f"  reference images {done}/{total} ({time.perf_counter() - start:.0f} s)", flush=True)
    state = metrics.reference_state()
    save_reference_state(path, state)
    print(f"reference: {state.n} training images, cached in {path}", flush=True)
    return state


# ------------------------------------------------------------------------------- the work
def decode(model: DualMCMC, z: Tensor, batch_size: int) -> Tensor:
    """``g(z)`` in batches (the generator's BatchNorm as the model evaluates: batch statistics)."""
    with torch.no_grad(), model.evaluation_statistics():
        return torch.cat([model.decoder.decode(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])


def score(
    name: str,
    batches: Any,
    metrics: FIDMetrics,
    reference: ReferenceState,
    n: int,
) -> tuple[float, float, float]:
    """FID of the images ``batches`` yields as ``(images, seconds spent making them)``; returns
    ``(fid, seconds making the images, seconds embedding them)``."""
    metrics.load_reference(reference)  # also forgets the previous set's images
    making = embedding = 0.0
    done = 0
    for images, seconds in batches:
        making += seconds
        start = time.perf_counter()
        metrics.update(images, real=False)
        embedding += time.perf_counter() - start
        done += len(images)
        print(f"  [{name}] {done}/{n} images ({making + embedding:.0f} s)", flush=True)
    return metrics.compute(n)["fid"], making, embedding


def revised_batches(model: DualMCMC, raw: Tensor, chain: Chain, batch_size: int, seed: int) -> Any:
    """The revisions of ``raw`` by ``chain``, batch by batch, each batch's noise seeded from
    ``(seed, its first index)``: the same noise for every chain."""
    sampler = chain.sampler()
    for start in range(0, len(raw), batch_size):
        stream = torch.Generator(device=raw.device).manual_seed(batch_seed(seed, start))
        began = time.perf_counter()
        revised = model.revise(raw[start : start + batch_size], sampler=sampler, generator=stream)
        yield revised, time.perf_counter() - began


def sweep_rows(
    model: DualMCMC,
    z: Tensor,
    chains: list[Chain],
    metrics: FIDMetrics,
    reference: ReferenceState,
    batch_size: int,
    seed: int,
    skip: frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    """Raw samples and every chain's revisions of them: one row each, yielded as soon as it is
    scored (so a long sweep keeps the rows it finished); rows whose metric is in ``skip`` are not
    scored (the raw samples are still decoded: the chains revise them)."""
    began = time.perf_counter()
    raw = decode(model, z, batch_size)
    decoding = time.perf_counter() - began
    n = len(z)
    if "fid_raw" not in skip:
        fid, _, embedding = score(
            "raw", ((raw[i : i + batch_size], 0.0) for i in range(0, n, batch_size)), metrics, reference, n
        )
        print(f"raw: FID {fid:.4f}", flush=True)
        yield _row("fid_raw", "raw", 0, None, None, fid, decoding, embedding)
    energy_state = copy.deepcopy(model.energy_net.state_dict())
    for chain in (chain for chain in chains if chain.metric not in skip):
        model.energy_net.load_state_dict(energy_state)  # every chain starts from the checkpoint's energy net
        name = f"{chain.label} n={chain.noise_std:g}"
        fid, making, embedding = score(
            name, revised_batches(model, raw, chain, batch_size, seed), metrics, reference, n
        )
        print(f"{name}: FID {fid:.4f}", flush=True)
        yield _row(chain.metric, chain.label, chain.steps, chain.step_size, chain.noise_std, fid, making, embedding)
    model.energy_net.load_state_dict(energy_state)


def _row(
    metric: str,
    chain: str,
    steps: int,
    step_size: float | None,
    noise: float | None,
    fid: float,
    seconds: float,
    fid_seconds: float,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "value": round(float(fid), 6),
        "chain": chain,
        "steps": steps,
        "step_size": step_size,
        "noise_std": noise,
        "seconds": round(seconds, 3),
        "fid_seconds": round(fid_seconds, 3),
    }


# ------------------------------------------------------------------------------- records
def checkpoint_name(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """``epoch=*.ckpt`` of ``run_dir/checkpoints`` (or of ``run_dir``), in epoch then step order."""
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    found = list(folder.glob("epoch=*.ckpt"))
    if not found:
        raise SystemExit(f"--curve: no epoch=*.ckpt in {folder}")

    def order(path: Path) -> tuple[int, ...]:
        return tuple(int(number) for number in re.findall(r"(?:epoch|step)=(\d+)", path.name))

    return sorted(found, key=order)


def experiment_name(datamodule: dict[str, Any] | None, kind: str) -> str:
    dataset = (datamodule or {}).get("dataset", "mnist_csv")
    return f"{'mnist_offline' if dataset == 'mnist_csv' else dataset}_revision_{kind}"


def write_records(path: Path, records: list[dict[str, Any]], quiet: bool = False) -> None:
    """``records``, each stamped with its provenance in place, as a JSON list in ``path``, replaced
    atomically (a stopped run leaves the last complete list); printed unless ``quiet``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    records[:] = [stamped(r) for r in records]  # the caller's list holds what the file holds
    partial.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(partial, path)
    if not quiet:
        print(json.dumps(records, indent=2))
        print(f"records: {path}", flush=True)


RESUME_KEYS = ("checkpoint", "global_step", "samples", "reference", "features", "power_iteration", "seed")


def finished_rows(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier, stopped sweep in ``path`` made with the same checkpoint, latents,
    reference and extractor as ``settings`` (:data:`RESUME_KEYS`), as they were written."""
    if not path.is_file():
        return []
    kept = [r for r in json.loads(path.read_text()) if all(r.get(k) == settings[k] for k in RESUME_KEYS)]
    print(f"resume: {len(kept)} rows of {path} kept: {', '.join(r['metric'] for r in kept) or 'none'}", flush=True)
    return kept


def summary(records: list[dict[str, Any]]) -> None:
    print(f"{'epoch':>5}  {'chain':>8}  {'noise':>6}  {'FID':>10}  {'chain s':>8}  {'FID s':>8}")
    for r in records:
        noise = "" if r["noise_std"] is None else f"{r['noise_std']:g}"
        print(
            f"{r.get('epoch', ''):>5}  {r['chain']:>8}  {noise:>6}  {r['value']:>10.4f}  "
            f"{r['seconds']:>8.1f}  {r['fid_seconds']:>8.1f}"
        )


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="the DualMCMC checkpoint to sweep")
    parser.add_argument("--curve", type=Path, metavar="RUN_DIR", help="score every epoch=*.ckpt of a run")
    parser.add_argument("--samples", type=int, default=5000, help="generated images per row (default 5000)")
    parser.add_argument("--reference", type=int, default=5000, help="real training images (default 5000; all if fewer)")
    parser.add_argument("--chains", default=DEFAULT_CHAINS, help=f"STEPSxSTEP[:NOISE],... (default {DEFAULT_CHAINS})")
    parser.add_argument(
        "--noises", default=DEFAULT_NOISES, help=f"noise levels of chains without :NOISE ({DEFAULT_NOISES})"
    )
    parser.add_argument("--curve-chain", default="70x0.4:0.001", help="the chain of --curve (default 70x0.4:0.001)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared latents and of the chains' noise")
    parser.add_argument("--batch-size", type=int, default=100, help="generation and FID batch (default 100)")
    parser.add_argument(
        "--power-iteration",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the spectral norm's power iteration in the chains, as the official code (default)",
    )
    parser.add_argument("--features", choices=("inception", "small"), default="inception")
    parser.add_argument("--weights", default=OFFLINE_INCEPTION_WEIGHTS, help="Inception weights ($VARS expanded)")
    parser.add_argument(
        "--data", help="a recipe/config whose data: section gives the reference (default: the checkpoint's)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=REPO / "runs" / "fid_cache", help="reference statistics cache"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of --out made with the same checkpoint, latents and reference; score only the others",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "dual_mcmc_mnist_revision_sweep.json")
    parser.add_argument("--curve-out", type=Path, default=RESULTS / "dual_mcmc_mnist_revision_curve.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.ckpt is None and args.curve is None:
        parser.error("give --ckpt CHECKPOINT (the sweep) and/or --curve RUN_DIR (the FID over epochs)")
    if args.samples < 2 or args.reference < 2 or args.batch_size < 1:
        parser.error("--samples and --reference must be >= 2, --batch-size >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    chains = parse_chains(args.chains, args.noises)
    (curve_chain,) = parse_chains(args.curve_chain, str(OFFICIAL_NOISE))[:1]
    extractor = feature_extractor(args.features, args.weights).to(device).eval()
    metrics = FIDMetrics(extractor).to(device)
    first = args.ckpt if args.ckpt is not None else epoch_checkpoints(args.curve)[-1]
    model, info = load_model(first, device, args.power_iteration)
    data, description = build_data(info["datamodule"], args.data)
    reference = reference_state(data, description, args.reference, extractor, args.cache_dir, args.batch_size, device)
    latents = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.samples, model.prior.latent_dim, generator=latents).to(device)  # shared by every row
    prefix = "LEBM_DATA=../shared/data " if args.features == "inception" else ""
    command = (
        prefix + "python experiments/dual_mcmc_revision_sweep.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    common = {
        "method": "DualMCMC",
        "samples": args.samples,
        "reference": reference.n,
        "features": getattr(extractor, "name", type(extractor).__name__),
        "power_iteration": args.power_iteration,
        "seed": args.seed,
        "command": command.strip(),
        "device": this_device(),
        "date": datetime.date.today().isoformat(),
    }

    def budget(info: dict[str, Any]) -> str:
        trained = f"{info['epochs']} epochs (global step {info['global_step']})" if info["epochs"] else "unknown"
        return (
            f"{trained}; FID of {args.samples} samples (shared latents, seed {args.seed}) vs {reference.n} "
            f"training images, {common['features']}"
        )

    results: dict[str, list[dict[str, Any]]] = {}
    written: list[Path] = []
    if args.ckpt is not None:
        print(f"sweep: {args.ckpt}, {args.samples} samples, {len(chains)} chains", flush=True)
        extra = {
            "experiment": experiment_name(info["datamodule"], "sweep"),
            "checkpoint": checkpoint_name(args.ckpt),
            "epochs": info["epochs"],
            "global_step": info["global_step"],
            "budget": budget(info),
        }
        results["sweep"] = finished_rows(args.out, {**extra, **common}) if args.resume else []
        skip = frozenset(row["metric"] for row in results["sweep"])
        for row in sweep_rows(model, z, chains, metrics, reference, args.batch_size, args.seed, skip):
            results["sweep"].append({"method": "DualMCMC", **extra, **row, **common})
            write_records(args.out, results["sweep"], quiet=True)  # the rows so far survive a stopped sweep
        summary(results["sweep"])
        write_records(args.out, results["sweep"])
        written.append(args.out)
    if args.curve is not None:
        records = []
        for path in epoch_checkpoints(args.curve):
            model, info = load_model(path, device, args.power_iteration)
            if info["epochs"] is None:
                info["epochs"] = int(re.search(r"epoch=(\d+)", path.name)[1]) + 1
            print(f"curve: {path.name} ({info['epochs']} epochs)", flush=True)
            for row in sweep_rows(model, z, [curve_chain], metrics, reference, args.batch_size, args.seed):
                extra = {
                    "experiment": experiment_name(info["datamodule"], "curve"),
                    "checkpoint": checkpoint_name(path),
                    "epoch": info["epochs"],
                    "epochs": info["epochs"],
                    "global_step": info["global_step"],
                    "budget": budget(info),
                }
                row["metric"] = f"{row['metric']}_epoch{info['epochs']:03d}"
                records.append({"method": "DualMCMC", **extra, **row, **common})
                write_records(args.curve_out, records, quiet=True)
        results["curve"] = records
        summary(records)
        write_records(args.curve_out, records)
        written.append(args.curve_out)
    if any(path.resolve().parent == RESULTS.resolve() for path in written):
        render_results_md()
    return results


if __name__ == "__main__":
    run_main(main)
