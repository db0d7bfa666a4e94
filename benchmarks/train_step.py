"""Time one full training iteration of a recipe's method on random data of the recipe's shape.

    python benchmarks/train_step.py --recipe recipes/latent_ebm/svhn.yaml --iters 10 --warmup 2 [--baseline]

Builds the recipe's model (nothing is read from disk but the YAML), feeds batches of uniform
noise in [-1, 1] shaped like the decoder's output, and runs the method's own ``training_step``
(both chains and both updates) through a Lightning Trainer. Prints one JSON line:
``sec_per_iter`` (median), ``device`` (read inside the timed iterations, from the device the model
was on: Lightning moves it back to the CPU when ``fit`` ends), ``peak_mem_mb`` (on a GPU:
``torch.cuda.max_memory_allocated`` of that device since the start; on a CPU: the process's peak
RSS), ``chain_capture`` (chains captured, calls served by a replay, declared calls run eagerly),
and with ``--baseline`` the same iteration written the usual way (``plain_latent_ebm.py``:
parameters not frozen, one ``autograd.grad`` per energy term and step, fp32, eager), timed on the
same device, with the ratio.
``--chain-capture off`` runs every chain eagerly (on a CUDA device chains are captured whole as
CUDA graphs by default; elsewhere they always run eagerly).
``--split`` adds ``split_sec_per_iter``: the seconds each chain (data, posterior, prior) takes per
iteration and the rest (the losses' passes and the updates).
``--precision bf16-mixed`` runs the method under Lightning's bf16 autocast (chain states stay fp32).
``--generate N`` adds ``generate_samples_per_sec``: ``model.generate(N)`` after training, in eval mode
under the trainer's precision (the method's whole sampling path: prior chain, decoder, and
Dual-MCMC's revision chain).
``--flops`` adds ``flops_per_iter`` (matrix products and convolutions of the last timed iteration,
forward and backward, counted by ``torch.utils.flop_counter``) and, on a GPU with a known bf16
peak, ``bf16_peak_fraction``: the time those FLOPs take at the peak over the measured time.
``--fast compile,channels_last`` (either or both) times ``lebm.speed.FastNets`` with those
switches; the baseline keeps plain nets.
For a multi-stage method (``MultiStageNCE``) ``--stage k`` times stage ``k`` (default: the last,
whose prior chain runs through every earlier ratio net; stage 0 draws its negatives exactly, with no
chain): the prior starts with ``k`` completed stages and the stage never ends during the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    add_recorded_iterations_option,
    apply_recorded_iterations_option,
    bare_trainer,
    describe_device,
    load_recipe,
    timed,
)
from flops import IterationFlops, peak_fraction  # noqa: E402

from lebm.callbacks import FastNets  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.models import LatentEBM  # noqa: E402
from lebm.recording import capture_stats, samplers_of, set_chain_capture  # noqa: E402


def observation_shape(model: Any) -> tuple[int, ...]:
    """The shape of one observation, from decoding two latents in eval mode (BatchNorm nets refuse a
    batch of one in train mode); the decoder's mode is restored."""
    was_training = model.decoder.training
    model.decoder.eval()
    try:
        with torch.no_grad():
            latents = torch.zeros(2, model.prior.latent_dim, device=model.device)
            return tuple(model.decoder.decode(latents).shape[1:])
    finally:
        model.decoder.train(was_training)


class IterationTimer(L.Callback):
    """Wall-clock time of each training batch, synchronising CUDA at both ends, and the device the
    batches ran on (read during the run: after ``fit`` Lightning has moved the model to the CPU)."""

    def __init__(self, clock: ChainClock | None = None) -> None:
        self.times: list[float] = []
        self.clock = clock
        self.device: torch.device | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._sync(pl_module)
        self.device = pl_module.device
        if self.clock is not None:
            self.clock.start_iteration()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)


CHAIN_ATTRIBUTES = ("data_sampler", "posterior_sampler", "prior.sampler")


class ChainClock:
    """Wall-clock seconds each of the model's chains (``data_sampler``, ``posterior_sampler``,
    ``prior.sampler``: those it has) spends per training iteration; the rest of the iteration is
    forward and backward passes of the losses and the optimiser steps."""

    def __init__(self, model: Any) -> None:
        self.iterations: list[dict[str, float]] = []
        for dotted in CHAIN_ATTRIBUTES:
            owner: Any = model
            for part in dotted.split(".")[:-1]:
                owner = getattr(owner, part, None)
            chain = getattr(owner, dotted.split(".")[-1], None) if owner is not None else None
            if chain is not None and hasattr(chain, "run"):
                self._wrap(dotted, chain, model)

    def _wrap(self, name: str, chain: Any, model: Any) -> None:
        """Time every call of ``chain`` (the whole call, outside any captured graph): its class is
        swapped for a subclass whose ``__call__`` synchronises and reads the clock around it."""
        clock = self

        def timed_call(sampler: Any, energy_fn: Any, z0: torch.Tensor, **kwargs: Any) -> Any:
            if z0.device.type == "cuda":
                torch.cuda.synchronize(z0.device)
            start = time.perf_counter()
            out = super(timed, sampler).__call__(energy_fn, z0, **kwargs)
            if z0.device.type == "cuda":
                torch.cuda.synchronize(z0.device)
            if clock.iterations:
                current = clock.iterations[-1]
                current[name] = current.get(name, 0.0) + time.perf_counter() - start
            return out

        timed = type(f"Timed{type(chain).__name__}", (type(chain),), {"__call__": timed_call})
        chain.__class__ = timed

    def start_iteration(self) -> None:
        self.iterations.append({})

    def median_split(self, times: list[float], warmup: int) -> dict[str, float]:
        """Per timed iteration: each chain's seconds and the rest; the medians over iterations."""
        rows = []
        for chains, total in zip(self.iterations[warmup:], times, strict=False):
            rows.append({**chains, "updates_and_rest": total - sum(chains.values())})
        names = sorted({name for row in rows for name in row})
        return {name: round(statistics.median(row.get(name, 0.0) for row in rows), 4) for name in names}


def start_in_stage(model: Any, stage: int | None) -> int | None:
    """Put a multi-stage model in ``stage`` (default its last) for good; ``None`` for other methods."""
    n_stages = getattr(model.prior, "n_stages", None)
    if n_stages is None:
        if stage is not None:
            raise SystemExit("--stage applies to multi-stage methods (a prior with n_stages)")
        return None
    stage = n_stages - 1 if stage is None else stage
    if not 0 <= stage < n_stages:
        raise SystemExit(f"--stage must be in [0, {n_stages - 1}], got {stage}")
    for _ in range(stage):
        model.prior.complete_stage()
    model.stage_schedule = [10**9] * n_stages
    return stage


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_method(
    model: Any,
    shape: tuple[int, ...],
    batch_size: int,
    iters: int,
    warmup: int,
    accelerator: str,
    precision: str,
    clock: ChainClock | None = None,
    fast: dict[str, bool] | None = None,
    flops: IterationFlops | None = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> tuple[list[float], torch.device]:
    """Seconds of each timed iteration, and the device they ran on."""
    n = batch_size * (iters + warmup)
    data = DataLoader(TensorDataset(torch.rand(n, *shape) * 2 - 1), batch_size=batch_size, drop_last=True)
    timer = IterationTimer(clock)
    trainer = bare_trainer(
        max_steps=-1,
        max_epochs=1,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        callbacks=[
            timer,
            *([FastNets(**fast)] if fast else []),
            *([flops] if flops else []),
            *(extra_callbacks or []),
        ],
    )
    trainer.fit(model, data)
    assert timer.device is not None, "no training batch ran"
    return timer.times[warmup:], timer.device


def time_generate(model: Any, n: int, precision: str, device: torch.device, repeats: int = 2) -> float:
    """Samples per second of ``model.generate(n)`` on ``device`` in eval mode (best of ``repeats``
    after one warm-up call), under bf16 autocast when ``precision`` is ``bf16-mixed``."""
    model.to(device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else None

    model.eval()
    generator = torch.Generator(device).manual_seed(0)

    def work() -> Any:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model.generate(n, generator=generator)

    timed(device, work)
    return max(n / timed(device, work)[1] for _ in range(repeats))


def time_baseline(
    model: LatentEBM, shape: tuple[int, ...], batch_size: int, iters: int, warmup: int, device: torch.device
) -> list[float]:
    from plain_latent_ebm import PlainLatentEBMStep

    hp = model.hparams
    step = PlainLatentEBMStep(
        model.decoder.net.to(device),
        model.prior.energy_net.to(device),
        model.prior.latent_dim,
        sigma=model.decoder.sigma,
        prior_steps=model.prior.sampler.n_steps,
        prior_step_size=model.prior.sampler.step_size,
        posterior_steps=model.posterior_sampler.n_steps,
        posterior_step_size=model.posterior_sampler.step_size,
        generator_lr=hp.decoder_lr,
        energy_lr=hp.prior_lr,
    )
    times = []
    for _ in range(iters + warmup):
        x = torch.rand(batch_size, *shape, device=device) * 2 - 1
        times.append(timed(device, lambda x=x: step.step(x))[1])
    return times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true or bf16-mixed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--baseline", action="store_true", help="also time the plain-PyTorch loop (LatentEBM recipes)")
    parser.add_argument(
        "--stage", type=int, default=None, help="multi-stage methods: the stage to time (default: the last)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split", action="store_true", help="also report each chain's seconds per iteration (and the rest)"
    )
    parser.add_argument(
        "--fast",
        default="",
        help="comma-separated FastNets switches to time: compile, channels_last (default: plain nets)",
    )
    parser.add_argument(
        "--chain-capture",
        choices=("on", "off"),
        default="on",
        help="on: chains on a CUDA device run as captured CUDA graphs (lebm's default); off: every chain eagerly",
    )
    add_recorded_iterations_option(parser)
    parser.add_argument("--generate", type=int, default=0, help="also time model.generate(N) (0: skip)")
    parser.add_argument("--flops", action="store_true", help="also count the FLOPs of one iteration")
    args = parser.parse_args()
    fast = {name: True for name in args.fast.split(",") if name}
    unknown = set(fast) - {"compile", "channels_last"}
    if unknown:
        parser.error(f"--fast takes compile and channels_last, got {sorted(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    torch.manual_seed(args.seed)
    model = build(recipe["model"])
    set_chain_capture(args.chain_capture == "on")
    apply_recorded_iterations_option(args)
    stage = start_in_stage(model, args.stage)
    shape = observation_shape(model)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    clock = ChainClock(model) if args.split else None
    # counted on the last iteration, which is then not timed (the counter slows it down)
    flops = IterationFlops(batch_index=args.warmup + args.iters) if args.flops else None
    iterations = args.iters + (1 if flops else 0)
    times, device = time_method(
        model, shape, batch_size, iterations, args.warmup, args.accelerator, args.precision, clock, fast, flops
    )
    if flops:
        times = times[:-1]
    result: dict[str, Any] = {
        "recipe": args.recipe,
        "method": type(model).__name__,
        "device": describe_device(device),
        "precision": args.precision,
        "fast": sorted(fast),
        "chain_capture": args.chain_capture,
        "recorded_iterations": model.iteration_recorder.stats.as_dict() if args.recorded_iterations == "on" else "off",
        "batch_size": batch_size,
        "observation_shape": list(shape),
        "latent_dim": model.prior.latent_dim,
        **({"stage": stage, "n_stages": model.prior.n_stages} if stage is not None else {}),
        "iters": args.iters,
        "warmup": args.warmup,
        "sec_per_iter": statistics.median(times),
        "sec_per_iter_min": min(times),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "chain_calls": capture_stats(samplers_of(model)),
        "torch": torch.__version__,
    }
    if flops is not None and flops.flops is not None:
        result["flops_per_iter"] = flops.flops
        fraction = peak_fraction(flops.flops, result["sec_per_iter"], result["device"])
        if fraction is not None:
            result["bf16_peak_fraction"] = round(fraction, 4)
    if args.generate:
        result["generate_samples_per_sec"] = round(time_generate(model, args.generate, args.precision, device), 2)
        result["peak_mem_mb"] = round(peak_memory_mb(device), 1)
    if clock is not None:
        result["split_sec_per_iter"] = clock.median_split(times, args.warmup)
    if args.baseline:
        if not isinstance(model, LatentEBM):
            parser.error("--baseline is available for LatentEBM recipes")
        plain = build(recipe["model"])  # plain nets, whatever --fast did to the timed model's
        plain.load_state_dict(initial_state)
        baseline = time_baseline(plain, shape, batch_size, args.iters, args.warmup, device)
        result["baseline_sec_per_iter"] = statistics.median(baseline)
        result["speedup_vs_baseline"] = round(result["baseline_sec_per_iter"] / result["sec_per_iter"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
