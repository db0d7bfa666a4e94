"""The Python cost of a captured chain's cache key, per call, for each method's paper recipe.

    python benchmarks/capture_key.py [--repeats 200]

On a GPU every captured chain call computes its key (:meth:`lebm.samplers.capture.keys.ChainCall.key`:
the sampler's settings, shapes, autocast state and the fingerprint of every module the energy reads)
and checks that the chain may be captured, before it replays. This times both on the CPU (the work
is the same on any device) for every chain of each recipe and prints one JSON line: microseconds per
call and the number of modules fingerprinted.
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
from lebm.samplers.capture.keys import ChainCall, submodules, why_not_captured  # noqa: E402

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
        modules = submodules([model.decoder, model.prior])
        calls["posterior"] = ChainCall(model.posterior_sampler, model.posterior_chain_energy, z0, (x,), 1.0, modules)
    if getattr(model.prior, "sampler", None) is not None:
        modules = submodules([model.prior])
        calls["prior"] = ChainCall(model.prior.sampler, model.prior.residual_energy, z0, (), 1.0, modules)
    if getattr(model, "data_sampler", None) is not None:
        modules = submodules([model.energy_net])
        calls["data"] = ChainCall(model.data_sampler, model.energy_net, x, (), 0.0, modules)
    return calls


def key_cost(call: ChainCall, repeats: int) -> dict[str, float]:
    """Microseconds of one call's key and capture check, and the modules fingerprinted."""
    hash(call.key())
    start = time.perf_counter()
    for _ in range(repeats):
        hash(call.key())
        why_not_captured(call.sampler, call.modules)
    return {"us_per_call": round((time.perf_counter() - start) / repeats * 1e6, 1), "modules": len(call.modules)}


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
