"""What an FID evaluation costs: sampling vs feature extraction, per 1000 generated images.

    python benchmarks/fid_cost.py --recipe recipes/quickstart.yaml --num-samples 256 [--weights PATH] [--small]

Builds the recipe's model (untrained: the chains cost the same), generates ``--num-samples``
images in batches with ``model.generate`` (the prior's Langevin chains plus the decoder; with
``--sampler-steps N`` a longer chain, as at test time), then embeds them with the FID feature
extractor: torch-fidelity's Inception-v3 (``--weights``, default
``$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth`` when it exists, else
torch-fidelity's download) or, with ``--small``, the tiny ``SmallConvFeatures``. Each phase is
timed separately after one warm-up batch (embedding includes torchmetrics' FID update); the
metric's ``compute`` (the Fréchet distance of the two Gaussian fits, D x D) and the extractor's
loading are timed on their own. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
import torch
from common import describe_device, load_recipe, timed
from torch import Tensor

from lebm.config import build
from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FIDMetrics,
    InceptionFeatures,
    ReferenceState,
    SmallConvFeatures,
)
from lebm.samplers import Langevin


def limit_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch and in numpy's BLAS."""
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads, user_api="blas")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_weights() -> str | None:
    """The offline Inception weights when ``$LEBM_DATA`` has them, else None (download)."""
    path = os.path.expandvars(OFFLINE_INCEPTION_WEIGHTS)
    return OFFLINE_INCEPTION_WEIGHTS if os.environ.get("LEBM_DATA") and os.path.isfile(path) else None


def batch_sizes(total: int, batch_size: int) -> list[int]:
    return [min(batch_size, total - start) for start in range(0, total, batch_size)]


def generate_all(model: Any, sizes: list[int], sampler: Langevin | None) -> list[Tensor]:
    """Generated image batches ``(B, C, H, W)``, one per entry of ``sizes``."""
    kwargs = {} if sampler is None else {"sampler": sampler}
    return [model.generate(n, **kwargs) for n in sizes]


def embed_all(metrics: FIDMetrics, batches: list[Tensor]) -> None:
    """Add all ``batches`` (float images in [-1, 1]) to the generated side of ``metrics``."""
    for images in batches:
        metrics.update(images, real=False)


def stand_in_reference(dim: int, n: int) -> ReferenceState:
    """A reference of ``n`` images with mean 0 and identity covariance: the distance costs the
    same whatever the reference's values."""
    return ReferenceState.from_gaussian(np.zeros(dim), np.eye(dim), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--weights", default=None, help="Inception weights file (default: $LEBM_DATA copy or download)")
    parser.add_argument("--small", action="store_true", help="use SmallConvFeatures instead of Inception")
    parser.add_argument("--sampler-steps", type=int, default=None, help="prior Langevin steps (default: the recipe's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS CPU threads (default: their choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        limit_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)

    model = build(load_recipe(args.recipe)["model"]).to(device).eval()
    prior_sampler = getattr(model.prior, "sampler", None)
    sampler = None
    if args.sampler_steps is not None:
        sampler = Langevin(n_steps=args.sampler_steps, step_size=getattr(prior_sampler, "step_size", 0.4))
    steps = args.sampler_steps if sampler is not None else getattr(prior_sampler, "n_steps", None)

    weights = args.weights if args.weights is not None else default_weights()
    build_extractor = (lambda: SmallConvFeatures()) if args.small else (lambda: InceptionFeatures(weights))
    extractor, load_sec = timed(device, lambda: build_extractor().to(device).eval())

    metrics = FIDMetrics(extractor).to(device)
    sizes = batch_sizes(args.num_samples, args.batch_size)
    warm = generate_all(model, [min(8, args.batch_size)], sampler)  # warm-up: lazy init, allocator
    embed_all(metrics, warm)
    metrics.load_reference(stand_in_reference(metrics.num_features, args.num_samples))  # also forgets the warm-up
    batches, sampling_sec = timed(device, lambda: generate_all(model, sizes, sampler))
    _, features_sec = timed(device, lambda: embed_all(metrics, batches))
    _, frechet_sec = timed(device, lambda: metrics.compute(args.num_samples))

    per_1000 = 1000.0 / args.num_samples
    result = {
        "recipe": args.recipe,
        "device": describe_device(device),
        "extractor": getattr(extractor, "name", type(extractor).__name__),
        "feature_dim": metrics.num_features,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "image_shape": list(batches[0].shape[1:]),
        "prior_sampler_steps": steps,
        "sec_per_1000_samples_sampling": round(sampling_sec * per_1000, 4),
        "sec_per_1000_samples_features": round(features_sec * per_1000, 4),
        "sec_per_1000_samples_total": round((sampling_sec + features_sec) * per_1000, 4),
        "sec_frechet_distance": round(frechet_sec, 4),
        "sec_extractor_load": round(load_sec, 3),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
