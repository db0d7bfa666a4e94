"""Checks of a method's optimiser settings when it is built, naming the option at fault.

Which hyperparameters are optimiser settings is read from their names (:func:`optimizer_settings`):
``*_lr``, ``*_weight_decay``, ``*_grad_clip``, ``betas`` and ``lr_decay``. ``Method`` checks them
when it saves its hyperparameters, so a method's new ``<net>_lr`` is checked without a line of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lebm.user_warnings import warn_user


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


#: Adam learning rates above this are almost certainly a typo for these models (the papers use 2e-6 to 3e-3).
SUSPICIOUS_LEARNING_RATE = 0.1


def check_learning_rate(option: str, value: Any) -> None:
    """A finite rate >= 0 (0 freezes the net, a use in tests and ablations); above
    :data:`SUSPICIOUS_LEARNING_RATE` a warning (Adam then saturates the nets within a few steps)."""
    if not (_finite(value) and value >= 0):
        raise ValueError(f"{option} must be a finite learning rate >= 0, got {value}")
    if value > SUSPICIOUS_LEARNING_RATE:
        warn_user(
            f"{option}={value} is far above the papers' Adam rates (2e-6 to 3e-3): the nets saturate within a few "
            "steps; did you mean something like 1e-4?"
        )


def check_betas(option: str, value: Sequence[Any]) -> None:
    if len(value) != 2 or not all(_finite(b) and 0 <= b < 1 for b in value):
        raise ValueError(f"{option} must be two numbers in [0, 1), Adam's (beta1, beta2), got {list(value)}")


def check_weight_decay(option: str, value: Any) -> None:
    if not (_finite(value) and value >= 0):
        raise ValueError(f"{option} must be a finite number >= 0, got {value}")


def check_grad_clip(option: str, value: Any) -> None:
    if value is not None and not (_finite(value) and value > 0):
        raise ValueError(f"{option} must be a positive number, or null for no clipping, got {value}")


def check_lr_decay(option: str, value: Any) -> None:
    """A factor in [0, 1]; 0 (the rates vanish after one epoch) and > 1 (they grow) are warned about."""
    if not (_finite(value) and value >= 0):
        raise ValueError(f"{option} (the learning rates' factor per epoch) must be a number >= 0, got {value}")
    if value == 0:
        warn_user(f"{option}=0 sets every learning rate to 0 after the first epoch; the papers use 0.998")
    elif value > 1:
        warn_user(f"{option}={value} makes the learning rates grow every epoch; the papers use 0.998")


def is_optimizer_setting(name: str) -> bool:
    """Whether the hyperparameter ``name`` is an optimiser setting, by its name."""
    return name in ("betas", "lr_decay") or name.endswith(("_lr", "_weight_decay", "_grad_clip"))


def optimizer_settings(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The optimiser settings among a method's ``hyperparameters`` (:func:`is_optimizer_setting`)."""
    return {name: value for name, value in hyperparameters.items() if is_optimizer_setting(name)}


def check_optimizer_settings(**settings: Any) -> None:
    """Check each ``model.init_args.<name>``: ``*_lr`` learning rates, ``betas``, ``*_weight_decay``,
    ``*_grad_clip`` and ``lr_decay``. Raises ``ValueError`` naming the option (settings that cannot
    work) or warns (legal settings that are almost certainly mistakes)."""
    for name, value in settings.items():
        option = f"model.init_args.{name}"
        if name == "betas":
            check_betas(option, value)
        elif name == "lr_decay":
            check_lr_decay(option, value)
        elif name.endswith("_grad_clip"):
            check_grad_clip(option, value)
        elif name.endswith("_weight_decay"):
            check_weight_decay(option, value)
        elif name.endswith("_lr"):
            check_learning_rate(option, value)
        else:
            raise KeyError(f"check_optimizer_settings does not know the setting {name!r}")
