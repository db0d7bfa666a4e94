"""Where the held-out digits' latents fall under the prior: the anomaly score's parts, per class.

    python experiments/anomaly_latents.py RUN_DIR [RUN_DIR ...] [--max-batches N]

For each run of ``experiments/mnist_anomaly_offline.py`` (its folder, ``runs/<method>/<recipe>/digit<d>``),
loads the newest ``last*.ckpt``, infers ``z = infer(x)`` for the test split (the encoder's mean, or
the posterior chain's end for a method without an encoder) and splits the score
``-log p(x, z) = -log p(x|z) + U(z)`` further, with ``U(z) = E(z) + ||z||^2 / (2 sigma^2)``:

- ``reconstruction``: the decoder's ``-log p(x|z)``;
- ``prior``: ``U(z)``; ``gaussian``: ``||z||^2 / (2 sigma^2)``; ``tilt``: the EBM's ``E(z)``;
- ``norm_<layer>``: ``||z_l||`` of each latent group (hierarchical models).

Prints one JSON object per run: each part's mean over the normal and the held-out test digits, and
its AUPRC and AUROC as a score on its own (AUROC above 0.5: higher on held-out digits, as a score
should be; below 0.5: the part ranks held-out digits as more typical). Needs ``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import yaml
from records import newest_last_checkpoint, with_progress
from script import existing_folder, run_main
from torch import Tensor

import lebm
from lebm.config import build
from lebm.metrics.ranking import ranking_metrics
from lebm.models.base import batch_observations


@torch.no_grad()
def score_parts(model, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """The score's parts ``(B,)`` each at ``z = infer(x)`` (see the module docstring): the two terms
    the ``AnomalyDetection`` callback ranks (``model.anomaly_terms``), the prior's tilt
    (``residual_energy``) and, by difference, its Gaussian reference."""
    with torch.enable_grad():
        z = model.infer(x, generator=generator)
    terms = model.anomaly_terms(x, z, samples=0)
    prior_energy = terms["score_prior_term"]
    tilt = model.prior.residual_energy(z)
    if tilt is None:  # a plain Gaussian prior, or a multi-stage prior before its first stage
        tilt = torch.zeros_like(prior_energy)
    parts = {
        "reconstruction": terms["score_reconstruction_term"],
        "prior": prior_energy,
        "gaussian": prior_energy - tilt,
        "tilt": tilt,
    }
    groups = getattr(model.prior, "groups", None)
    if groups is not None:
        for name, latent in zip(groups.names, groups.split(z), strict=True):
            parts[f"norm_{name}"] = latent.norm(dim=1)
    return parts


def describe_run(run_dir: Path, max_batches: int | None) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    model = lebm.load(str(newest_last_checkpoint(run_dir)), map_location="cpu").eval()
    data = build(config["data"])
    data.setup("test")
    generator = torch.Generator().manual_seed(0)
    collected: dict[str, list[Tensor]] = {}
    for index, batch in enumerate(data.test_dataloader()):
        if max_batches is not None and index >= max_batches:
            break
        for name, values in score_parts(model, batch_observations(batch), generator).items():
            collected.setdefault(name, []).append(values)
    parts = {name: torch.cat(values) for name, values in collected.items()}
    held_out = torch.isin(data.test_labels, torch.as_tensor(data.anomaly_classes))[: len(parts["prior"])]
    summary = {}
    for name, values in parts.items():
        auprc, auroc = ranking_metrics(values.numpy(), held_out.numpy())
        summary[name] = {
            "mean_normal": round(float(values[~held_out].mean()), 3),
            "mean_held_out": round(float(values[held_out].mean()), 3),
            "auprc": round(auprc, 3),
            "auroc": round(auroc, 3),
        }
    return {
        "run": str(run_dir),
        "method": type(model).__name__,
        "held_out": list(data.anomaly_classes),
        "n": int(len(held_out)),
        "parts": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=existing_folder)
    parser.add_argument("--max-batches", type=int, default=None, help="score only the first N test batches")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    for run_dir in with_progress(args.runs, "run"):
        print(json.dumps(describe_run(run_dir, args.max_batches)), flush=True)


if __name__ == "__main__":
    run_main(main)
