"""The method-and-score part of the MNIST anomaly gap: the score's terms, their weighting, and the posterior.

    python experiments/anomaly_gap.py RUN_DIR --setting NAME [--weights 0,0.5,1,2,4,8]
        [--steps 20,100] [--sampled 10] [--checkpoint PATH] [--split test|val]
        [--output docs/results/<method>_mnist_anomaly_gap.json]

``RUN_DIR`` is a run folder of ``experiments/mnist_anomaly_offline.py`` (its ``config.yaml`` and
newest ``last*.ckpt``, or ``--checkpoint``). No training: the run's test split (or, ``--split val``,
its validation split: where a score would be chosen) is scored once per posterior, and each
posterior's latents give the score's two terms per image, ``-log p(x|z)`` (reconstruction) and
``U(z)`` (the prior's energy), from which every weighting is ranked (held-out digits positive):

- ``recon + w * prior`` for each ``w`` of ``--weights`` (``w = 1`` is ``-log p(x, z)``, the papers'
  score; ``w = 0`` the reconstruction term alone), and the prior term alone;
- the posterior: the model's own (LatentEBM: the Langevin chain from noise; the hierarchical
  model: the encoder's mean), then each chain length of ``--steps`` (LatentEBM: the chain from noise
  with that many steps; a model with an encoder: Langevin on ``-log p(x, z)`` started at the
  encoder's mean), and, for a model with an encoder, the score averaged over ``--sampled`` draws of
  ``q(z|x)`` (the hierarchical paper's reading).

Each reading becomes one record (``experiment: mnist_anomaly_gap``, ``metric: auprc``, with its
``auroc``, ``prior_weight`` and ``posterior``) in ``--output``; ``--print`` only prints them.
Needs ``LEBM_DATA``.
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

import torch
import yaml
from mnist_anomaly_offline import save_record
from records import newest_last_checkpoint, render_results_md, this_device
from script import existing_folder, run_main
from torch import Tensor

import lebm
from lebm.config import build
from lebm.data.batches import batch_observations
from lebm.metrics.ranking import ranking_metrics
from lebm.samplers import Langevin

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "mnist_anomaly_gap"


def evaluation_split(run: Path, split: str = "test") -> tuple[Tensor, Tensor, int]:
    """The run's ``split`` (``"test"`` or ``"val"``) images ``(N, C, H, W)``, whether each is a
    held-out digit ``(N,)``, and the held-out digit (the first, for one-digit runs)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = config["data"]
    data["init_args"]["root"] = os.path.join(os.environ["LEBM_DATA"], "mnist")
    module = build(data)
    module.setup("test" if split == "test" else "fit")
    images, labels = [], []
    for batch in module.test_dataloader() if split == "test" else module.val_dataloader():
        images.append(batch_observations(batch))
        labels.append(batch[1])
    held_out = list(module.anomaly_classes)
    return torch.cat(images), torch.isin(torch.cat(labels), torch.tensor(held_out)), held_out[0]


def posteriors(model, steps: list[int]) -> dict[str, dict]:
    """The posteriors to compare: a name and the keyword arguments of ``model.infer`` for each."""
    own = model.posterior_sampler
    found: dict[str, dict] = {}
    if model.encoder is None:
        step_size = own.step_size
        found[f"langevin {own.n_steps} steps from noise (the model's)"] = {}
        for n in steps:
            if n != own.n_steps:
                found[f"langevin {n} steps from noise"] = {"sampler": Langevin(n, step_size)}
    else:
        found["encoder mean (the model's)"] = {"refine": False}
        for n in steps:
            found[f"encoder mean + langevin {n} steps"] = {"start": "mean", "sampler": Langevin(n, 0.1)}
    return found


def terms_at(model, images: Tensor, infer: dict, batch: int, seed: int) -> dict[str, Tensor]:
    """The score's two terms ``(N,)`` each at ``z = infer(x, **infer)`` for every test image."""
    generator = torch.Generator().manual_seed(seed)
    recon, prior = [], []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        z = model.infer(x, generator=generator, **infer)
        with torch.no_grad():
            terms = model.anomaly_terms(x, z, samples=0)
        recon.append(terms["score_reconstruction_term"])
        prior.append(terms["score_prior_term"])
    return {"reconstruction": torch.cat(recon), "prior": torch.cat(prior)}


def sampled_terms(model, images: Tensor, samples: int, batch: int, seed: int) -> dict[str, Tensor]:
    """The two terms averaged over ``samples`` draws of ``q(z|x)`` (a model with an encoder)."""
    generator = torch.Generator().manual_seed(seed)
    recon, prior = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            terms = model.anomaly_terms(images[start : start + batch], None, samples=samples, generator=generator)
            recon.append(terms["score_reconstruction_term"])
            prior.append(terms["score_prior_term"])
    return {"reconstruction": torch.cat(recon), "prior": torch.cat(prior)}


def rank(score: Tensor, held_out: Tensor) -> tuple[float, float]:
    """AUPRC (average precision) and AUROC of ``score`` with the held-out digits positive."""
    auprc, auroc = ranking_metrics(score.double().numpy(), held_out.numpy())
    return round(float(auprc), 4), round(float(auroc), 4)


def weighted_readings(terms: dict[str, Tensor], held_out: Tensor, weights: list[float]) -> list[dict]:
    """One reading per weight ``w`` of ``recon + w * prior``, and one of the prior term alone."""
    readings = []
    for w in weights:
        auprc, auroc = rank(terms["reconstruction"] + w * terms["prior"], held_out)
        readings.append({"score": f"recon + {w:g} x prior", "prior_weight": w, "value": auprc, "auroc": auroc})
    auprc, auroc = rank(terms["prior"], held_out)
    readings.append({"score": "prior term alone", "prior_weight": None, "value": auprc, "auroc": auroc})
    return readings


def record_of(reading: dict, context: dict) -> dict:
    """A record of ``reading`` (a score under a posterior) in the run's ``context``."""
    return {
        "method": context["method"],
        "experiment": EXPERIMENT,
        "metric": "auprc",
        "digit": context["digit"],
        "setting": f"{context['setting']}; {reading['posterior']}; {reading['score']}",
        "cause": "method and score",
        "run_setting": context["setting"],
        "posterior": reading["posterior"],
        "score": reading["score"],
        "prior_weight": reading["prior_weight"],
        "value": reading["value"],
        "auroc": reading["auroc"],
        "split": context["split"],
        "data_split": "disjoint",
        "seconds": reading.get("seconds"),
        "budget": context["budget"],
        "command": context["command"],
        "device": this_device(),
        "date": datetime.date.today().isoformat(),
    }


def method_folder(run: Path) -> str:
    """The method's folder of a run under ``runs/`` (``runs/<method>/...``), as the records' file names use it."""
    if not run.is_relative_to(REPO / "runs"):
        raise SystemExit(f"{run} is not a run folder under {REPO / 'runs'}: give --output")
    return run.relative_to(REPO / "runs").parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=existing_folder)
    parser.add_argument("--setting", required=True, help="the run's name in the records, e.g. 'pool_all, 10 epochs'")
    parser.add_argument("--weights", default="0,0.5,1,2,4,8", help="comma-separated prior-term weights")
    parser.add_argument("--steps", default="20,100", help="comma-separated posterior chain lengths ('' for none)")
    parser.add_argument("--sampled", type=int, default=10, help="draws of q(z|x) to average (encoder models)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="score a seeded draw of N images of the split")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the run's newest last*.ckpt")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the split to score")
    parser.add_argument("--output", default=None, help="default: docs/results/<method folder>_mnist_anomaly_gap.json")
    parser.add_argument("--print", dest="only_print", action="store_true", help="print the records, write nothing")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    args.run = args.run.resolve()
    weights = [float(w) for w in args.weights.split(",")]
    steps = [int(n) for n in args.steps.split(",") if n]
    checkpoint_path = args.checkpoint or newest_last_checkpoint(args.run)
    if not checkpoint_path.is_file():
        parser.error(f"--checkpoint {checkpoint_path}: no such file")
    model = lebm.load(str(checkpoint_path), map_location="cpu").eval()
    images, held_out, digit = evaluation_split(args.run, args.split)
    if args.limit:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.limit]
        images, held_out = images[keep], held_out[keep]
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    context = {
        "method": type(model).__name__,
        "digit": digit,
        "setting": args.setting
        + (f", {args.limit} {args.split} images" if args.limit else "")
        + (", the validation split" if args.split == "val" else ""),
        "budget": f"no training: {checkpoint_path.name} of {args.run.relative_to(REPO)} "
        f"({checkpoint['global_step']:,} updates)",
        "split": "test (the protocol)" if args.split == "test" else "validation (where a score is chosen)",
        "command": "LEBM_DATA=../shared/data " + shlex.join(["python", "experiments/anomaly_gap.py", *sys.argv[1:]]),
    }
    readings = []
    for name, infer in posteriors(model, steps).items():
        clock = time.perf_counter()
        terms = terms_at(model, images, infer, args.batch, args.seed)
        seconds = round(time.perf_counter() - clock, 1)
        chosen = weighted_readings(terms, held_out, weights)
        if "(the model's)" not in name:  # other posteriors: the papers' score and the reconstruction term
            chosen = [r for r in chosen if r["prior_weight"] in (0.0, 1.0)]
        readings += [{**r, "posterior": name, "seconds": seconds} for r in chosen]
        print(name, {r["score"]: r["value"] for r in chosen}, f"{seconds} s", flush=True)
    if model.encoder is not None and args.sampled:
        terms = sampled_terms(model, images, args.sampled, args.batch, args.seed)
        chosen = [r for r in weighted_readings(terms, held_out, weights) if r["prior_weight"] in (0.0, 1.0)]
        readings += [{**r, "posterior": f"{args.sampled} draws of q(z|x)"} for r in chosen]
        print("sampled", {r["score"]: r["value"] for r in chosen}, flush=True)
    records = [record_of(reading, context) for reading in readings]
    if args.only_print:
        print(json.dumps(records, indent=2))
        return
    output = Path(args.output or REPO / "docs" / "results" / f"{method_folder(args.run)}_{EXPERIMENT}.json")
    for record in records:
        save_record(output, record, lambda r: (r["digit"], r["metric"], r.get("setting"), r.get("data_split")))
    render_results_md()


if __name__ == "__main__":
    run_main(main)
