"""The Python cost of a captured chain's cache key, per call, for each method's paper recipe.

    python benchmarks/capture_key.py [--repeats 200]

On a GPU every captured chain call checks that the chain may be captured and computes its key
(:func:`lebm.recording.keys.chain_key`: the sampler, the energy, shapes, autocast state and a
description of every module the energy reads), before it replays. This times both on the CPU (the
work is the same on any device) for every chain of each recipe and prints one JSON line:
microseconds per call and the number of modules described.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import load_recipe  # noqa: E402

from lebm.config import build  # noqa: E402
from lebm.recording.keys import ChainCall, chain_key, why_eager  # noqa: E402

RECIPES = {
    "latent_ebm": "recipes/latent_ebm/svhn.yaml",
    "multistage_nce": "recipes/multistage_nce/svhn.yaml",
    "dual_mcmc": "recipes/dual_mcmc/cifar10.yaml",
    "hierarchical": "recipes/hierarchical/svhn.yaml",
}


def chains(model: Any) -> dict[str, ChainCall]:
    """The model's chain calls as the methods make them (batch 100; the data are zeros)."""
    z0 = torch.zeros(100, model.prior.latent_dim)
    x = torch.zeros(100, 3, 32, 32)
    calls = {}
    if getattr(model, "posterior_sampler", None) is not None:
        frozen = [model.decoder, model.prior]
        calls["posterior"] = ChainCall(model.posterior_sampler, model.posterior_chain_energy, z0, (x,), 1.0, frozen)
    if getattr(model.prior, "sampler", None) is not None:
        calls["prior"] = ChainCall(model.prior.sampler, model.prior.residual_energy, z0, (), 1.0, [model.prior])
    if getattr(model, "data_sampler", None) is not None:
        calls["data"] = ChainCall(model.data_sampler, model.energy_net, x, (), 0.0, [model.energy_net])
    return calls


def key_cost(call: ChainCall, repeats: int) -> dict[str, float]:
    """Microseconds of one call's capture check and key, and the modules described."""
    key, modules = chain_key(call)
    hash(key)
    start = time.perf_counter()
    for _ in range(repeats):
        why_eager(call.sampler)
        hash(chain_key(call)[0])
    return {"us_per_call": round((time.perf_counter() - start) / repeats * 1e6, 1), "modules": len(modules)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    result = {}
    for name, recipe in RECIPES.items():
        model = build(load_recipe(recipe)["model"])
        result[name] = {chain: key_cost(call, args.repeats) for chain, call in chains(model).items()}
    print(json.dumps({"load_average": os.getloadavg()[0], "torch": torch.__version__, "recipes": result}))


if __name__ == "__main__":
    main()
