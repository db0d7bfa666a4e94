"""Dual-MCMC on real 28x28 MNIST on a CPU, and what it achieves.

    LEBM_DATA=../shared/data python experiments/dual_mcmc_mnist.py [--fid-samples 1000] [--skip-fit]

``lebm fit -c recipes/dual_mcmc/mnist_offline.yaml`` in ``runs/dual_mcmc/mnist_offline_record``
(timed), then from its last checkpoint these records go to ``docs/results/dual_mcmc_mnist_offline.json``
and ``docs/results.md`` is regenerated:

- ``fid_generator``, ``fid_revised``: FID (torch-fidelity's Inception-v3, the local weights in
  ``$LEBM_DATA/fid_inception``) of ``--fid-samples`` raw generator samples and of the same samples
  revised by the test-time data chain, against as many training digits. The chain is the
  checkpoint's ``test_data_sampler`` (the recipe's when the run was fitted from it: 70 steps of
  s = 0.4 without noise), or ``--revision-chain STEPSxSTEP:NOISE`` (e.g. ``70x0.4:0.001``, the
  official CIFAR-10 test chain); the record names it (``revision_chain``);
- ``mse_inf``, ``mse_inf_l10``: per-pixel test MSE of reconstructions from the inference
  network's mean ("Inf") and after 10 posterior Langevin steps ("Inf + L=10");
- ``fit_minutes``: wall-clock minutes of ``lebm fit`` (with ``--skip-fit``, the previous record's,
  which timed the fit of the same run folder; every record then also keeps the command that fitted
  it, ``fit_command``).

It also saves ``docs/results/dual_mcmc_mnist_{generator,revised}.png``: 64 samples of each.

The samples are drawn as the official ``task_fid.py`` draws them: the model is in eval mode, but
the energy net's spectral norm keeps its power iteration on in the test-time chain (the official
code never calls ``eval()``; ``DualMCMC``'s ``evaluation_power_iteration``, set here whatever the
checkpoint says; ``--no-power-iteration`` turns it off).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dual_mcmc_revision_sweep import OFFICIAL_NOISE, parse_chains  # noqa: E402
from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device  # noqa: E402
from script import run_lebm, run_main  # noqa: E402

from lebm.callbacks import ReconstructionMSE  # noqa: E402
from lebm.callbacks.images import to_uint8_grid  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.metrics.fid import FIDMetrics, InceptionFeatures  # noqa: E402
from lebm.models import DualMCMC  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402
from lebm.samplers import Langevin  # noqa: E402

RECIPE = "recipes/dual_mcmc/mnist_offline.yaml"
WEIGHTS = "fid_inception/weights-inception-2015-12-05-fp32.pth"


def fit_command(records: list[dict]) -> str | None:
    """The command that fitted the run of earlier ``records``: their ``fit_command``, else their
    ``command`` when it fitted (no ``--skip-fit``)."""
    for record in records:
        if record.get("fit_command"):
            return record["fit_command"]
        if "--skip-fit" not in record.get("command", "--skip-fit"):
            return record["command"]
    return None


def fit(run_dir: Path, extra: list[str]) -> float:
    command = ["lebm", "fit", "-c", RECIPE, "--trainer.default_root_dir", str(run_dir), *extra]
    command += [*EPOCH_LINES, "--overwrite", "true"]
    print("+", shlex.join(command), flush=True)
    start = time.perf_counter()
    run_lebm(command)
    return (time.perf_counter() - start) / 60


def reconstruction_errors(model: DualMCMC, data: L.LightningDataModule) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[ReconstructionMSE(), ReconstructionMSE("mse_inf")],
    )
    (metrics,) = trainer.test(model, data, verbose=False)
    return {"mse_inf_l10": float(metrics["test/mse"]), "mse_inf": float(metrics["test/mse_inf"])}


def fids(model: DualMCMC, reference: torch.Tensor, n: int, batch: int = 100) -> tuple[dict[str, float], dict]:
    """FID of ``n`` raw and revised samples against ``reference`` (the first ``n`` training digits)."""
    weights = os.path.join(os.environ["LEBM_DATA"], WEIGHTS)
    raw_metrics, revised_metrics = (FIDMetrics(InceptionFeatures(weights)) for _ in range(2))
    for start in range(0, n, batch):  # embed the reference once, then share it
        raw_metrics.update(reference[start : start + batch], real=True)
    revised_metrics.load_reference(raw_metrics.reference_state())
    samples: dict[str, list[torch.Tensor]] = {"generator": [], "revised": []}
    model.eval()
    for start in range(0, n, batch):
        stream = torch.Generator().manual_seed(start)
        raw = model.generate(min(batch, n - start), revise=False, generator=stream)
        stream = torch.Generator().manual_seed(start)
        revised = model.generate(min(batch, n - start), generator=stream)
        raw_metrics.update(raw, real=False)
        revised_metrics.update(revised, real=False)
        samples["generator"].append(raw)
        samples["revised"].append(revised)
        print(f"  FID samples {start + len(raw)}/{n}", flush=True)
    values = {"fid_generator": raw_metrics.compute(n)["fid"], "fid_revised": revised_metrics.compute(n)["fid"]}
    return values, {name: torch.cat(parts) for name, parts in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fid-samples", type=int, default=1000, help="generated and reference images per FID")
    parser.add_argument("--skip-fit", action="store_true", help="evaluate the existing run")
    parser.add_argument(
        "--checkpoint",
        help="the run's checkpoint to evaluate (in checkpoints/; default the newest last*.ckpt, so a last-v1.ckpt "
        "written beside a stale last.ckpt is the one read)",
    )
    parser.add_argument(
        "--revision-chain",
        help="STEPSxSTEP:NOISE, the data chain that revises the samples (default: the checkpoint's test_data_sampler)",
    )
    parser.add_argument(
        "--power-iteration",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the spectral norm's power iteration in the test-time chain, as the official code (default)",
    )
    parser.add_argument("fit_args", nargs="*", help="extra lebm fit arguments (after --)")
    args = parser.parse_args()
    if "LEBM_DATA" not in os.environ:
        raise SystemExit("set LEBM_DATA to the folder holding mnist/ and fid_inception/ (e.g. ../shared/data)")
    revision_chain = None  # checked before the fit: a mistake here must not cost a training run
    if args.revision_chain:
        chains = parse_chains(args.revision_chain, str(OFFICIAL_NOISE), "--revision-chain")  # STEPSxSTEP[:NOISE]
        if len(chains) != 1:
            raise SystemExit(f"--revision-chain names one chain, got {args.revision_chain!r}")
        revision_chain = chains[0].sampler()
    run_dir = REPO / "runs" / "dual_mcmc" / "mnist_offline_record"
    minutes = None if args.skip_fit else fit(run_dir, args.fit_args)
    checkpoint = run_dir / "checkpoints" / args.checkpoint if args.checkpoint else newest_last_checkpoint(run_dir)
    model = DualMCMC.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    model.hparams.evaluation_power_iteration = args.power_iteration  # the official sampling (see the docstring)
    if revision_chain is not None:
        model.test_data_sampler = revision_chain
    config = resolve_recipe(REPO / RECIPE)
    data = build(config["data"])
    L.seed_everything(0, verbose=False)
    values = reconstruction_errors(model, data)
    data.setup("fit")
    training = torch.cat([batch_observations(b) for b in data.train_dataloader()])
    fid_values, samples = fids(model, training[: args.fid_samples], args.fid_samples)
    values.update(fid_values)
    path = REPO / "docs" / "results" / "dual_mcmc_mnist_offline.json"
    fitted_by = {}
    if minutes is None and path.is_file():  # the same run folder's fit: its time and its command
        earlier = json.loads(path.read_text())
        minutes = next((r["value"] for r in earlier if r["metric"] == "fit_minutes"), None)
        fitted_by = {"fit_command": command} if (command := fit_command(earlier)) else {}
    if minutes is not None:
        values["fit_minutes"] = minutes
    for name, images in samples.items():
        grid = to_uint8_grid(images[:64], nrow=8, min_size=28)
        Image.fromarray(np.squeeze(grid)).save(REPO / "docs" / "results" / f"dual_mcmc_mnist_{name}.png")
    epochs = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1
    n = args.fid_samples
    command = "LEBM_DATA=../shared/data python experiments/dual_mcmc_mnist.py " + " ".join(sys.argv[1:])
    chain = model.test_data_sampler
    described = f"{chain.n_steps}x{chain.step_size:g} n={chain.noise:g}" if isinstance(chain, Langevin) else repr(chain)
    revision = {"revision_chain": described}
    budget = f"{epochs} epochs of batch 100 on 4,500 digits; FID of {n} samples vs {n} training digits"
    budget += f"; revised by {described}"
    records = [
        {
            "method": "DualMCMC",
            "experiment": "mnist_offline",
            "metric": metric,
            "value": round(value, 4),
            "budget": budget,
            **(revision if metric == "fid_revised" else {}),
            "command": command.strip(),
            **fitted_by,
            "device": this_device(),
            "date": datetime.date.today().isoformat(),
        }
        for metric, value in values.items()
    ]
    path.write_text(json.dumps([stamped(r) for r in records], indent=2) + "\n")
    print(json.dumps(values, indent=2))
    render_results_md()


if __name__ == "__main__":
    run_main(main)
