"""Posterior inference on the quickstart model with unadjusted Langevin against MALA.

    python experiments/posterior_samplers.py [--run runs/posterior_samplers/quickstart] [--examples 300]

Trains the LatentEBM quickstart (``recipes/quickstart.yaml``, 8x8 digits) into ``--run`` unless its last
checkpoint is there, then computes on the held-out test digits, once per posterior chain:

- ``anomaly_auroc_shuffled`` / ``anomaly_auroc_flipped`` (and ``anomaly_auprc_*``): AUROC (and AUPRC)
  of the anomaly score ``-log p(x, z)`` at ``z = infer(x)`` separating the test digits from the same
  digits with their pixels shuffled (an easy anomaly) or turned upside down (a hard one);
- ``mean_score``: the mean anomaly score of the test digits;
- ``log_likelihood``: the mean importance-sampled ``log p(x)`` (500 draws from a Gaussian fitted to 10
  posterior draws of that chain, ``lebm.metrics.likelihood``) and its mean standard error;
- ``acceptance``: the mean acceptance of the Metropolis-adjusted chains; for unadjusted Langevin, the
  acceptance MALA would give its proposals at the same step (how far from exact the chain's steps are).

The chains: the recipe's ``Langevin(20, 0.1)`` (the training chain), MALA with the same 20 steps of
0.1, MALA with a step adapted to an acceptance of 0.574 (warm-up on a separate batch), and a long MALA
(200 steps) as the reference; and the score averaged over 5 chains from independent starts (the
posteriors are multimodal: ``docs/diagnostics.md``). Records: ``docs/results/latent_ebm_posterior_samplers.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from records import EPOCH_LINES, stamped, this_device  # noqa: E402
from script import run_lebm, run_main  # noqa: E402

import lebm  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.metrics.likelihood import importance_sampled_log_likelihood, prior_log_normalizer  # noqa: E402
from lebm.metrics.ranking import ranking_metrics  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402
from lebm.samplers import MALA, Langevin, Sampler  # noqa: E402

RECIPE = "recipes/quickstart.yaml"
OUTPUT = REPO / "docs" / "results" / "latent_ebm_posterior_samplers.json"


def train(run: Path) -> Path:
    checkpoint = run / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        command = ["lebm", "fit", "-c", RECIPE, "--trainer.default_root_dir", str(run), "--trainer.logger", "false"]
        print("+", shlex.join(command), flush=True)
        run_lebm([*command, *EPOCH_LINES])
    return checkpoint


def test_digits(limit: int) -> torch.Tensor:
    data = build(resolve_recipe(REPO / RECIPE)["data"])
    data.setup("test")
    return torch.cat([batch_observations(batch) for batch in data.test_dataloader()])[:limit]


def anomalies(x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    flat = x.flatten(1)
    order = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(len(x))])
    return {"shuffled": flat.gather(1, order).view_as(x), "flipped": x.flip(-2)}


def acceptance_of(model, x: torch.Tensor, sampler: Sampler, generator: torch.Generator) -> float:
    """The mean acceptance of ``sampler``'s chains, or for Langevin that of MALA proposals at its step."""
    probe = sampler if isinstance(sampler, MALA) else MALA(sampler.n_steps, sampler.step_size)
    _, stats = model.infer(x, sampler=probe, generator=generator, return_diagnostics=True)
    return float(stats["acceptance"].mean())


def scores_of(model, x: torch.Tensor, sampler: Sampler, generator: torch.Generator, starts: int) -> np.ndarray:
    """The anomaly score ``(B,)``, averaged over ``starts`` chains from independent noise."""
    return np.mean([model.score(x, sampler=sampler, generator=generator).numpy() for _ in range(starts)], axis=0)


def evaluate(model, x: torch.Tensor, sampler: Sampler, seed: int, starts: int = 1) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    scores = scores_of(model, x, sampler, generator, starts)
    results = {"mean_score": float(scores.mean())}
    for name, odd in anomalies(x, torch.Generator().manual_seed(7)).items():
        odd_scores = scores_of(model, odd, sampler, generator, starts)
        targets = np.r_[np.zeros(len(scores)), np.ones(len(odd_scores))]
        auprc, auroc = ranking_metrics(np.r_[scores, odd_scores], targets)
        results[f"anomaly_auroc_{name}"] = float(auroc)
        results[f"anomaly_auprc_{name}"] = float(auprc)
    normaliser = prior_log_normalizer(model.prior, generator=torch.Generator().manual_seed(0))
    estimate = importance_sampled_log_likelihood(model, x, normaliser, sampler=sampler, generator=generator)
    results["log_likelihood"] = float(estimate.value.mean())
    results["log_likelihood_std_error"] = float(estimate.std_error.mean())
    results["acceptance"] = acceptance_of(model, x, sampler, generator)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/posterior_samplers/quickstart")
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    model = lebm.load(train(REPO / args.run), map_location="cpu")
    x = test_digits(args.examples)
    adapted = MALA(20, 0.1, adapt_steps=200)
    warmup = MALA(220, 0.1, adapt_steps=200)
    model.infer(x[:100], sampler=warmup, generator=torch.Generator().manual_seed(9))
    adapted.adaptation.load_state_dict(warmup.adaptation.state_dict())
    chains = {
        "Langevin(20, 0.1) (training chain)": model.posterior_sampler,
        "MALA(20, 0.1)": MALA(20, 0.1),
        f"MALA(20, adapted {float(adapted.adapted_step_size):.3f})": adapted,
        "MALA(200, 0.1) (reference)": MALA(200, 0.1),
        "Langevin(200, 0.1)": Langevin(200, 0.1),
        "Langevin(200, 0.1), score averaged over 5 starts": Langevin(200, 0.1),
    }
    command = f"python experiments/posterior_samplers.py --run {args.run} --examples {args.examples}"
    records = []
    for name, sampler in chains.items():
        results = evaluate(model, x, sampler, seed=1, starts=5 if "5 starts" in name else 1)
        print(name, json.dumps(results), flush=True)
        for metric, value in results.items():
            records.append(
                {
                    "method": "LatentEBM",
                    "experiment": "posterior_samplers",
                    "setting": f"posterior chain {name}",
                    "metric": metric,
                    "value": round(value, 4),
                    "budget": f"quickstart (100 epochs), {len(x)} test digits",
                    "command": command,
                    "device": this_device(),
                    "date": datetime.date.today().isoformat(),
                }
            )
    OUTPUT.write_text(json.dumps([stamped(r) for r in records], indent=1) + "\n")
    print("wrote", OUTPUT.relative_to(REPO))


if __name__ == "__main__":
    run_main(main)
