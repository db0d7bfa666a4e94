"""What DAMC's training iteration costs against LatentEBM's on matched recipes, and where it goes.

    python benchmarks/damc_cost.py [--pairs mnist_anomaly_offline,quickstart,svhn] [--iters 5] [--warmup 1]
        [--threads N] [--batch-size N] [--accelerator cpu|gpu|auto]

For each pair of :data:`PAIRS` (DAMC's recipe, LatentEBM's recipe of the same data and generator),
each recipe's method runs its own ``training_step`` through a Lightning Trainer on random data of the
recipe's shape, as ``benchmarks/train_step.py`` times it (its ``time_method`` and ``ChainClock``:
the median over ``--iters`` iterations after ``--warmup``, each recipe at its own batch size unless
``--batch-size``). DAMC's iteration is split into (seconds per iteration, medians):

- ``amortizer_sampling``: the chains' start, ``Q_ema``'s ancestral samples (``amortizer_ema.start``);
- ``posterior_sampler`` and ``prior.sampler``: the two Langevin chains (``train_step.py --split``);
- ``amortizer_steps``: the ``amortizer_steps`` distillation losses and their updates;
- ``decoder_and_prior_updates``: the generator's loss and the generator's and the energy net's updates;
- ``updates_and_rest``: what is left (the contrastive loss's forward, the start and end errors, the
  logging, Lightning's loop).

LatentEBM's: its two chains and ``updates_and_rest``. Per pair: ``damc_over_latent_ebm``, the ratio
of seconds per iteration (and per example), and the ancestral sampling alone, timed outside training
(``amortizer_ema.start`` of one batch, the median of ``--iters`` calls), also in steps of DAMC's
posterior chain. Prints one JSON line, with the machine's load average before and after
(``os.getloadavg()``: on a shared machine the seconds grow with it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import describe_device, load_recipe, run_facts, timed  # noqa: E402
from train_step import ChainClock, observation_shape, peak_memory_mb, time_method  # noqa: E402

from lebm.config import build  # noqa: E402

#: Pair name -> (DAMC's recipe, LatentEBM's recipe of the same data and generator).
PAIRS: dict[str, tuple[str, str]] = {
    "mnist_anomaly_offline": (
        "recipes/damc/mnist_anomaly_offline.yaml",
        "recipes/latent_ebm/mnist_anomaly_offline.yaml",
    ),
    "quickstart": ("recipes/damc/quickstart.yaml", "recipes/quickstart.yaml"),
    "svhn": ("recipes/damc/svhn.yaml", "recipes/latent_ebm/svhn.yaml"),
}
#: The pairs run without --pairs (SVHN's official widths are a GPU's work: ``--pairs svhn --accelerator gpu``).
DEFAULT_PAIRS = ("mnist_anomaly_offline", "quickstart")


def add_section(clock: ChainClock, owner: Any, attribute: str, name: Any) -> None:
    """Time every call of ``owner.attribute`` into ``clock``'s current iteration under ``name`` (a
    string, or a function of the call's arguments that returns one), CUDA synchronised at both ends."""
    original = getattr(owner, attribute)

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = original(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        if clock.iterations:
            key = name(*args, **kwargs) if callable(name) else name
            current = clock.iterations[-1]
            current[key] = current.get(key, 0.0) + time.perf_counter() - start
        return out

    setattr(owner, attribute, timed_call)  # an instance attribute: it shadows the method


def split_damc(clock: ChainClock, model: Any) -> None:
    """Add DAMC's parts to ``clock``: the chains' start, the amortizer's steps, the other updates."""
    amortizer_parameters = {id(p) for p in model.amortizer.parameters()}

    def which_update(optimizer: Any, *args: Any, **kwargs: Any) -> str:
        inner = getattr(optimizer, "optimizer", optimizer)
        first = inner.param_groups[0]["params"][0]
        return "amortizer_steps" if id(first) in amortizer_parameters else "decoder_and_prior_updates"

    add_section(clock, model.amortizer_ema, "start", "amortizer_sampling")
    add_section(clock, model, "distillation_loss", "amortizer_steps")
    add_section(clock, model, "generator_loss", "decoder_and_prior_updates")
    add_section(clock, model, "step_optimizers", which_update)


def time_recipe(recipe_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration of one recipe, split; for DAMC, its ancestral sampling alone as well."""
    recipe = load_recipe(recipe_path)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    torch.manual_seed(args.seed)
    model = build(recipe["model"])
    shape = observation_shape(model)
    chains = {"posterior": repr(model.posterior_sampler), "prior": repr(model.prior.sampler)}
    clock = ChainClock(model)
    damc = hasattr(model, "amortizer_ema")
    if damc:
        split_damc(clock, model)
    times, device = time_method(model, shape, batch_size, args.iters, args.warmup, args.accelerator, "32-true", clock)
    result: dict[str, Any] = {
        "recipe": recipe_path,
        "method": type(model).__name__,
        "device": describe_device(device),
        "batch_size": batch_size,
        "sec_per_iter": round(statistics.median(times), 4),
        "sec_per_iter_min": round(min(times), 4),
        "sec_per_example": round(statistics.median(times) / batch_size, 6),
        "split_sec_per_iter": clock.median_split(times, args.warmup),
        "chains": chains,
    }
    if device.type == "cuda":  # reset for each recipe; a CPU's peak RSS is the whole process's so far
        result["peak_mem_mb"] = round(peak_memory_mb(device), 1)
    if damc:
        result.update(ancestral_sampling(model, shape, batch_size, device, args.iters, result["split_sec_per_iter"]))
    return result


def ancestral_sampling(
    model: Any, shape: tuple[int, ...], batch_size: int, device: torch.device, repeats: int, split: dict[str, float]
) -> dict[str, Any]:
    """``Q_ema``'s conditional ancestral samples of one batch, timed alone (median of ``repeats``
    calls after one warm-up), and in steps of the posterior chain as the iteration's split times it."""
    model.to(device).train()
    x = torch.rand(batch_size, *shape, device=device) * 2 - 1
    generator = torch.Generator(device).manual_seed(0)

    def work() -> Any:
        return model.amortizer_ema.start(batch_size, context=x, generator=generator)

    timed(device, work)
    seconds = statistics.median(timed(device, work)[1] for _ in range(repeats))
    steps = model.posterior_sampler.n_steps
    per_step = split.get("posterior_sampler", 0.0) / steps if steps else 0.0
    return {
        "amortizer_sampling_steps": model.amortizer.sampling_steps,
        "amortizer_sampling_alone_sec": round(seconds, 4),
        "amortizer_sampling_in_posterior_steps": round(seconds / per_step, 2) if per_step else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help=f"comma-separated, of {', '.join(PAIRS)}")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="one batch size for every recipe (default: each's)"
    )
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        parser.error(f"unknown pairs {sorted(unknown)}: pairs are {', '.join(PAIRS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    out: dict[str, Any] = {"iters": args.iters, "warmup": args.warmup, "pairs": {}}
    for name in pairs:
        damc_recipe, latent_ebm_recipe = PAIRS[name]
        damc = time_recipe(damc_recipe, args)
        latent_ebm = time_recipe(latent_ebm_recipe, args)
        out["pairs"][name] = {
            "damc": damc,
            "latent_ebm": latent_ebm,
            "damc_over_latent_ebm": round(damc["sec_per_iter"] / latent_ebm["sec_per_iter"], 3),
            "damc_over_latent_ebm_per_example": round(damc["sec_per_example"] / latent_ebm["sec_per_example"], 3),
        }
    out.update(
        {
            "device": next(iter(out["pairs"].values()))["damc"]["device"] if out["pairs"] else None,
            **run_facts(load_before),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
