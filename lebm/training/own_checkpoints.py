"""A fit writes, rotates and deletes only its own run's checkpoints, whatever Trainer runs it.

Three rules, each applied by the method itself so that every Trainer has them (``lebm fit``,
``recipe.trainer()``, a plain ``L.Trainer``):

- **A checkpoint folder that holds another run is not trained into** (:func:`refuse_another_runs_folder`,
  when training starts): a new run, or a resume of another run, into a folder whose checkpoints a run
  of another id wrote is refused in one line; the run that wrote them resumes there.
- **A resumed ``ModelCheckpoint`` rotates only its own run's files in its own folder**
  (:func:`keep_own_checkpoint_states`): its saved state (best and last paths, the top-k it rotates)
  is rewritten to name this folder when the run folder was copied or moved, and every path another
  run wrote (or that lies outside the folder) is taken out of it, so Lightning never deletes it.
- **Lightning's deletion reads the file first** (:func:`let_io_remove_only`): lebm's checkpoint I/O
  removes a checkpoint only when it carries this run's id (:class:`lebm.checkpoint_io.AtomicCheckpointIO`),
  and says in one line which file it kept.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import torch

from lebm.checkpoint_io import AtomicCheckpointIO
from lebm.checkpoints import CheckpointError, run_id_held

#: The folder of a run folder that holds its checkpoints (``lebm.cli.run_folder.CHECKPOINT_DIR``).
RUN_CHECKPOINTS = "checkpoints"
#: The ``ModelCheckpoint`` state keys that hold one path.
PATH_KEYS = ("last_model_path", "best_model_path", "kth_best_model_path")


def held_id(path: str) -> tuple[bool, str | None]:
    """``(readable, run id)`` of the checkpoint file at ``path`` (id None: written before lebm kept one)."""
    try:
        return True, run_id_held(path)
    except CheckpointError:
        return False, None


def is_own(path: str, run_id: str | None) -> bool:
    """Whether the file at ``path`` is a readable checkpoint of run ``run_id`` (None: a run of an older
    lebm, whose files carry no id: a readable file without one)."""
    readable, held = held_id(path)
    return readable and held == run_id


def _moved(path: Any, old: str, new: str) -> Any:
    """``path`` under ``old`` named under ``new`` (other values as they are)."""
    if not isinstance(path, str) or not path:
        return path
    return os.path.join(new, os.path.relpath(path, old))


def _same_file(first: str, second: Any) -> bool:
    try:
        return isinstance(second, (str, os.PathLike)) and os.path.samefile(first, second)
    except OSError:
        return False


def keep_own_checkpoint_states(
    checkpoint: dict[str, Any], checkpoint_callbacks: list[Any], run_id: str | None, resumed_path: Any
) -> list[str]:
    """Rewrite, in place and before the callbacks read it, each ``ModelCheckpoint`` state in the
    resumed ``checkpoint`` (of run ``run_id``, read from ``resumed_path``) so that the callback
    rotates only this run's files in its own folder:

    - a state saved in another folder (the run folder was copied or moved) is followed onto the
      callback's folder when that folder's file named as the state's last checkpoint is this run's
      (or is the very file resumed: an older lebm's run, whose files carry no id);
    - every path of the state that lies outside the callback's folder, or that another run wrote
      there, is taken out: the top-k it rotates, its best, k-th best and last paths (the best and
      k-th best are chosen again among what is left).

    Returns the files taken out that exist (another run's: kept, never deleted)."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        return []
    kept_out: list[str] = []
    for callback in checkpoint_callbacks:
        state = states.get(getattr(callback, "state_key", None))
        folder = getattr(callback, "dirpath", None)
        if not isinstance(state, dict) or not isinstance(folder, str):
            continue
        folder = os.path.abspath(folder)
        saved_in = state.get("dirpath")
        if isinstance(saved_in, str) and os.path.abspath(saved_in) != folder:
            last_here = str(_moved(state.get("last_model_path"), saved_in, folder))
            if not os.path.isfile(last_here) or not (is_own(last_here, run_id) or _same_file(last_here, resumed_path)):
                continue  # another run's folder (or its own files gone): Lightning reloads nothing of the state
            state["dirpath"] = folder
            for key in PATH_KEYS:
                state[key] = _moved(state.get(key), saved_in, folder)
            state["best_k_models"] = {
                _moved(path, saved_in, folder): score for path, score in (state.get("best_k_models") or {}).items()
            }
        kept_out += _leave_out_others(state, folder, run_id, resumed_path, getattr(callback, "mode", "min"))
    return kept_out


def _leave_out_others(state: dict[str, Any], folder: str, run_id: str | None, resumed: Any, mode: str) -> list[str]:
    """Take the paths another run wrote, or outside ``folder``, out of one callback's ``state``."""

    def ours(path: Any) -> bool:
        if not isinstance(path, str) or not path:
            return True  # nothing named
        if os.path.dirname(os.path.abspath(path)) != folder:
            return False
        if not os.path.exists(path) or _same_file(path, resumed):
            return True
        readable, held = held_id(path)
        return not readable or held == run_id  # a file cut short is nobody's run (the I/O never deletes it)

    best_k = dict(state.get("best_k_models") or {})
    others = [path for path in best_k if not ours(path)]
    others += [state[key] for key in PATH_KEYS if not ours(state.get(key)) and state[key] not in others]
    if not others:
        return []
    for path in others:
        best_k.pop(path, None)
    state["best_k_models"] = best_k
    if not ours(state.get("last_model_path")):
        state["last_model_path"] = ""
    ranked = sorted(best_k, key=lambda path: float(best_k[path]), reverse=mode == "max")
    state["best_model_path"] = ranked[0] if ranked else ""
    state["best_model_score"] = best_k[ranked[0]] if ranked else None
    state["kth_best_model_path"] = ranked[-1] if ranked else ""
    state["kth_value"] = (
        best_k[ranked[-1]] if ranked else torch.tensor(float("inf") if mode == "min" else -float("inf"))
    )
    return sorted({path for path in others if os.path.exists(path)})


def folder_runs(folder: str) -> tuple[set[str | None], list[str]]:
    """The runs whose checkpoints ``folder`` holds, and the files: the id its ``last.ckpt`` carries
    when readable (the folder's run), else every readable file's (None: an older lebm's, no id).
    A folder none of whose files reads as a plain checkpoint (cut short, or holding objects that
    only ``weights_only=False`` loads) vouches for no run: no files (the command's own rules name them)."""
    files = sorted(glob.glob(os.path.join(glob.escape(folder), "*.ckpt")))
    if not files:
        return set(), []
    last = os.path.join(folder, "last.ckpt")
    if last in files:
        readable, held = held_id(last)
        if readable:
            return {held}, files
    runs = set()
    for path in files:
        readable, held = held_id(path)
        if readable:
            runs.add(held)
    return runs, files if runs else []  # no file read as a plain checkpoint: no run vouched for


class AnotherRunsFolder(ValueError):
    """A fit refused because a checkpoint folder it writes into holds another run's checkpoints (one
    line: the folder, the run, the ways out); the ``lebm`` command prints it alone, without a traceback."""


def checkpoint_folders(trainer: Any) -> list[str]:
    """The folders a fit of ``trainer`` writes checkpoints into, or that hold its run folder's: each
    checkpoint callback's, and ``<default_root_dir>/checkpoints`` (where lebm's runs keep theirs,
    whatever folder Lightning's default checkpoint callback picks)."""
    folders = [getattr(callback, "dirpath", None) for callback in getattr(trainer, "checkpoint_callbacks", [])]
    root = getattr(trainer, "default_root_dir", None)
    if isinstance(root, str):
        folders.append(os.path.join(root, RUN_CHECKPOINTS))
    unique: dict[str, None] = {os.path.abspath(folder): None for folder in folders if isinstance(folder, str)}
    return list(unique)


def refuse_another_runs_folder(trainer: Any, run_id: str | None, resumed_path: Any) -> None:
    """Refuse, in one line (:class:`AnotherRunsFolder`), a fit whose checkpoint folders (:func:`checkpoint_folders`)
    hold checkpoints, unless it resumes (``resumed_path``, the Trainer's ``ckpt_path``) the run that
    wrote them (``run_id``: the resumed run's id; None for an older lebm's run, whose files carry
    none): a new run, a model fitted before and fitted again without ``ckpt_path`` (its loops would
    start over beside the run's files), or a resume of another run. Checked when training starts
    (after any resume), before the first checkpoint is written."""
    for folder in checkpoint_folders(trainer):
        if not os.path.isdir(folder):
            continue
        runs, files = folder_runs(folder)
        resumes_it = bool(resumed_path) and (run_id in runs if run_id is not None else runs == {None})
        if not files or resumes_it:
            continue
        named = ", ".join(sorted(str(run) for run in runs if run is not None)) or "of an older lebm (no id)"
        if not resumed_path:
            this = "starts a new run" if run_id is None else f"goes on with the model in memory (run {run_id})"
        else:
            this = f"resumes run {run_id or 'of an older lebm (no id)'}"
        last = os.path.join(folder, "last.ckpt")
        shown = os.path.basename(files[0]) + (" ..." if len(files) > 1 else "")
        raise AnotherRunsFolder(
            f"{folder} holds checkpoints of run {named} ({shown}), and this fit {this}: it would write and rotate "
            f"checkpoints beside that run's. Resume that run with ckpt_path={last!r}, "
            "or give this fit another default_root_dir (lebm fit: --overwrite true replaces "
            "the run)"
        )


def let_io_remove_only(trainer: Any, run_id: str | None) -> None:
    """Let the Trainer's checkpoint I/O delete only checkpoints of run ``run_id`` (lebm's
    :class:`~lebm.checkpoint_io.AtomicCheckpointIO`; a checkpoint I/O of the user's own is theirs)."""
    io = getattr(getattr(trainer, "strategy", None), "checkpoint_io", None)
    if isinstance(io, AtomicCheckpointIO):
        io.removes_only_run = run_id
