"""The methods' optimisers, built in one place: one Adam per net with a per-epoch ExponentialLR.

Every method of the papers trains each net with Adam (shared ``betas``, the net's own learning
rate and weight decay) and multiplies every rate by ``lr_decay`` at the end of each epoch. The
settings are read from the method's hyperparameters by the net's name: net ``decoder`` takes
``decoder_lr`` and ``decoder_weight_decay`` (the names :mod:`lebm.models.settings` checks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.optim import Adam
from torch.optim.lr_scheduler import ExponentialLR

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


def rate_names(names: Sequence[str]) -> list[str]:
    """``names`` with each one that repeats numbered in order: ``["decoder", "ratio-0", "ratio-1"]``."""
    counts = Counter(names)
    seen: Counter[str] = Counter()
    numbered = []
    for name in names:
        numbered.append(f"{name}-{seen[name]}" if counts[name] > 1 else name)
        seen[name] += 1
    return numbered
