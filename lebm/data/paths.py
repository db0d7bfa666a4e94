"""Turn a user-given data path (config or CLI) into a ``Path``."""

from __future__ import annotations

import os
import re
from pathlib import Path

_ENV_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_root(root: str | os.PathLike | None) -> Path | None:
    """Expand ``$VARS`` / ``${VARS}`` and ``~`` in ``root``; None stays None.

    Raises:
        ValueError: ``root`` mentions an environment variable that is not set (the message names it).
    """
    if root is None:
        return None
    text = os.fspath(root)
    expanded = os.path.expanduser(os.path.expandvars(text))
    unset = sorted({a or b for a, b in _ENV_VAR.findall(expanded) if (a or b) not in os.environ})
    if unset:
        names = ", ".join(unset)
        raise ValueError(
            f"root {text!r} uses environment variable(s) {names} that are not set; set them or pass a plain path"
        )
    return Path(expanded)
