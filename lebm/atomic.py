"""Files replaced whole or not at all: a temporary file in the target's folder, then a rename.

The temporary file lives beside the target, so the final ``os.replace`` is a rename on one file
system (atomic on POSIX), never a copy: a reader, or a run killed halfway, sees the old file or the
new one, never half of one. Its content is flushed to the disk before the rename, and the folder
after it (where the system allows: :func:`sync_folder`), so the new name survives a crash too. On
any failure (a full disk, an error of the writer) the temporary file is removed and the target
is as it was. The new file gets the permissions a plain ``open`` would give it (``0o666`` less the
process's umask).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

#: How many hexadecimal digits make a temporary file's name unique.
TEMPORARY_DIGITS = 12
#: The name :func:`replaced_atomically` gives its temporary file, ``.<target name>-<hex>.tmp``.
TEMPORARY_FILE = re.compile(rf"^\..+-[0-9a-f]{{{TEMPORARY_DIGITS}}}\.tmp$")


@contextmanager
def replaced_atomically(path: str | os.PathLike, mode: str = "w", **open_kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside ``path`` (``mode``: ``"w"`` or ``"wb"``; ``open_kwargs`` as for
    ``open``) for the block to write; when the block ends without an error it replaces ``path``,
    otherwise it is removed and ``path`` is left as it was. The folder is made if missing."""
    target = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(target)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}-{uuid.uuid4().hex[:TEMPORARY_DIGITS]}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:  # type: ignore[call-overload]
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):  # the error that stopped the write is the one to report
            os.remove(temporary)
        raise
    sync_folder(folder)


def sync_folder(folder: str) -> None:
    """Flush ``folder``'s entries (a rename into it) to the disk, where the system allows it (POSIX;
    Windows and some network file systems cannot open a folder: nothing is done there)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def os_reason(error: OSError) -> str:
    """The reason ``error`` gives, as a clause of a sentence: first letter in lower case, no full stop
    (``"no space left on device"``)."""
    reason = (error.strerror or str(error) or type(error).__name__).rstrip(".")
    return reason[:1].lower() + reason[1:]


def folder_write_error(folder: str) -> OSError | None:
    """The error that making ``folder`` (when missing) and writing a file into it raises; None when
    both work (the probe file is removed again)."""
    probe = os.path.join(folder, f".lebm-write-check-{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        return error
    return None
