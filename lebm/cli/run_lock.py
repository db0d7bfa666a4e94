"""One live fit per run folder: ``<run>/fit.lock``.

``lebm fit`` takes the lock before it reads or moves anything in the run folder, and holds it until
the command ends. The lock is two things at once:

- an exclusive ``flock`` on ``<run>/fit.lock``, which the operating system releases when the
  process ends however it ends (a kill, an out-of-memory stop, a node reboot), so a lock is never
  left held by a process that is gone;
- the file's text, one JSON line naming the holder: host, process id, start time and command, for
  the message that refuses a second fit.

A second fit into a held folder is refused in one line naming the running fit and the ways out.
A lock file whose ``flock`` is free and that names a holder belongs to a fit that was killed: it is
taken over, in one line. A fit that ends removes the file as it releases the lock (a fit that
opened it meanwhile finds it gone and takes the lock anew).
The command's other processes (DDP ranks, which Lightning or torchrun starts beside the first) take
no lock of their own: the first process holds it for the fit. A file system without ``flock``
(some network mounts) runs without the lock, and says so once. A process forked from the holder
(a DataLoader worker) closes its copy of the lock at once, so workers left behind by a killed fit
never hold its folder.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from typing import IO, Any

from lebm.cli.errors import fail

LOCK_FILE = "fit.lock"
#: The open lock files of this process, by run folder (held until the command ends).
HELD: dict[str, IO[str]] = {}


def say(message: str) -> None:
    """One line on stderr, ``lebm: message``."""
    sys.stderr.write(f"lebm: {message}\n")


def holder_text() -> str:
    """This process as the lock names it: one JSON line."""
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join(["lebm", *sys.argv[1:]]) if sys.argv else "lebm fit",
        }
    )


def read_holder(handle: IO[str]) -> dict[str, Any] | None:
    """The holder a lock file names (None: empty or not ours to read)."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


#: Characters of the holder's command a lock message quotes (an expanded recipe runs to pages).
COMMAND_SHOWN = 80


def describe(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host n1, started 2026-11-27 09:00:00 (lebm fit -c ...)``, or what is known; the
    command cut to :data:`COMMAND_SHOWN` characters, so that the message stays one line."""
    if holder is None:
        return "a fit whose lock names no holder"
    command = " ".join(str(holder.get("command", "lebm fit")).split())
    if len(command) > COMMAND_SHOWN:
        command = command[: COMMAND_SHOWN - 3] + "..."
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')} "
        f"({command})"
    )


def take_lock(run_dir: str) -> None:
    """Take ``<run_dir>/fit.lock`` for this process until it ends, or stop in one line when another
    fit holds it (see the module docstring). Taking a lock this process holds already does nothing."""
    if run_dir in HELD:
        return
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        handle = open(path, "a+")  # noqa: SIM115 (held open until the command ends)
    except OSError as error:  # a folder, or a file this user cannot write (read-only, immutable)
        fail(
            f"cannot open the run folder's lock {path} ({error.strerror or error}): it must be a file this user can "
            f"write. Remove it if no fit runs there, or train into another folder (--trainer.default_root_dir "
            f"{shlex.quote(run_dir.rstrip('/') + '_2')})"
        )
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _still_at(handle, path):  # removed by the fit that held it, or replaced, meanwhile
            handle.close()
            return take_lock(run_dir)
    except BlockingIOError:
        holder = read_holder(handle)
        handle.close()
        fail(
            f"{run_dir} is in use by a running fit: {describe(holder)}. Wait for it to end, train into another "
            f"folder (--trainer.default_root_dir {shlex.quote(run_dir.rstrip('/') + '_2')}), or replace its run with "
            "--overwrite true once it has ended"
        )
    except OSError as error:  # a file system without flock: no lock, said once
        handle.close()
        say(f"cannot lock {path} ({error.strerror or error}): this fit runs without the one-fit-per-folder lock")
        return
    stale = read_holder(handle)
    if stale is not None and stale.get("host") not in (None, socket.gethostname()):
        say(
            f"took over the lock of {describe(stale)}: it holds no lock now; if that fit still runs there, stop this "
            "one (a network file system may not share locks between hosts)"
        )
    elif stale is not None:
        say(f"took over the lock of a fit that is no longer running ({describe(stale)})")
    handle.seek(0)
    handle.truncate()
    handle.write(holder_text() + "\n")
    handle.flush()
    HELD[run_dir] = handle


def _still_at(handle: IO[str], path: str) -> bool:
    """Whether the open lock file ``handle`` is still the file at ``path`` (not removed or replaced)."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def release_locks() -> None:
    """Remove and release every lock this process holds (the command's end): a finished run folder
    keeps no lock file. Removed while still locked, so a fit that opened the file just before
    locks a file no longer at its path, sees that (:func:`_still_at`) and takes the lock anew."""
    while HELD:
        run_dir, handle = HELD.popitem()
        path = os.path.join(run_dir, LOCK_FILE)
        with contextlib.suppress(OSError):  # a folder removed meanwhile: the flock goes with the handle
            if _still_at(handle, path):
                os.remove(path)
            else:
                handle.seek(0)
                handle.truncate()
        handle.close()


def forget_locks_in_child() -> None:
    """In a process forked from a holder (a DataLoader worker): close the inherited copies of the
    lock files, which would otherwise keep the ``flock`` held after the holder is killed, and hold
    none of them (its exit must not empty the holder's file)."""
    while HELD:
        _, handle = HELD.popitem()
        with contextlib.suppress(OSError):
            handle.close()


atexit.register(release_locks)
os.register_at_fork(after_in_child=forget_locks_in_child)
