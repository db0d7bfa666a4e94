"""No-model anomaly scores: what a ranking reads before any model is involved.

A model's anomaly AUPRC means something only above what a score with no model reads on the same
split. Three such scores, each the squared distance of an image to a fixed image ``c``:

    s_c(x) = ||x - c||^2 = sum_pixels (x - c)^2          (higher = more anomalous)

- ``untrained_level``: ``c`` the near-constant image an untrained generator draws, its mean pixel at
  initialisation (``AnomalyDetection`` measures it when a fit starts; lebm's generators end in
  ``tanh`` and start near mid-grey, between -0.1 and 0.2 on lebm's [-1, 1] scale; 0 when not
  measured). An untrained model's ``-log p(x|z)`` is this score up to a constant, so its AUPRC is
  what a run reads before it has learned anything.
- ``background``: ``c`` the background level, ``-1`` (black) on lebm's scale.
- ``mean_training_image``: ``c`` the mean of the training images, pixel by pixel.

On MNIST the first one alone detects held-out 1 (AUPRC near 0.98 at chance 0.39): a one holds
fewer grey anti-aliasing pixels than other digits. The *baseline* is the highest AUPRC of the
three on the split, named with the score that reached it (:func:`no_model_baseline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module
from torch.utils.data import DataLoader, Dataset

from lebm.metrics.ranking import ranking_metrics

#: The no-model scores, in the order they are reported, with what each measures.
NO_MODEL_SCORES = {
    "untrained_level": "squared distance to the untrained generator's constant output level",
    "background": "squared distance to the background level",
    "mean_training_image": "squared distance to the mean training image",
}
#: lebm's image scale: [-1, 1], background -1; an untrained tanh generator draws about 0.
UNTRAINED_LEVEL, BACKGROUND_LEVEL = 0.0, -1.0


def squared_distance(x: Tensor, reference: Tensor | float) -> Tensor:
    """``||x - c||^2`` per example: ``x`` (B, ...) against ``reference`` ``c`` (a number, or a tensor
    that broadcasts against one example, e.g. (C, H, W)); returns (B,) in float64."""
    difference = x.double() - (reference.double() if isinstance(reference, Tensor) else float(reference))
    return difference.flatten(1).square().sum(dim=1)


def no_model_scores(
    x: Tensor, mean_image: Tensor | None, untrained_level: float = UNTRAINED_LEVEL
) -> dict[str, Tensor]:
    """Each no-model score of ``x`` (B, C, H, W) on lebm's scale, ``{name: (B,)}`` float64;
    ``mean_training_image`` only when ``mean_image`` (C, H, W) is given; ``untrained_level`` the
    untrained generator's mean pixel."""
    scores = {
        "untrained_level": squared_distance(x, untrained_level),
        "background": squared_distance(x, BACKGROUND_LEVEL),
    }
    if mean_image is not None:
        scores["mean_training_image"] = squared_distance(x, mean_image.to(x.device))
    return scores


def output_level(model: Module, n: int = 64) -> float | None:
    """The mean pixel of ``g(z)`` for ``n`` latents ``z ~ N(0, I)`` decoded by ``model.decoder``
    (``decode``, ``(n, latent_dim)`` -> images) in eval mode, without gradients, from a private
    stream seeded 0: no chain runs and no state of the model, its samplers or the global random
    streams changes. None for a model without a ``decoder`` and a ``prior`` of one ``latent_dim``,
    or whose decoder returns no image tensor."""
    decoder, latent_dim = getattr(model, "decoder", None), getattr(getattr(model, "prior", None), "latent_dim", None)
    if (
        not callable(getattr(decoder, "decode", None))
        or isinstance(latent_dim, bool)
        or not isinstance(latent_dim, int)
    ):
        return None
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z = torch.randn(n, latent_dim, generator=torch.Generator(device).manual_seed(0), device=device)
            images = decoder.decode(z)
    finally:
        model.train(was_training)
    return float(images.double().mean()) if isinstance(images, Tensor) and images.ndim == 4 else None


def mean_image(dataset: Dataset, batch_size: int = 2048) -> Tensor | None:
    """The pixel-wise mean (C, H, W) float32 of a dataset whose items are ``(image, label)`` or
    ``image``, read in order through a single-process loader; None for an empty dataset or one whose
    items are not images."""
    try:
        if len(dataset) == 0:  # type: ignore[arg-type]
            return None
    except TypeError:  # an iterable dataset: no length, no mean image
        return None
    total, count = None, 0
    # a generator of its own: a loader's iterator otherwise draws its base seed from the global stream
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, generator=torch.Generator())
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(images, Tensor) or images.ndim != 4:
            return None
        images = images.double()
        total = images.sum(dim=0) if total is None else total + images.sum(dim=0)
        count += images.shape[0]
    return (total / count).float()


@dataclass(frozen=True)
class NoModelBaseline:
    """The no-model reading of one split: the best score's name, its AUPRC and AUROC, and every
    score's ``(AUPRC, AUROC)`` in ``readings``."""

    name: str
    auprc: float
    auroc: float
    readings: Mapping[str, tuple[float, float]]


def no_model_baseline(scores: Mapping[str, np.ndarray], targets: np.ndarray) -> NoModelBaseline:
    """Rank each no-model score ``{name: (N,)}`` against the 0/1 ``targets`` (N,); the baseline is the
    one of highest AUPRC (a NaN reading, one class only, never wins unless all are NaN)."""
    readings = {name: ranking_metrics(values, targets) for name, values in scores.items()}
    finite = [name for name, (auprc, _) in readings.items() if np.isfinite(auprc)]
    best = max(finite, key=lambda name: readings[name][0]) if finite else next(iter(readings))
    return NoModelBaseline(best, readings[best][0], readings[best][1], readings)


__all__ = [
    "BACKGROUND_LEVEL",
    "NO_MODEL_SCORES",
    "UNTRAINED_LEVEL",
    "NoModelBaseline",
    "mean_image",
    "no_model_baseline",
    "no_model_scores",
    "output_level",
    "squared_distance",
]
