"""Warnings that point at the user's line: lebm's checks warn about what the user wrote, so the
warning names the user's file and line (``model = LatentEBM(...)``, ``lebm.load(path)``), not the
line of lebm, Lightning, torch, jsonargparse or ``contextlib`` that happened to call the check.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from functools import cache

#: The packages whose frames a warning about the user's input walks past.
LIBRARIES = ("lebm", "lightning", "lightning_fabric", "torch", "jsonargparse")


@cache
def library_roots() -> tuple[str, ...]:
    """The folders (and ``contextlib.py``) of :data:`LIBRARIES`, as path prefixes."""
    roots = [os.path.dirname(contextlib.__file__) + os.sep + "contextlib.py"]
    for package in LIBRARIES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(os.path.join(location, "") for location in spec.submodule_search_locations)
    return tuple(roots)


def in_a_library(filename: str) -> bool:
    """Whether ``filename`` is a file of :data:`LIBRARIES` (or ``contextlib.py``)."""
    return filename.startswith(library_roots())


def user_stacklevel(skip: int = 1) -> int:
    """The ``stacklevel`` that makes a warning raised by the function calling this one point at the
    first caller outside :data:`LIBRARIES` and ``contextlib``. ``skip``: frames above this function
    to start from (1: the function that warns)."""
    frame = sys._getframe(skip)
    level = 1
    while frame is not None and in_a_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` at the user's line (:func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel(skip=2) + 1)
