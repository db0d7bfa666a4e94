"""Checks of the arguments a part is made with, for its constructor: one line naming the part, the
argument, the value and what it takes.

A sampler, prior, decoder or data module checks its own arguments where it is made (its
``__init__``), so a Python user and a recipe get the same message, before training: the ``lebm``
command prints the constructor's message as it is. Numbers are checked for their type (``"0.1"``
is not a number, ``True`` is not a number), for being finite, for their range, and, where a value
feeds a float32 chain, for a magnitude that float32 can hold (:data:`FLOAT32_MAX`).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

#: The largest finite float32 (``torch.finfo(torch.float32).max``): chain states and nets are float32.
FLOAT32_MAX = 3.4028234663852886e38
#: The largest number whose square float32 holds: a step size ``s`` enters a chain as ``s^2``.
SQUARE_FITS_FLOAT32 = math.sqrt(FLOAT32_MAX)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _not_a_number(owner: str, name: str, value: Any, kind: str = "a number") -> ValueError:
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = f": write it without quotes, {name}={value.strip()}"
        except ValueError:
            pass
    return ValueError(f"{owner} {name} must be {kind}, got {value!r} ({type(value).__name__}){hint}")


def number(
    owner: str,
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    why_at_most: str = "",
) -> float:
    """``value`` as a float when it is a finite real number in the range given; else a ``ValueError``
    ``"<owner> <name> must be ..., got <value>"``.

    Args:
        owner: the part, as its message names it (``"Langevin"``).
        name: the argument (``"step_size"``).
        value: what was given.
        above, at_least, below, at_most: the bounds (exclusive, inclusive, exclusive, inclusive).
        why_at_most: why ``at_most`` is the bound, said after it (e.g. float32's range).
    """
    if not _is_number(value):
        raise _not_a_number(owner, name, value)
    if not math.isfinite(value):
        raise ValueError(f"{owner} {name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise ValueError(f"{owner} {name} must be > {above:g}, got {value}")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{owner} {name} must be >= {at_least:g}, got {value}")
    if below is not None and not value < below:
        raise ValueError(f"{owner} {name} must be < {below:g}, got {value}")
    if at_most is not None and not value <= at_most:
        reason = f" ({why_at_most})" if why_at_most else ""
        raise ValueError(f"{owner} {name} must be at most {at_most:.3g}{reason}, got {value:g}")
    return float(value)


def step_size(owner: str, value: Any, name: str = "step_size") -> float:
    """A chain's step size: a finite number > 0 whose square float32 holds (at most
    :data:`SQUARE_FITS_FLOAT32`, about 1.8e19: a larger one overflows in the first step)."""
    return number(
        owner,
        name,
        value,
        above=0,
        at_most=SQUARE_FITS_FLOAT32,
        why_at_most="its square scales the gradient step, and float32 chain states overflow above 3.4e38",
    )


def scale(owner: str, name: str, value: Any) -> float:
    """A standard deviation that an energy divides by (``||x||^2 / (2 sigma^2)``): a finite number
    > 0 whose square and inverse square float32 holds (between about 5.4e-20 and 1.8e19)."""
    sigma = number(
        owner,
        name,
        value,
        above=0,
        at_most=SQUARE_FITS_FLOAT32,
        why_at_most="its square must fit float32, whose largest value is 3.4e38",
    )
    smallest = 1 / SQUARE_FITS_FLOAT32
    if sigma < smallest:
        raise ValueError(
            f"{owner} {name} must be at least {smallest:.3g} (the energy divides by its square, which overflows "
            f"float32 below it), got {value:g}"
        )
    return sigma


def whole(owner: str, name: str, value: Any, *, at_least: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``at_least`` (an int, a numpy integer or a
    float such as ``10.0``; not a bool); else a ``ValueError`` naming the owner and the argument."""
    if isinstance(value, bool):
        raise _not_a_number(owner, name, value, "a whole number")
    try:
        count = operator.index(value)
    except TypeError:
        if not (_is_number(value) and math.isfinite(value) and float(value).is_integer()):
            raise _not_a_number(owner, name, value, "a whole number") from None
        count = int(value)
    if count < at_least:
        raise ValueError(f"{owner} {name} must be >= {at_least}, got {value}")
    return count


def flag(owner: str, name: str, value: Any) -> bool:
    """``value`` when it is True or False (numpy's too); else a ``ValueError``: ``"false"`` or
    ``0.5`` are not switches."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(f"{owner} {name} must be true or false, got {value!r} ({type(value).__name__})")


def one_of(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` when it is one of ``choices``; else a ``ValueError`` listing them."""
    if isinstance(value, (str, int, float, type(None))) and value in choices:
        return value
    listed = ", ".join(repr(choice) for choice in choices)
    raise ValueError(f"{owner} {name} must be one of {listed}, got {value!r}")
