"""Time one prior chain (``model.prior.sample``) of a recipe's model, per stage for multi-stage priors.

    python benchmarks/prior_chain.py --recipe recipes/multistage_nce/svhn.yaml [--batch-size 100] [--repeats 10]

Builds the recipe's model (nothing is read from disk but the YAML) and times ``prior.sample(B)``
with the prior's own sampler: once for a single-energy prior (LatentEBM), and for every number
of completed stages ``k = 0 .. K-1`` of a ``ProductOfRatiosPrior`` (``k = 0`` is exact Gaussian
sampling, ``k > 0`` a chain over ``k`` ratio nets). Prints one JSON line with the median seconds
per chain for each case.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from common import describe_device, load_recipe, timed

from lebm.config import build


def time_sampling(prior: torch.nn.Module, batch_size: int, repeats: int, device: torch.device) -> float:
    times = [timed(device, lambda: prior.sample(batch_size))[1] for _ in range(repeats + 1)]
    return statistics.median(times[1:])  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    device = torch.device(args.device)
    torch.manual_seed(0)
    prior = build(recipe["model"]).prior.to(device)
    seconds: dict[str, float] = {}
    n_stages = getattr(prior, "n_stages", None)
    if n_stages is None:
        seconds["single_energy"] = time_sampling(prior, batch_size, args.repeats, device)
    else:
        for stage in range(n_stages):
            seconds[f"stage_{stage}"] = time_sampling(prior, batch_size, args.repeats, device)
            prior.complete_stage()
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "prior": type(prior).__name__,
                "device": describe_device(device),
                "batch_size": batch_size,
                "sec_per_chain": {k: round(v, 5) for k, v in seconds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
