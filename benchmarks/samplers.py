"""Time the samplers on a recipe's prior and posterior chains at an equal budget of gradients.

    python benchmarks/samplers.py --recipe recipes/quickstart.yaml [--gradients 60] [--batch-size 100] [--repeats 10]

Builds the recipe's model (untrained: the cost of a chain does not depend on the weights) and times
``Langevin(G, s)``, ``MALA(G, s)``, ``MALA`` with step-size adaptation and ``HMC(G / 5, s, n_leapfrog=5)``
(G gradient evaluations each, MALA and HMC one more at the start) on the prior's chain from noise and
on the posterior chain of one data-sized batch of noise images. Prints one JSON line: the median
seconds per chain and per gradient evaluation of each, and each sampler's time relative to Langevin's
(the cost of the accept/reject step and the energies it needs). On a GPU the chains are captured as
CUDA graphs (the first calls record, the timed ones replay).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from common import describe_device, load_recipe, timed

from lebm.config import build
from lebm.samplers import HMC, MALA, Langevin, Sampler

LEAPFROG = 5


def samplers(gradients: int, step: float) -> dict[str, Sampler]:
    return {
        "Langevin": Langevin(gradients, step),
        "MALA": MALA(gradients, step),
        "MALA_adaptive": MALA(gradients, step, adapt_steps=10**6),  # adapting throughout: the update included
        "HMC": HMC(max(1, gradients // LEAPFROG), step, n_leapfrog=LEAPFROG),
    }


def median_seconds(device: torch.device, work: Callable[[], object], repeats: int) -> float:
    for _ in range(2):  # warm up (and record the graphs on a GPU)
        work()
    return statistics.median(timed(device, work)[1] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--gradients", type=int, default=60, help="gradient evaluations per chain")
    parser.add_argument("--step-size", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(recipe["model"]).to(device).eval()
    shape = model.decoder.decode(torch.zeros(1, model.prior.latent_dim, device=device)).shape[1:]
    x = torch.rand(batch_size, *shape, device=device) * 2 - 1
    generator = torch.Generator(device).manual_seed(0)
    chains: dict[str, Callable[[Sampler], object]] = {
        "prior": lambda sampler: model.prior.sample(batch_size, sampler=sampler, generator=generator),
        "posterior": lambda sampler: model.infer(x, start="noise", sampler=sampler, generator=generator),
    }
    seconds: dict[str, dict[str, float]] = {}
    for chain, run in chains.items():
        for name, sampler in samplers(args.gradients, args.step_size).items():
            if isinstance(sampler, torch.nn.Module):
                sampler.to(device)
            seconds.setdefault(chain, {})[name] = median_seconds(device, lambda s=sampler, r=run: r(s), args.repeats)
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "device": describe_device(device),
                "batch_size": batch_size,
                "gradients_per_chain": args.gradients,
                "sec_per_chain": {c: {k: round(v, 5) for k, v in t.items()} for c, t in seconds.items()},
                "sec_per_gradient": {
                    c: {k: round(v / args.gradients, 7) for k, v in t.items()} for c, t in seconds.items()
                },
                "relative_to_langevin": {
                    c: {k: round(v / t["Langevin"], 3) for k, v in t.items()} for c, t in seconds.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
