"""One check for an option that takes one of a few values (a string choice such as
``update_order``), with one message: the option, the value given, the accepted values and, for a
near miss, a "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def check_choice(option: str, value: T, choices: Sequence[Any] | Mapping[Any, str]) -> T:
    """``value`` when it is one of ``choices``; otherwise a ``ValueError``::

        model.init_args.update_order must be one of 'generator_first' (the official code),
        'ebm_first' (the paper); got 'ebm_frist' (did you mean 'ebm_first'?)

    Args:
        option: the option's full name as the user writes it (``model.init_args.update_order``).
        value: the value given.
        choices: the accepted values, or ``{value: what it means}`` to say so in the message.
    """
    accepted = list(choices)
    if value in accepted:
        return value
    described = choices if isinstance(choices, Mapping) else {}
    listed = ", ".join(
        f"{choice!r} ({described[choice]})" if choice in described else repr(choice) for choice in accepted
    )
    close = (
        difflib.get_close_matches(value, [c for c in accepted if isinstance(c, str)], n=1)
        if isinstance(value, str)
        else []
    )
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{option} must be one of {listed}; got {value!r}{hint}")
