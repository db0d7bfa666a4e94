"""Hierarchical representation probe: one classifier per latent layer (Cui, Wu & Han, ICCV 2023, Table 1).

For a model whose latent is split into per-layer groups (``model.latent_groups``, a
:class:`~lebm.models.LatentGroups`), the probe infers the latents of the training images, trains
one classifier per layer on that layer's latents and labels, and reports each classifier's
accuracy on the test images' latents of the same layer. The paper's numbers on MNIST (test
accuracy %, layers 1..3, bottom first): 32.60 / 58.32 / 67.64.

The classifier is the paper's: ``Linear(d, 256) - ReLU - Linear(256, n_classes)`` trained with
softmax cross-entropy, no dropout, no normalisation layer (:class:`LayerProbe`).

Choices that are ours, not taken from the paper:

- the features are standardised with the training set's per-dimension mean and standard
  deviation before training (``standardize=True``; the test features use the training
  statistics). Layers of a hierarchy can have very different scales; standardising makes one
  optimiser setting work for all of them. ``standardize=False`` trains on the raw latents;
- the optimiser and schedule: Adam, ``lr=1e-3``, 30 epochs of mini-batches of 256, no weight
  decay, constant learning rate, the classifier after the last epoch (no early stopping: the
  test set is not used for model selection).

A model without ``latent_groups`` is probed as a single layer named ``"z"`` (its latent
flattened to ``(N, D)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

#: The name of the single layer of a model without ``latent_groups``.
SINGLE_LAYER_NAME = "z"


class LayerProbe(nn.Module):
    """The probe classifier: ``Linear(in_dim, hidden) - ReLU - Linear(hidden, n_classes)`` (logits).

    Args:
        in_dim: the size of the layer's latent.
        n_classes: the number of classes.
        hidden: the width of the hidden layer (256 in the paper).
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        if in_dim < 1 or n_classes < 2 or hidden < 1:
            raise ValueError(
                f"LayerProbe needs in_dim >= 1, n_classes >= 2, hidden >= 1; got {in_dim, n_classes, hidden}"
            )
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``nn.Linear``'s default initialisation (weights and biases uniform in ``±1/sqrt(fan_in)``),
        drawn from ``generator`` (None: torch's global RNG)."""
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, in_dim)`` -> logits ``(B, n_classes)``."""
        return self.net(features)


def _as_features(features: Tensor, name: str) -> Tensor:
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] == 0:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a non-empty (N, D) tensor, got {shape}")
    # clone: features collected inside inference_mode are inference tensors, which autograd cannot save
    return features.detach().float().clone()


def _as_labels(labels: Tensor, n: int, name: str) -> Tensor:
    labels = torch.as_tensor(labels).detach()
    if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must be integer labels of shape ({n},), got {labels.dtype} {tuple(labels.shape)}")
    if labels.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got a minimum of {int(labels.min())}")
    return labels.long().clone()


def fit_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    n_classes: int | None = None,
    hidden: int = 256,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    standardize: bool = True,
    device: str | torch.device | None = None,
) -> float:
    """Train a :class:`LayerProbe` on ``(train_features, train_labels)``; return its test accuracy in [0, 1].

    Adam (``lr``, ``weight_decay``) on softmax cross-entropy, ``epochs`` passes over the training
    set in shuffled mini-batches of ``batch_size`` (the last, smaller batch kept), the classifier
    after the last epoch evaluated on ``(test_features, test_labels)``. The defaults (30 epochs,
    batch 256, lr 1e-3) converge on ~10k examples of a few dozen dimensions in a few seconds on a CPU.

    Reproducible: the initial weights and the batch order come from a local ``torch.Generator``
    seeded with ``seed``; torch's global RNG is neither read nor advanced. Works inside
    ``torch.no_grad``/``inference_mode`` (e.g. a Lightning test hook).

    Args:
        train_features: ``(N, D)`` training features of one layer.
        train_labels: ``(N,)`` integer class labels of ``train_features``.
        test_features: ``(M, D)`` test features of the same layer.
        test_labels: ``(M,)`` integer class labels of ``test_features``.
        n_classes: the number of classes; None: ``1 + the largest label`` of either set.
        hidden: the probe's hidden width (256 in the paper).
        standardize: scale each feature dimension by the training set's mean and standard
            deviation (a constant dimension is only centred). Our choice, not the paper's.
        device: where to train; None: ``train_features``' device.
    """
    # inference mode off throughout: the features may be inference tensors (collected in a Lightning
    # evaluation hook) and the probe must train there too; the copies made here are normal tensors
    with torch.inference_mode(False):
        train_x, test_x = _as_features(train_features, "train_features"), _as_features(test_features, "test_features")
        if train_x.shape[1] != test_x.shape[1]:
            raise ValueError(f"train and test features differ in size: {train_x.shape[1]} vs {test_x.shape[1]}")
        train_y = _as_labels(train_labels, train_x.shape[0], "train_labels")
        test_y = _as_labels(test_labels, test_x.shape[0], "test_labels")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"fit_probe needs epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
        largest = int(max(train_y.max(), test_y.max()))
        n_classes = largest + 1 if n_classes is None else int(n_classes)
        if largest >= n_classes:
            raise ValueError(f"a label ({largest}) is out of range for n_classes={n_classes}")
        device = train_x.device if device is None else torch.device(device)

        if standardize:
            mean = train_x.mean(0)
            std = train_x.std(0, unbiased=False)
            std = torch.where(std > 1e-8 * (1.0 + mean.abs()), std, torch.ones_like(std))
            train_x, test_x = (train_x - mean) / std, (test_x - mean) / std

        generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # nn.Linear's constructor draws from the global CPU RNG
            probe = LayerProbe(train_x.shape[1], n_classes, hidden)
        probe.reset_parameters(generator)
        with torch.enable_grad():
            probe.to(device).train()
            train_x, train_y = train_x.to(device), train_y.to(device)
            optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
            n = train_x.shape[0]
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator).to(device)
                for start in range(0, n, batch_size):
                    batch = order[start : start + batch_size]
                    loss = nn.functional.cross_entropy(probe(train_x[batch]), train_y[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        probe.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, test_x.shape[0], 4096):
                logits = probe(test_x[start : start + 4096].to(device))
                correct += int((logits.argmax(1).cpu() == test_y[start : start + 4096]).sum())
        return correct / test_x.shape[0]


def layer_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s latent layers, bottom first: ``model.latent_groups.names``, or
    ``["z"]`` for a model without ``latent_groups``."""
    groups = getattr(model, "latent_groups", None)
    return list(groups.names) if groups is not None else [SINGLE_LAYER_NAME]


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _batch_labels(batch: Any) -> Tensor:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"the probe needs labelled batches (x, y), got a {type(batch).__name__}")
    return torch.as_tensor(batch[1])


def collect_latents(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> tuple[list[Tensor], Tensor]:
    """Per-layer latents and labels of the batches of ``loader``.

    Runs ``model.infer(x)`` on every batch ``(x, y)`` (the first ``max_batches`` when given),
    with ``x`` on the model's device and the model in eval mode (its former mode restored after).
    ``infer`` keeps its own grad mode (a Langevin chain turns gradients on); inference mode is
    turned off around it, so this also works inside a Lightning evaluation hook.

    Returns:
        ``(latents, labels)``: one ``(N, size_i)`` CPU tensor per layer, bottom first (split by
        ``model.latent_groups``; one ``(N, D)`` tensor, the flattened latent, without groups),
        and the ``(N,)`` CPU labels.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be None or >= 1, got {max_batches}")
    groups = getattr(model, "latent_groups", None)
    device = _model_device(model)
    parts: list[list[Tensor]] = []
    labels: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                y = _batch_labels(batch)
                x = torch.as_tensor(batch[0]).to(device)
                if x.is_inference():  # a batch built inside inference_mode: chains need a normal tensor
                    x = x.clone()
                z = model.infer(x)
                if not isinstance(z, Tensor) or z.shape[0] != y.shape[0]:
                    got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                    raise ValueError(f"model.infer(x) must return latents (B, D) for B={y.shape[0]} images, got {got}")
                z = z.detach()
                layers = groups.split(z) if groups is not None else [z.flatten(1)]
                parts.append([layer.float().cpu() for layer in layers])
                labels.append(y.detach().cpu())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("the probe's loader yielded no batches")
    latents = [torch.cat([batch[i] for batch in parts]) for i in range(len(parts[0]))]
    return latents, torch.cat(labels)


def probe_layers(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    *,
    max_train_batches: int | None = None,
    max_test_batches: int | None = None,
    **fit_kwargs: Any,
) -> dict[str, float]:
    """``{layer name: test accuracy}``, bottom layer first: :func:`collect_latents` over both
    loaders, then one :func:`fit_probe` (``fit_kwargs``) per layer."""
    names = layer_names(model)
    train, train_labels = collect_latents(model, train_loader, max_train_batches)
    test, test_labels = collect_latents(model, test_loader, max_test_batches)
    return probe_collected(names, train, train_labels, test, test_labels, **fit_kwargs)


def probe_collected(
    names: Sequence[str],
    train: Sequence[Tensor],
    train_labels: Tensor,
    test: Sequence[Tensor],
    test_labels: Tensor,
    **fit_kwargs: Any,
) -> dict[str, float]:
    """``{name: fit_probe(train[i], train_labels, test[i], test_labels, **fit_kwargs)}`` per layer
    (the second half of :func:`probe_layers`, for latents already collected)."""
    if not len(names) == len(train) == len(test):
        raise ValueError(f"need one name per layer: {len(names)} names, {len(train)} and {len(test)} layers")
    n_classes = fit_kwargs.pop("n_classes", None)
    if n_classes is None:  # the same output size for every layer
        n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return {
        name: fit_probe(train_i, train_labels, test_i, test_labels, n_classes=n_classes, **fit_kwargs)
        for name, train_i, test_i in zip(names, train, test, strict=True)
    }
