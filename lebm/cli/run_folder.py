"""A run folder's life (``trainer.default_root_dir``): what ``lebm fit`` does with what it finds there.

A run is **started** once it has a checkpoint (``<run>/checkpoints/*.ckpt``). Before that, the files
a start writes (``config.yaml``, the W&B id, ``images/``, ``wandb/``, ``metrics.csv``, ``curves.png``,
``samples/``) belong to a start that failed
(bad data, a divergence at step 0, a SIGTERM during start-up): the same command sets them aside
in ``<run>/failed_start-<time>/``, says so in one line and starts again, so a requeue loop is never
locked out by its own first attempt.

``--ckpt_path``:

- ``auto``: nothing there -> start; a checkpoint -> resume from the intact one holding the most
  training (its global step, then its epoch, read from each file; ``last.ckpt`` of a tie), never
  decided by file times (a copy or a restore from a backup changes them); when that is not
  ``last.ckpt`` (unreadable, or a save behind because a kill came between the two files of one
  save), a line names it and why. Only checkpoints that hold the optimiser and loop state count:
  a weights-only file (``save_weights_only``) that holds more training than the one chosen is
  named in one line and passed over, and a folder of weights-only files alone is refused (nothing
  to resume);
- ``last``: ``<run>/checkpoints/last.ckpt``, which must exist and be readable (the message names the
  intact checkpoint holding the most training when it is not);
- a path: that checkpoint (checked before anything is written);
- none: a started run is refused unless ``--overwrite true``.

``lebm test`` keeps each anomaly reading in ``<run>/test_readings.jsonl`` (:func:`keep_test_readings`),
which ``--overwrite true`` deletes with the run.

Every ``fit`` first removes the hidden temporary files (``.<name>-<hex>.tmp``, :mod:`lebm.atomic`)
that writes killed halfway left anywhere in the run folder, and says so in one line.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Container
from typing import Any

from lebm.atomic import TEMPORARY_FILE, folder_write_error, os_reason, replaced_atomically
from lebm.checkpoints import (
    KEPT_FOR_SCORE_PREFIX,
    CheckpointError,
    CheckpointNotPlain,
    check_checkpoint_file,
    is_resumable,
    most_trained_checkpoint,
    read_checkpoint,
    run_id_held,
    training_held,
)
from lebm.cli.errors import fail
from lebm.cli.run_lock import LOCK_FILE
from lebm.training.run_identity import run_identity

CHECKPOINT_DIR = "checkpoints"
WANDB_RUN_ID_FILE = "wandb_run_id.txt"
#: The folder the W&B id beside it was made in (absolute): a copied or moved run folder gets a W&B run
#: of its own when resumed (:func:`wandb_run_id`).
WANDB_RUN_FOLDER_FILE = "wandb_run_folder.txt"
#: What a start writes into the run folder before the first checkpoint (the table of logged numbers,
#: the curves and the sentence files too: they may be written before it).
START_UP_FILES = (
    "config.yaml",
    WANDB_RUN_ID_FILE,
    WANDB_RUN_FOLDER_FILE,
    "images",
    "wandb",
    "metrics.csv",
    "curves.png",
    "samples",
)
#: The ``lebm test`` readings kept in a run folder, one JSON line each (:func:`keep_test_readings`).
TEST_READINGS_FILE = "test_readings.jsonl"
#: What ``--overwrite true`` deletes (the FID reference cache too: it belongs to the old run's data;
#: the test readings of the old run's checkpoints).
RUN_FILES = (CHECKPOINT_DIR, *START_UP_FILES, "fid_cache", TEST_READINGS_FILE)
#: Set by the process that applied the rules, for DDP workers Lightning launches again.
DECIDED_CKPT_PATH = "LEBM_FIT_CKPT_PATH"
#: A temporary file untouched for this many seconds belongs to a killed write, not a write in progress
#: (a ``lebm test`` of the same run writing its config, say).
WRITE_IDLE_S = 60.0
#: How many file names a line lists.
NAMES_SHOWN = 3


#: The first line of a fit's ``config.yaml``: it marks the file as a run's record, whose run folder
#: is the folder it lies in (:func:`run_record_folder`).
RUN_RECORD_MARK = "# lebm run record: its run folder is the folder this file lies in"
#: A logger's settings that belong to one run (its W&B id and resume mode, its folder): a run's
#: record leaves them out, and a command given a record takes them from the record's folder.
RUN_BOUND_LOGGER_SETTINGS = ("id", "resume", "save_dir")


def run_record_folder(path: str) -> str | None:
    """The run folder a ``-c`` file belongs to when it is a run's record (a fit's ``config.yaml``:
    marked by :data:`RUN_RECORD_MARK`, or named ``config.yaml`` beside a ``checkpoints/`` folder, as
    lebm wrote them before the mark), as an absolute path; None for a recipe."""
    if not os.path.isfile(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path) as handle:
            first = handle.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if first == RUN_RECORD_MARK:
        return folder
    if os.path.basename(path) == "config.yaml" and os.path.isdir(os.path.join(folder, CHECKPOINT_DIR)):
        return folder
    return None


def say(message: str) -> None:
    """One line on stderr, ``lebm: message``."""
    sys.stderr.write(f"lebm: {message}\n")


def checkpoint_files(run_dir: str, leave_out: Container[str] = ()) -> list[str]:
    """``<run>/checkpoints/*.ckpt``, newest first (of two written at the same time, ``last*`` first),
    without those kept for their score (``best-fid.ckpt``: saved during a validation, not a state to
    resume from) and those in ``leave_out`` (another run's: :func:`other_runs_checkpoints`)."""
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    paths = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.endswith(".ckpt") and not name.startswith(KEPT_FOR_SCORE_PREFIX)
    ]
    paths = [path for path in paths if path not in leave_out]
    return sorted(paths, key=lambda path: (os.path.getmtime(path), is_last(path)), reverse=True)


def other_runs_checkpoints(run_dir: str, weights_only: bool = True) -> dict[str, str]:
    """The checkpoints in ``run_dir`` that another run wrote, with its id: the folder's run is the
    one its ``last.ckpt`` names (:func:`~lebm.checkpoints.run_id_held`; a smoke test or a second
    ``Trainer`` pointed at the folder writes ``last-v1.ckpt`` beside it, under its own id). Empty
    when ``last.ckpt`` names no run (missing, unreadable, or written before lebm kept run ids)."""
    ids: dict[str, str | None] = {}
    for path in checkpoint_files(run_dir):
        try:
            ids[path] = run_id_held(path, weights_only=weights_only)
        except CheckpointNotPlain as error:
            fail(str(error))
        except CheckpointError:
            continue  # an unreadable file: the resume's own rules name it
    own = ids.get(os.path.join(run_dir, CHECKPOINT_DIR, "last.ckpt"))
    if own is None:
        runs = sorted({run_id for run_id in ids.values() if run_id is not None})
        if len(runs) > 1:  # which run the folder is cannot be vouched for: never pick one by training held
            fail(
                f"{os.path.join(run_dir, CHECKPOINT_DIR)} holds checkpoints of {len(runs)} runs ({', '.join(runs)}) "
                "and its last.ckpt names none (missing, unreadable, or written before lebm kept run ids): give the "
                "checkpoint to resume as --ckpt_path FILE, or move the other run's files out"
            )
        return {}
    return {path: run_id for path, run_id in ids.items() if run_id is not None and run_id != own}


def say_other_runs_passed_over(run_dir: str, others: dict[str, str]) -> None:
    """One line naming the checkpoints of another run that a resume of ``run_dir`` passes over."""
    if not others:
        return
    listed = ", ".join(
        f"{os.path.basename(path)} (run {run_id})" for path, run_id in list(others.items())[:NAMES_SHOWN]
    )
    more = f" and {len(others) - NAMES_SHOWN} more" if len(others) > NAMES_SHOWN else ""
    say(
        f"passed over {len(others)} checkpoint(s) in {os.path.join(run_dir, CHECKPOINT_DIR)} written by another run "
        f"than its last.ckpt's: {listed}{more} (give one's path as --ckpt_path to resume it on purpose)"
    )


def is_last(path: str) -> bool:
    """Whether ``path`` is a ``last*.ckpt`` (the checkpoint Lightning rewrites at every save)."""
    return os.path.basename(path).startswith("last")


def last_checkpoint(run_dir: str, leave_out: Container[str] = ()) -> str | None:
    """``<run>/checkpoints/last*.ckpt`` (the newest) but those in ``leave_out``, or None."""
    lasts = [path for path in checkpoint_files(run_dir, leave_out) if is_last(path)]
    return lasts[0] if lasts else None


def unreadable(path: str, weights_only: bool = True) -> str | None:
    """Why ``path`` is not a readable checkpoint, or None when it is. An intact checkpoint that
    ``weights_only`` refuses is no reason to pass over it for an older one: that stops the command
    with its message (:class:`~lebm.checkpoints.CheckpointNotPlain`: the object and the ways out)."""
    try:
        check_checkpoint_file(path, weights_only=weights_only)
    except CheckpointNotPlain as error:
        fail(str(error))
    except CheckpointError as error:
        return str(error)
    return None


def weights_only_checkpoints(paths: list[str], weights_only: bool = True) -> dict[str, int]:
    """The readable checkpoints of ``paths`` that hold weights only (nothing to resume training
    from), with the global step each holds; unreadable ones are left to the caller's rules."""
    found = {}
    for path in paths:
        try:
            if not is_resumable(path, weights_only=weights_only):
                found[path] = training_held(path, weights_only=weights_only)[0]
        except CheckpointNotPlain as error:
            fail(str(error))
        except CheckpointError:
            continue
    return found


def newest_intact_checkpoint(
    run_dir: str,
    weights_only: bool = True,
    last_first: bool = True,
    partial: dict[str, int] | None = None,
    leave_out: Container[str] = (),
) -> tuple[str | None, list[str]]:
    """The checkpoint a resume should use: the readable one holding the most training
    (:func:`~lebm.checkpoints.most_trained_checkpoint`; ``last.ckpt`` of a tie), or with
    ``last_first`` ``last.ckpt`` whenever it is readable; and the unreadable ones passed over, each
    as ``path: reason``. A kill between the two files of one save (``epoch=N-step=S.ckpt``, then
    ``last.ckpt``) leaves ``last.ckpt`` a save behind; a copy or a backup restore leaves file times
    that say nothing: neither misleads."""
    if partial is None:  # the weights-only files, passed over (a caller that read them gives them)
        partial = weights_only_checkpoints(checkpoint_files(run_dir, leave_out), weights_only)
    candidates = [path for path in checkpoint_files(run_dir, leave_out) if path not in partial]
    last = last_checkpoint(run_dir, leave_out)
    last = last if last not in partial else None
    passed_over: list[str] = []
    if last is not None and last_first:
        reason = unreadable(last, weights_only)
        if reason is None:
            return last, []
        candidates, passed_over = [path for path in candidates if path != last], [reason]
    try:
        chosen, skipped = most_trained_checkpoint(candidates, weights_only=weights_only)
    except CheckpointNotPlain as error:
        fail(str(error))
    return chosen, [*passed_over, *skipped]


def killed_writes(run_dir: str, idle_s: float = WRITE_IDLE_S) -> list[str]:
    """The temporary files of :func:`lebm.atomic.replaced_atomically` anywhere under ``run_dir`` that
    nothing wrote to for ``idle_s`` seconds: a write killed before its rename leaves one (a finished
    or failed write removes its own); a newer one may be another process's write in progress."""
    now = time.time()
    found = []
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if TEMPORARY_FILE.match(name) and now - modified_time(path, default=now) >= idle_s:
                found.append(path)
    return sorted(found)


def modified_time(path: str, default: float) -> float:
    """``path``'s modification time, ``default`` when it is gone."""
    try:
        return os.path.getmtime(path)
    except OSError:
        return default


def remove_killed_writes(run_dir: str) -> list[str]:
    """Remove :func:`killed_writes` and say so in one line; the files removed."""
    removed = []
    for path in killed_writes(run_dir):
        try:
            os.remove(path)
        except OSError:
            continue  # gone already, or not ours to remove: the run does not read it
        removed.append(path)
    if removed:
        listed = ", ".join(os.path.relpath(path, run_dir) for path in removed[:NAMES_SHOWN])
        more = f" and {len(removed) - NAMES_SHOWN} more" if len(removed) > NAMES_SHOWN else ""
        say(f"removed {len(removed)} temporary file(s) that interrupted writes left in {run_dir}: {listed}{more}")
    return removed


def keep_test_readings(run_dir: str, records: list[dict[str, Any]]) -> str:
    """Add ``lebm test``'s ``records`` (each callback's, with the date and time) as JSON lines to the
    run folder's :data:`TEST_READINGS_FILE`, rewritten whole (:func:`~lebm.atomic.replaced_atomically`);
    returns its path. Earlier readings stay: each line names the checkpoint it read."""
    path = os.path.join(run_dir, TEST_READINGS_FILE)
    kept = ""
    if os.path.exists(path):
        with open(path) as handle:
            kept = handle.read()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    lines = "".join(json.dumps({"date": stamp, **record}) + "\n" for record in records)
    with replaced_atomically(path) as handle:
        handle.write(kept + lines)
    return path


def start_up_leftovers(run_dir: str) -> list[str]:
    """The files of a start that wrote no checkpoint."""
    return [name for name in START_UP_FILES if os.path.exists(os.path.join(run_dir, name))]


def set_aside_failed_start(run_dir: str) -> str | None:
    """Move a failed start's files to ``<run>/failed_start-<time>/``; the folder, or None if none."""
    leftovers = start_up_leftovers(run_dir)
    if not leftovers:
        return None
    aside = os.path.join(run_dir, time.strftime("failed_start-%Y%m%d-%H%M%S"))
    while os.path.exists(aside):
        aside += "_"
    os.makedirs(aside)
    moved: list[str] = []
    for name in leftovers:
        try:
            os.rename(os.path.join(run_dir, name), os.path.join(aside, name))
        except OSError as error:
            for done in reversed(moved):  # leave the folder as it was found
                os.rename(os.path.join(aside, done), os.path.join(run_dir, done))
            os.rmdir(aside)
            fail(
                f"{run_dir} holds only the files of a start that wrote no checkpoint, and "
                f"{os.path.join(run_dir, name)} cannot be moved aside ({os_reason(error)}): remove it or make it "
                "writable (an immutable file: chattr -i), or pass another --trainer.default_root_dir"
            )
        moved.append(name)
    say(
        f"{run_dir} holds only the files of a start that wrote no checkpoint ({', '.join(leftovers)}); "
        f"moved them to {aside} and starting again"
    )
    return aside


#: Run folders this process created (:func:`check_writable`), removed again when the command
#: fails and they hold no file (:func:`remove_empty_folders_made`).
FOLDERS_MADE: list[str] = []


def check_writable(run_dir: str) -> None:
    """Fail, before anything else, unless the run folder can be created and written to (a folder
    created here is recorded in :data:`FOLDERS_MADE`)."""
    if not os.path.exists(run_dir):
        FOLDERS_MADE.append(run_dir)
    error = folder_write_error(run_dir)
    if error is not None:
        fail(
            f"cannot write into the run folder {run_dir} ({os_reason(error)}): give another "
            "--trainer.default_root_dir, or make this one writable"
        )


def remove_empty_folders_made() -> None:
    """Remove the run folders this command created that hold no file (only empty sub-folders, or
    nothing): a run refused at build leaves no empty folder behind. A folder with any file in it is
    kept (a failed start's files are set aside by the next start)."""
    while FOLDERS_MADE:
        folder = FOLDERS_MADE.pop()
        files = [os.path.join(top, name) for top, _, names in os.walk(folder) for name in names]
        if os.path.isdir(folder) and files in ([], [os.path.join(folder, LOCK_FILE)]):
            shutil.rmtree(folder, ignore_errors=True)


def summary(run_dir: str, wandb_id: str | None) -> str:
    """One line on where a finished run's files are: checkpoint, config, numbers, curves, images,
    sentences, the W&B run."""
    parts = []
    last = last_checkpoint(run_dir)
    if last is not None:
        parts.append(f"checkpoint {last}")
    shown = (
        ("config.yaml", "config"),
        ("metrics.csv", "numbers"),
        ("curves.png", "curves"),
        ("images", "images"),
        ("samples", "sentences"),
    )
    for name, what in shown:
        if os.path.exists(os.path.join(run_dir, name)):
            parts.append(f"{what} {os.path.join(run_dir, name)}")
    if wandb_id and os.path.isdir(os.path.join(run_dir, "wandb")):
        offline = any(name.startswith("offline-run") for name in os.listdir(os.path.join(run_dir, "wandb")))
        sync = f" (offline: wandb sync {os.path.join(run_dir, 'wandb', 'offline-run-*')})" if offline else ""
        parts.append(f"W&B run {wandb_id}{sync}")
    return f"run folder {run_dir}: " + ("; ".join(parts) if parts else "nothing saved")


def is_primary_process() -> bool:
    """Whether this process is the run's first (global rank 0, or not distributed): only it moves,
    renames or deletes files of the run folder; ranks that torchrun or srun start beside it decide
    the same from what they read."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "NODE_RANK"))


def folder_run_id(run_dir: str, weights_only: bool = True) -> str | None:
    """The run a folder holds: the id its ``checkpoints/last.ckpt`` carries (None: no such file, or
    one written before lebm kept run ids). Raises :class:`~lebm.checkpoints.CheckpointError` for an
    unreadable one."""
    last = os.path.join(run_dir, CHECKPOINT_DIR, "last.ckpt")
    return run_id_held(last, weights_only=weights_only) if os.path.isfile(last) else None


def refuse_another_runs_checkpoint(run_dir: str, ckpt_path: str, weights_only: bool = True) -> None:
    """Refuse, in one line, resuming ``ckpt_path`` into ``run_dir`` when the folder holds another
    run (its ``last.ckpt`` names another run id): the fit would write over that run's checkpoints."""
    try:
        given = run_id_held(ckpt_path, weights_only=weights_only)
        own = folder_run_id(run_dir, weights_only)
    except CheckpointError:
        return  # an unreadable file: the resume's own checks name it
    if given is not None and own is not None and given != own:
        fail(
            f"{run_dir} holds run {own}, and {ckpt_path} is a checkpoint of run {given}: resuming it there would write "
            f"over run {own}'s checkpoints. Continue it in its own folder, or in a new one: --trainer.default_root_dir "
            f"{shlex.quote(run_dir.rstrip('/') + '_' + given)}"
        )


def evaluation_folder(ckpt_path: Any, subcommand: str = "test") -> str | None:
    """Where ``lebm validate|test|predict`` of the checkpoint file ``ckpt_path`` write (their config,
    readings and predictions): the run folder of a checkpoint in ``<run>/checkpoints/`` (a symbolic
    link followed to the file it names), else a new folder beside the file, ``<folder>/<name>-evaluated``;
    None without a checkpoint file. A checkpoint that lies in a run's folder but was written by
    another run (a copy) is refused in one line: its evaluation would overwrite that run's."""
    if not isinstance(ckpt_path, str) or not os.path.isfile(ckpt_path):
        return None
    real = os.path.realpath(ckpt_path)
    folder = os.path.dirname(real)
    if os.path.basename(folder) != CHECKPOINT_DIR:
        return os.path.join(folder, f"{os.path.splitext(os.path.basename(real))[0]}-evaluated")
    run_dir = os.path.dirname(folder)
    try:
        own = folder_run_id(run_dir) if os.path.basename(real) != "last.ckpt" else None
        written_by = run_id_held(real) if own is not None else None
    except CheckpointError:
        own = written_by = None  # an unreadable file: the command's own load names it
    if own is not None and written_by is not None and own != written_by:
        fail(
            f"lebm {subcommand}: {ckpt_path} lies in the run folder {run_dir}, but run {written_by} wrote it, not run "
            f"{own}: its {subcommand} would write over that run's; give --trainer.default_root_dir for its outputs"
        )
    return run_dir


def evaluated_checkpoint(run_dir: str, ckpt_path: str, subcommand: str, weights_only: bool = True) -> str:
    """The checkpoint ``lebm validate|test|predict --ckpt_path last|auto`` reads: the run's own
    (:func:`other_runs_checkpoints` passed over, in one line), ``last``: its ``last*.ckpt``, ``auto``:
    its intact checkpoint holding the most training. None there: refused in one line (Lightning would
    score a freshly initialised model and end with code 0)."""
    others = other_runs_checkpoints(run_dir, weights_only)
    say_other_runs_passed_over(run_dir, others)
    if ckpt_path == "last":
        chosen = last_checkpoint(run_dir, others)
        reason = unreadable(chosen, weights_only) if chosen is not None else None
        chosen = None if reason else chosen
    else:
        chosen, _ = newest_intact_checkpoint(run_dir, weights_only, last_first=False, leave_out=others)
    if chosen is None:
        folder = os.path.join(run_dir, CHECKPOINT_DIR)
        kind = "readable last" if ckpt_path == "last" else "intact"
        fail(
            f"lebm {subcommand} --ckpt_path {ckpt_path}: there is no {kind} checkpoint in {folder}, so it would "
            "score a freshly initialised model: give the run's folder "
            "(--trainer.default_root_dir RUN, or -c RUN/config.yaml) or a checkpoint's path"
        )
    return chosen


def best_without_a_fit(run_dir: str, command: str, cli: bool = True) -> str:
    """The one line that refuses ``ckpt_path="best"`` where no fit has run in this process (``command``:
    ``lebm validate``, or ``trainer.test()`` from Python, ``cli`` False): "best" is the best checkpoint of a
    fit in the same process, so it names the run's kept checkpoints to give instead."""
    kept = sorted(glob.glob(os.path.join(glob.escape(run_dir), CHECKPOINT_DIR, "*.ckpt")))
    listed = ", ".join(shlex.quote(path) for path in kept[:NAMES_SHOWN]) or "none there yet"
    best, last = ("--ckpt_path best", "--ckpt_path last") if cli else ('ckpt_path="best"', 'ckpt_path="last"')
    return (
        f"{best} means the best checkpoint of a fit in this same process, and {command} follows none: give the "
        f"checkpoint's path (in {os.path.join(run_dir, CHECKPOINT_DIR)}: {listed}), or {last}"
    )


def fit_checkpoint(run_dir: str, ckpt_path: Any, overwrite: bool, weights_only: bool = True) -> Any:
    """The checkpoint ``fit`` resumes from (None: a new run), after the rules of this module;
    ``weights_only``: the command's ``--weights_only`` (False: checkpoints holding objects are read)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and DECIDED_CKPT_PATH in os.environ:
        # a DDP worker that Lightning re-launched: the launching process already applied the rules (and
        # may have written to the folder since); follow its decision
        return os.environ[DECIDED_CKPT_PATH] or None
    if ckpt_path == "best":
        fail(
            "--ckpt_path best means the best checkpoint of an earlier fit in this same process, and lebm fit starts "
            "the first: resume with --ckpt_path last (or auto), or give a checkpoint's path"
        )
    if is_primary_process() and os.path.isdir(run_dir):
        remove_killed_writes(run_dir)
    started = bool(checkpoint_files(run_dir))
    if ckpt_path in ("auto", "last") and started:
        others = other_runs_checkpoints(run_dir, weights_only)  # a smoke test's last-v1.ckpt, say
        say_other_runs_passed_over(run_dir, others)
        partial = weights_only_checkpoints(checkpoint_files(run_dir, others), weights_only)
        newest, skipped = newest_intact_checkpoint(run_dir, weights_only, ckpt_path == "last", partial, others)
        last = last_checkpoint(run_dir, others)
        if newest is None and partial and not skipped:
            listed = ", ".join(
                f"{os.path.basename(path)} (step {step})" for path, step in list(partial.items())[:NAMES_SHOWN]
            )
            fail(
                f"--ckpt_path {ckpt_path}: {os.path.join(run_dir, CHECKPOINT_DIR)} holds weights-only checkpoints "
                f"alone ({listed}), which hold no optimiser or loop state to resume: nothing to resume. Start over "
                "with --overwrite true (or in another --trainer.default_root_dir), or fine-tune from their weights in "
                "a new run (lebm.load)"
            )
        held = training_held(newest, weights_only=weights_only)[0] if newest is not None else -1
        ahead = {path: step for path, step in partial.items() if step > held}
        if newest is not None and ahead:
            path, step = max(ahead.items(), key=lambda item: item[1])
            say(
                f"resuming from {newest} (step {held}): {os.path.basename(path)} holds more training (step {step}) "
                "but its weights alone (no optimiser or loop state), so it cannot be resumed"
            )
        if newest is None:
            fail(
                f"no checkpoint in {os.path.join(run_dir, CHECKPOINT_DIR)} is readable ({'; '.join(skipped)}). "
                "Start a new run with --overwrite true (or in another --trainer.default_root_dir)"
            )
        if ckpt_path == "last" and newest != last:
            if last is None:
                reason = "is missing"
            elif last in partial:
                reason = "holds weights only (no optimiser or loop state to resume)"
            else:
                reason = f"is unreadable ({skipped[0]})" if skipped else "is unreadable"
            fail(
                f"--ckpt_path last: {os.path.join(run_dir, CHECKPOINT_DIR, 'last.ckpt')} {reason}; the most trained "
                f"intact checkpoint is {newest}: resume from it with --ckpt_path {shlex.quote(newest)} "
                "(or --ckpt_path auto)"
            )
        if not skipped and last is not None and last not in partial and newest != last:
            step, epoch = training_held(newest, weights_only=weights_only)
            last_step, last_epoch = training_held(last, weights_only=weights_only)
            say(
                f"resuming from {newest}, the checkpoint holding the most training (step {step}, epoch {epoch}): "
                f"{os.path.basename(last)} holds less (step {last_step}, epoch {last_epoch})"
            )
        if skipped:
            passed_over = "; ".join(skipped)
            say(f"resuming from {newest}, the intact checkpoint holding the most training; passed over: {passed_over}")
            if last is not None and last != newest and is_primary_process() and unreadable(last, weights_only):
                kept = f"{last}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(last, kept)  # kept for inspection; the run writes a fresh last.ckpt
                say(f"moved the unreadable {os.path.basename(last)} to {kept}")
        ckpt_path = newest
    elif ckpt_path == "auto":
        ckpt_path = None
    elif isinstance(ckpt_path, str) and started and os.path.isfile(ckpt_path):
        refuse_another_runs_checkpoint(run_dir, ckpt_path, weights_only)
    elif ckpt_path == "last":
        fail(
            f"--ckpt_path last: there is no checkpoint to resume in {os.path.join(run_dir, CHECKPOINT_DIR)}. "
            "Drop --ckpt_path to start a new run, or use --ckpt_path auto to resume when there is one."
        )
    if ckpt_path is None and started:
        if not overwrite:
            fail(
                f"{run_dir} already holds a run ({CHECKPOINT_DIR}/*.ckpt). Resume it with --ckpt_path last (or auto), "
                f"train into a new folder with --trainer.default_root_dir {shlex.quote(run_dir.rstrip('/') + '_2')}, "
                "or replace it with --overwrite true"
            )
        if is_primary_process():
            present = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
            say(
                f"--overwrite true: replacing the run in {run_dir}: deleting its {', '.join(present)} "
                f"({len(checkpoint_files(run_dir))} checkpoint(s)) before this fit starts"
            )
        for name in RUN_FILES if is_primary_process() else ():
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
    elif ckpt_path is None and is_primary_process():
        set_aside_failed_start(run_dir)
    os.environ[DECIDED_CKPT_PATH] = str(ckpt_path or "")  # inherited by re-launched DDP workers
    return ckpt_path


def wandb_run_id(run_dir: str, resuming: bool, ckpt_path: Any = None) -> tuple[str, str | None]:
    """The W&B run id of a fit in ``run_dir``, and a line to say (None: nothing to say). A new run
    gets a fresh id. A resume (from ``ckpt_path``) continues the id stored in the folder only when
    that id was made in this very folder (:data:`WANDB_RUN_FOLDER_FILE`; a folder of an older lebm,
    which did not record it: unless the checkpoint says it was written elsewhere) and the checkpoint
    does not name another W&B run; else a fresh id, said in one line with the way to continue the
    stored one on purpose (``--trainer.logger.init_args.id``)."""
    fresh = uuid.uuid4().hex[:12]
    if not resuming:
        return fresh, None
    identity = checkpoint_identity(ckpt_path)
    stored = read_text(os.path.join(run_dir, WANDB_RUN_ID_FILE))
    if stored is None:  # a folder holding the checkpoints alone (a partial copy)
        logged = identity.get("wandb_id")
        if not isinstance(logged, str):
            return fresh, None
        return fresh, (
            f"resuming in {os.path.abspath(run_dir)}, which keeps no W&B id: {ckpt_path} logged to W&B run {logged}; "
            f"logging to a new W&B run {fresh} (give --trainer.logger.init_args.id {logged} to continue {logged} "
            "on purpose)"
        )
    made_in = read_text(os.path.join(run_dir, WANDB_RUN_FOLDER_FILE)) or identity.get("folder")
    here = os.path.abspath(run_dir)
    if isinstance(made_in, str) and os.path.abspath(made_in) != here:
        why = f"its W&B id {stored} was made in {made_in}, and this folder is a copy or a move of it"
    elif isinstance(identity.get("wandb_id"), str) and identity["wandb_id"] != stored:
        why = f"{ckpt_path} logged to W&B run {identity['wandb_id']}, not to this folder's {stored}"
    else:
        return stored, None
    return fresh, (
        f"resuming in {here}: {why}; logging to a new W&B run {fresh} so that two histories never share one "
        f"(give --trainer.logger.init_args.id {stored} to continue {stored} on purpose)"
    )


def read_text(path: str) -> str | None:
    """The stripped text of the file at ``path`` (None when it is missing or unreadable)."""
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def checkpoint_identity(ckpt_path: Any) -> dict[str, Any]:
    """The run identity the checkpoint file at ``ckpt_path`` carries (:mod:`lebm.training.run_identity`;
    empty: none, or no readable file)."""
    if not isinstance(ckpt_path, str) or not os.path.isfile(ckpt_path):
        return {}
    try:
        return run_identity(read_checkpoint(ckpt_path)) or {}
    except CheckpointError:
        return {}
