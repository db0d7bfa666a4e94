"""The methods' optimisers, built in one place: one Adam per net with a per-epoch ExponentialLR.

Every method of the papers trains each net with Adam (shared ``betas``, the net's own learning
rate and weight decay) and multiplies every rate by ``lr_decay`` at the end of each epoch. The
settings are read from the method's hyperparameters by the net's name: net ``decoder`` takes
``decoder_lr`` and ``decoder_weight_decay`` (the names :mod:`lebm.training.settings` checks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.optim import Adam, AdamW, Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR

#: ``(net name, its parameters)``: the name picks the hyperparameters ``<name>_lr`` and ``<name>_weight_decay``.
NamedParameters = tuple[str, Iterable[nn.Parameter]]


def adam_with_decay(
    hyperparameters: Mapping[str, Any], nets: Sequence[NamedParameters]
) -> tuple[list[Adam], list[dict[str, Any]]]:
    """``(optimizers, schedulers)``, one of each per entry of ``nets``, in that order (the order a
    method's ``training_step`` reads them in).

    Optimiser ``i``: ``Adam(params_i, lr=<name_i>_lr, betas=betas, weight_decay=<name_i>_weight_decay)``;
    scheduler ``i``: ``ExponentialLR(optimizer_i, gamma=lr_decay)``, so after ``e`` epochs
    ``lr_i = <name_i>_lr * lr_decay^e``. Every optimiser is created before the first scheduler.
    Each scheduler comes in Lightning's configuration dict with the net's name (``lr-decoder``,
    ``lr-prior``; a name that repeats is numbered: ``lr-ratio-0``, ``lr-ratio-1``), the name
    ``LearningRateMonitor`` logs it under.

    Args:
        hyperparameters: the method's (``self.hparams``): ``betas``, ``lr_decay`` and the per-net settings.
        nets: ``(name, parameters)`` per optimiser; a name may repeat (one optimiser per stage's ratio net).
    """
    betas = tuple(hyperparameters["betas"])
    optimizers = [
        Adam(
            parameters,
            lr=hyperparameters[f"{name}_lr"],
            betas=betas,
            weight_decay=hyperparameters[f"{name}_weight_decay"],
        )
        for name, parameters in nets
    ]
    schedulers = [
        {"scheduler": ExponentialLR(optimizer, gamma=hyperparameters["lr_decay"]), "name": f"lr-{name}"}
        for optimizer, name in zip(optimizers, rate_names([name for name, _ in nets]), strict=True)
    ]
    return optimizers, schedulers


#: ``(net name, its parameters, "adam" | "adamw")``: :func:`step_decay_optimizers`' nets.
NamedParametersWithKind = tuple[str, Iterable[nn.Parameter], str]


def step_decay_optimizers(
    hyperparameters: Mapping[str, Any], nets: Sequence[NamedParametersWithKind]
) -> tuple[list[Optimizer], list[dict[str, Any]]]:
    """``(optimizers, schedulers)`` for a method that decays its rates per iteration (DAMC's
    official ``train_gen_recon.py``): optimiser ``i`` is ``Adam`` or ``AdamW`` (its kind) over its
    net's parameters with ``<name>_lr``, ``betas`` and ``<name>_weight_decay``; scheduler ``i``, a
    ``LambdaLR`` the method steps after every update, gives after ``k`` updates::

        lr = <name>_lr * lr_decay ** (k // lr_decay_every)     held at lr_floor once below it

    (``lr <- max(lr_decay * lr, lr_floor)`` every ``lr_decay_every`` iterations). Named ``lr-<name>``
    as :func:`adam_with_decay`'s, with ``"interval": "step"``.
    """
    betas = tuple(hyperparameters["betas"])
    decay, every, floor = hyperparameters["lr_decay"], hyperparameters["lr_decay_every"], hyperparameters["lr_floor"]
    kinds = {"adam": Adam, "adamw": AdamW}
    optimizers: list[Optimizer] = [
        kinds[kind](
            parameters,
            lr=hyperparameters[f"{name}_lr"],
            betas=betas,
            weight_decay=hyperparameters[f"{name}_weight_decay"],
        )
        for name, parameters, kind in nets
    ]
    schedulers = []
    for optimizer, (name, _, _), label in zip(optimizers, nets, rate_names([n for n, _, _ in nets]), strict=True):
        start = hyperparameters[f"{name}_lr"]
        factor = StepDecayFactor(decay, every, floor / start if start > 0 else 0.0)
        schedulers.append({"scheduler": LambdaLR(optimizer, factor), "name": f"lr-{label}", "interval": "step"})
    return optimizers, schedulers


class StepDecayFactor:
    """``k -> max(decay ** (k // every), floor_factor)``: the factor of the initial rate after ``k``
    updates (a callable object, whose settings ``LambdaLR`` keeps in its state dict)."""

    def __init__(self, decay: float, every: int, floor_factor: float) -> None:
        self.decay, self.every, self.floor_factor = float(decay), int(every), float(floor_factor)

    def __call__(self, k: int) -> float:
        return max(self.decay ** (k // self.every), self.floor_factor) if k >= self.every else 1.0


def rate_names(names: Sequence[str]) -> list[str]:
    """``names`` with each one that repeats numbered in order: ``["decoder", "ratio-0", "ratio-1"]``."""
    counts = Counter(names)
    seen: Counter[str] = Counter()
    numbered = []
    for name in names:
        numbered.append(f"{name}-{seen[name]}" if counts[name] > 1 else name)
        seen[name] += 1
    return numbered
