"""What an FID evaluation costs: sampling vs feature extraction, per 1000 generated images.

    python benchmarks/fid_cost.py --recipe recipes/quickstart.yaml --num-samples 256 [--weights PATH] [--small]

Builds the recipe's model (untrained: the chains cost the same), generates ``--num-samples``
images in batches with ``model.generate`` (the prior's Langevin chains plus the decoder; with
``--sampler-steps N`` a longer chain, as at test time), then embeds them with the FID feature
extractor: torch-fidelity's Inception-v3 (``--weights``, default
``$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth`` when it exists, else
torch-fidelity's download) or, with ``--small``, the tiny ``SmallConvFeatures``. Each phase is
timed separately after one warm-up batch; the Fréchet distance of the resulting fit and the
extractor's loading are timed on their own. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
from torch import Tensor, nn

from lebm.config import build
from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FeatureStats,
    InceptionFeatures,
    SmallConvFeatures,
    frechet_distance,
    to_three_channels,
)
from lebm.samplers import Langevin

from common import describe_device, load_recipe, timed



def limit_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch and in numpy's BLAS (the Fréchet distance's eigvalsh)."""
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


def embed_all(extractor: nn.Module, batches: list[Tensor]) -> FeatureStats:
    """Feature statistics of all ``batches`` (float images in [-1, 1])."""
    stats: FeatureStats | None = None
    with torch.no_grad():
        for images in batches:
            features = extractor(to_three_channels(images)).float()
            stats = stats if stats is not None else FeatureStats.zeros(features.shape[1], features.device)
            stats.update(features)
    assert stats is not None
    return stats


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

    sizes = batch_sizes(args.num_samples, args.batch_size)
    warm = generate_all(model, [min(8, args.batch_size)], sampler)  # warm-up: lazy init, allocator
    embed_all(extractor, warm)
    batches, sampling_sec = timed(device, lambda: generate_all(model, sizes, sampler))
    stats, features_sec = timed(device, lambda: embed_all(extractor, batches))
    mu, sigma = stats.gaussian()
    _, frechet_sec = timed(device, lambda: frechet_distance(mu, sigma, mu + 0.1, sigma))

    per_1000 = 1000.0 / args.num_samples
    result = {
        "recipe": args.recipe,
        "device": describe_device(device),
        "extractor": getattr(extractor, "name", type(extractor).__name__),
        "feature_dim": stats.dim,
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
