"""Checkpoints written whole or not at all, wherever the run folder is (Lightning's ``CheckpointIO`` plugin).

Lightning's default checkpoint I/O writes the temporary file in the *system* temporary folder and
then moves it onto the checkpoint's name: when the run folder is on another file system (NFS, a
scratch disk) the move is a copy, and a kill or a full disk during it leaves a partial checkpoint
under the real name. :class:`AtomicCheckpointIO` serialises the checkpoint in memory (as Lightning
does), writes it into a temporary file *beside* the target, flushes and syncs it, renames it over
the target and syncs the folder (:func:`lebm.atomic.replaced_atomically`). On any failure the
temporary file is removed and the checkpoint that was there stays; an ``OSError`` (a full disk, a
quota, a folder that became read-only) becomes :class:`CheckpointNotSaved`, whose one-line message
names the folder, the space the checkpoint needs and how to resume (the ``lebm`` command prints it
and exits with code 1, no traceback).

Before training, each checkpoint folder is made and written to once (:func:`check_checkpoint_folders`):
a folder that cannot be (a file of that name in the way, a read-only disk) stops the run before its
first epoch with :class:`CheckpointNotSaved`, not after it.

The ``lebm`` command and :func:`lebm.from_recipe` give the Trainer this plugin
(:func:`with_atomic_checkpoints`); a Trainer built by hand gets it when a method is set up, unless it
was given a checkpoint I/O of its own (:func:`use_atomic_checkpoints`). Paths with a URL scheme
(``s3://...``) are left to Lightning's own writer.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from lebm.atomic import folder_write_error, os_reason, replaced_atomically
from lebm.checkpoints import CheckpointError, most_trained_checkpoint, run_id_held
from lebm.user_warnings import warn_user

__all__ = ["AtomicCheckpointIO", "CheckpointNotSaved", "use_atomic_checkpoints", "with_atomic_checkpoints"]

#: The errors that mean the disk (or the user's share of it) is full.
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class CheckpointNotSaved(OSError):
    """A checkpoint that could not be written; the one-line message says where, why, and how to resume.
    The checkpoints saved before it are intact (nothing was written under the checkpoint's name)."""


def human_size(size: float) -> str:
    """``size`` bytes as ``'1.5 MB'`` (decimal units, as ``df -H`` shows them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def newest_checkpoint(folder: str) -> str | None:
    """The intact ``*.ckpt`` file in ``folder`` holding the most training, the one ``--ckpt_path
    auto`` resumes (:func:`~lebm.checkpoints.most_trained_checkpoint`; None when it holds none)."""
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".ckpt")]
    except OSError:
        return None
    paths = [os.path.join(folder, name) for name in names if os.path.isfile(os.path.join(folder, name))]
    try:
        chosen = most_trained_checkpoint(paths)[0]
    except (CheckpointError, OSError):  # one holds objects: the user's word is needed before reading it
        chosen = None
    return chosen or (max(paths, key=os.path.getmtime) if paths else None)


def not_saved_message(path: str, size: int, error: OSError) -> str:
    """The one line for a checkpoint of ``size`` bytes that could not be written to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    reason = os_reason(error)
    newest = newest_checkpoint(folder)
    if newest:
        kept = "the checkpoints saved before are intact"
        resume = (
            f"resume with --ckpt_path auto (it takes the intact checkpoint holding the most training, now {newest})"
        )
    else:
        kept = "no partial file was left"
        resume = "run the same command again (no checkpoint was saved before this one)"
    if error.errno in NO_SPACE:
        try:
            free = f"{human_size(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = "its free space unknown"
        return (
            f"could not save the checkpoint {path}: {reason} (it needs {human_size(size)}; {folder} has {free}); "
            f"{kept}. Free space there (or move the run folder to a larger disk), then {resume}"
        )
    return (
        f"could not save the checkpoint {path} ({human_size(size)}): {reason}; {kept}. Make {folder} writable, "
        f"then {resume}"
    )


def is_local(path: Any) -> bool:
    """Whether ``path`` is a file on this machine (no URL scheme, or ``file://``)."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return "://" not in text or text.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` whose saves are atomic in the run folder itself (module doc):
    a temporary file beside the checkpoint, flushed and synced, renamed over it; on failure the
    temporary file is removed and :class:`CheckpointNotSaved` raised. Loading is Lightning's; removing
    is Lightning's for the files of the run set in :attr:`removes_only_run`, and no other file's.

    Attributes:
        removes_only_run: the id of the run whose checkpoints :meth:`remove_checkpoint` deletes (set by
            the method when training starts: :mod:`lebm.training.own_checkpoints`); a checkpoint that
            another run wrote (or that cannot be read) is kept and named in a warning. None: any.
    """

    removes_only_run: str | None = None

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint at ``path`` (Lightning rotating its top-k, or replacing a last
        checkpoint), unless it is not a checkpoint of :attr:`removes_only_run`: then it is kept."""
        target = os.fspath(path) if isinstance(path, os.PathLike) else str(path).removeprefix("file://")
        if self.removes_only_run is not None and is_local(path) and os.path.isfile(target):
            try:
                held: str | None = run_id_held(target)
            except CheckpointError:
                held = "unknown (the file cannot be read)"
            if held != self.removes_only_run:
                warn_user(
                    f"kept {target}: run {held or 'of an older lebm (no id)'} wrote it, not this run "
                    f"({self.removes_only_run}), and lebm deletes only the checkpoints of the run it trains"
                )
                return
        super().remove_checkpoint(path)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` whole or not at all (``storage_options`` must be None)."""
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # its own refusal, or a remote store
            return
        target = os.fspath(path) if isinstance(path, os.PathLike) else str(path).removeprefix("file://")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            with replaced_atomically(target, "wb") as file:
                file.write(data)
        except OSError as error:
            raise CheckpointNotSaved(not_saved_message(target, data.nbytes, error)) from error
        finally:
            data.release()


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """A Trainer's ``plugins`` (None, one, or a list) with :class:`AtomicCheckpointIO` as its checkpoint
    I/O: added when none is given, put in place of a plain ``TorchCheckpointIO``, and a checkpoint I/O
    of the user's own kept."""
    given = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    kept = [plugin for plugin in given if type(plugin) is not TorchCheckpointIO]
    if not any(isinstance(plugin, CheckpointIO) for plugin in kept):
        kept.append(AtomicCheckpointIO())
    return kept


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Give ``trainer``'s strategy an :class:`AtomicCheckpointIO` when it has Lightning's default
    (a Trainer built by hand); a checkpoint I/O of the user's own is kept."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def check_checkpoint_folders(trainer: L.Trainer) -> None:
    """Before training (``fit``): raise :class:`CheckpointNotSaved` on every rank when the folder of
    one of ``trainer``'s checkpoint callbacks (their ``dirpath``, resolved by their own set-up) can
    neither be made nor written to, so that the run stops before its first epoch, not after it.
    Global rank 0 probes the folders (it writes the checkpoints) and tells the others."""
    if trainer.state.fn != "fit" or trainer.fast_dev_run:
        return
    problem = unwritable_checkpoint_folder(trainer) if trainer.is_global_zero else None
    problem = trainer.strategy.broadcast(problem, src=0)
    if problem is not None:
        raise CheckpointNotSaved(problem)


def unwritable_checkpoint_folder(trainer: L.Trainer) -> str | None:
    """:func:`unwritable`'s line for the first local folder of ``trainer``'s checkpoint callbacks that
    cannot be written to; None when every one can."""
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        if folder is None or not is_local(folder):
            continue
        folder = os.fspath(folder) if isinstance(folder, os.PathLike) else str(folder).removeprefix("file://")
        problem = unwritable(folder)
        if problem is not None:
            return problem
    return None


def unwritable(folder: str) -> str | None:
    """Why no checkpoint can be written into ``folder`` (made when missing), as the one line that says
    the fix; None when a file can be written there."""
    error = folder_write_error(folder)
    if error is not None:
        reason = os_reason(error)
        if os.path.exists(folder) and not os.path.isdir(folder):
            reason, fix = "a file is in the way", f"move the file {folder} away"
        else:
            fix = f"make {folder} writable"
        return (
            f"cannot save checkpoints in {folder}: {reason}; nothing was trained. "
            f"{fix[:1].upper() + fix[1:]} (or give the run another folder: --trainer.default_root_dir), then run "
            "the same command again"
        )
    return None
