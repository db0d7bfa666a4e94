"""Files replaced whole or not at all: a temporary file in the target's folder, then a rename.

The temporary file lives beside the target, so the final ``os.replace`` is a rename on one file
system (atomic on POSIX), never a copy: a reader, or a run killed halfway, sees the old file or the
new one, never half of one. The new file gets the permissions a plain ``open`` would give it (the
process's umask), not ``mkstemp``'s owner-only ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def replaced_atomically(path: str | os.PathLike, mode: str = "w", **open_kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path`` (``mode``: ``"w"`` or ``"wb"``; ``open_kwargs`` as for
    ``open``) for the block to write; when the block ends without an error it replaces ``path``,
    otherwise it is removed and ``path`` is left as it was. The folder is made if missing."""
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}-", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:  # type: ignore[call-overload]
            yield file
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
