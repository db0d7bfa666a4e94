"""Inception-v3 FID features with the weights channels-last (lebm's layout) against the default
contiguous layout: time per 100 images and the largest feature difference.

    LEBM_DATA=../shared/data python benchmarks/fid_layout.py [--images 100] [--batch-size 50] [--threads 2]

Embeds the same ``--images`` random 28 x 28 grey images (MNIST's size; the network resizes them
to 299 x 299) with ``InceptionFeatures`` as lebm builds it (channels-last) and with the same
network turned back to the contiguous layout, each after one warm-up batch, on ``--device``.
Prints one JSON line: ``seconds_per_100`` for each layout, ``speedup`` (contiguous over
channels-last) and ``max_abs_feature_difference``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import describe_device
from fid_cost import default_weights, limit_threads, pick_device

from lebm.metrics.fid import InceptionFeatures


def seconds_per_100(extractor: InceptionFeatures, batches: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """The features of ``batches`` and the seconds per 100 images (after a warm-up batch)."""
    with torch.no_grad():
        extractor(batches[0][:2])
        if batches[0].is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        features = torch.cat([extractor(images) for images in batches])
        if batches[0].is_cuda:
            torch.cuda.synchronize()
    return features, 100 * (time.perf_counter() - start) / len(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--weights", default=default_weights(), help="Inception weights (default: $LEBM_DATA's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    limit_threads(args.threads)
    device = pick_device(args.device)
    images = torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batches = [chunk.to(device) for chunk in images.split(args.batch_size)]
    extractor = InceptionFeatures(args.weights).to(device).eval()
    channels_last, fast = seconds_per_100(extractor, batches)
    extractor.net.to(memory_format=torch.contiguous_format)
    contiguous, slow = seconds_per_100(extractor, batches)
    print(
        json.dumps(
            {
                "benchmark": "fid_layout",
                "device": describe_device(device),
                "threads": args.threads,
                "images": args.images,
                "batch_size": args.batch_size,
                "seconds_per_100": {"channels_last": round(fast, 3), "contiguous": round(slow, 3)},
                "speedup": round(slow / fast, 3),
                "max_abs_feature_difference": float((channels_last - contiguous).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
