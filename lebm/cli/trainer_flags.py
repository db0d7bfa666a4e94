"""Trainer flags that the ``lebm`` command changes, or that change lebm's run: each says so at build,
in one line (``lebm: ...`` on stderr), and none leaves a trap for the next run.

- ``fast_dev_run``: a smoke test. Lightning suppresses checkpoints, yet a ``ModelCheckpoint`` with
  ``save_last`` still writes ``last.ckpt`` at the end, which would make the run folder look like a
  started run (refused next time, and ``--ckpt_path last`` would continue the smoke test). So the
  smoke test writes nothing into the run folder: its checkpoints, config and images go to a
  temporary folder, deleted when the command ends. A folder that holds a run can be smoke-tested
  (``--ckpt_path last`` reads its checkpoint; nothing there is moved or deleted).
- ``overfit_batches``: the same first batches every epoch, in training and in validation;
  ``limit_train_batches`` and ``limit_val_batches`` are not used (Lightning's rule, which lebm's
  integer limits no longer override), and an integer means batches, as for the limits.
- ``enable_checkpointing false``: the recipe's ``ModelCheckpoint`` is left out (Lightning refuses the
  two together); the run writes no checkpoint and cannot be resumed.
- ``strategy ddp``/``ddp_spawn``: run as ``lebm_ddp``/``lebm_ddp_spawn`` (:mod:`lebm.distributed`).
- A second ``ModelCheckpoint`` writing beside lebm's gets its own file names
  (``best-<monitor>-epoch=..-step=...ckpt``, ``best-<monitor>-last.ckpt``) instead of Lightning's
  ``-v1`` copies of lebm's.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lebm.cli.errors import fail
from lebm.cli.run_folder import CHECKPOINT_DIR, last_checkpoint, newest_intact_checkpoint

#: Where a smoke test's files go, kept for the DDP workers that Lightning launches again.
SMOKE_TEST_DIR = "LEBM_SMOKE_TEST_DIR"
#: The temporary folders this process made for smoke tests (removed by :func:`remove_smoke_test_folders`).
_made_here: list[str] = []


def say(message: str) -> None:
    """One line on stderr, ``lebm: message``."""
    sys.stderr.write(f"lebm: {message}\n")


def _is_config_of(item: Any, class_name: str) -> bool:
    class_path = item.get("class_path") if hasattr(item, "get") else getattr(item, "class_path", None)
    return isinstance(class_path, str) and class_path.rsplit(".", 1)[-1] == class_name


# ------------------------------------------------------------------------------ fast_dev_run
def smoke_test_batches(trainer: Mapping[str, Any]) -> int:
    """The batches of a ``fast_dev_run`` (``true``: 1), or 0 when it is off."""
    value = trainer.get("fast_dev_run")
    if isinstance(value, bool) or value is None:
        return int(bool(value))
    return int(value)


def smoke_test_checkpoint(run_dir: str, ckpt_path: Any, weights_only: bool = True) -> Any:
    """The checkpoint a smoke test starts from, read from the run folder without changing it:
    ``last``/``auto`` as for ``fit`` (:mod:`lebm.cli.run_folder`), a path as given, None: none."""
    if ckpt_path not in ("last", "auto"):
        return ckpt_path
    newest, _ = newest_intact_checkpoint(run_dir, weights_only, last_first=ckpt_path == "last")
    if ckpt_path == "last" and (newest is None or newest != last_checkpoint(run_dir)):
        fail(
            f"--ckpt_path last: {os.path.join(run_dir, CHECKPOINT_DIR, 'last.ckpt')} is missing or unreadable; "
            "drop --ckpt_path to smoke-test a new run, or use --ckpt_path auto"
        )
    return newest


def smoke_test_folder() -> str:
    """A temporary folder for a smoke test's files (a DDP worker takes its launcher's)."""
    inherited = os.environ.get(SMOKE_TEST_DIR)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return inherited
    folder = tempfile.mkdtemp(prefix="lebm-fast_dev_run-")
    _made_here.append(folder)
    os.environ[SMOKE_TEST_DIR] = folder
    return folder


def remove_smoke_test_folders() -> None:
    """Delete the smoke tests' temporary folders this process made (the command calls it as it ends;
    a smoke test built from Python has them deleted when Python exits)."""
    while _made_here:
        shutil.rmtree(_made_here.pop(), ignore_errors=True)
    os.environ.pop(SMOKE_TEST_DIR, None)


atexit.register(remove_smoke_test_folders)


def smoke_test_note(run_dir: str, batches: int, folder: str, unused: Iterable[str]) -> str:
    """The line that says what a smoke test does with the run folder."""
    ignored = [flag for flag in unused if flag]
    tail = f"; {', '.join(ignored)} not used" if ignored else ""
    return (
        f"--trainer.fast_dev_run: a smoke test of {batches} batch{'es' if batches > 1 else ''} per loop that "
        f"writes nothing into {run_dir} (no checkpoint, config.yaml or logger run there): its files go to "
        f"{folder}, deleted at the end{tail}"
    )


# -------------------------------------------------------------------------- batch limits
def adjust_batch_limits(
    trainer: Any, limits: dict[str, int], integer_given: Callable[[str], bool]
) -> tuple[dict[str, int | float], list[str]]:
    """The batch settings to set on the built Trainer (``limits``: lebm's integer limits, read as
    batches) once ``fast_dev_run`` and ``overfit_batches`` have their say, and the lines that say
    which limits are not used. ``trainer``: the Trainer's config, updated with what it records;
    ``integer_given(key)``: whether the user wrote ``trainer.<key>`` as an integer."""
    limits = dict(limits)
    notes: list[str] = []
    overfit = trainer.get("overfit_batches") or 0
    if overfit:
        if isinstance(overfit, float) and overfit.is_integer() and (overfit > 1 or integer_given("overfit_batches")):
            overfit = int(overfit)  # batches, as for the limits: "1" is one batch, not the whole epoch
            trainer["overfit_batches"] = overfit
        unused = [key for key in ("limit_train_batches", "limit_val_batches") if trainer.get(key) is not None]
        for key in ("limit_train_batches", "limit_val_batches"):
            limits.pop(key, None)
        if isinstance(overfit, int):
            limits.update(overfit_batches=overfit, limit_train_batches=overfit, limit_val_batches=overfit)
        if unused:
            what = f"{overfit} batch{'es' if overfit != 1 else ''}" if isinstance(overfit, int) else f"{overfit:g}"
            given = " and ".join(f"--trainer.{key} {trainer.get(key):g}" for key in unused)
            notes.append(
                f"--trainer.overfit_batches {overfit:g}: every epoch trains on the same first {what} of the training "
                f"data (not shuffled) and validates on the first {what} of the validation data; {given} not used"
            )
    if smoke_test_batches(trainer):
        limits = {}  # Lightning's fast_dev_run sets every limit (overfit_batches keeps its own)
    return limits, notes


class WholeEpochNote(logging.Filter):
    """Drops Lightning's "``Trainer(limit_val_batches=1.0)`` was configured so 100% of the batches
    will be used" for the limits lebm sets to an integer once the Trainer is built."""

    keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for Lightning's "100%" line about one of :attr:`keys`."""
        message = record.getMessage()
        return not any(f"Trainer({key}=1.0)` was configured so 100%" in message for key in self.keys)


#: The one filter the ``lebm`` command puts on Lightning's info logger (its keys are each run's).
WHOLE_EPOCH_NOTE = WholeEpochNote()


# -------------------------------------------------------------------------- checkpoints
def drop_checkpoint_callbacks(trainer: Any) -> str | None:
    """With ``enable_checkpointing false``, leave the ``ModelCheckpoint`` callbacks out of the
    Trainer's config (Lightning refuses both); the line that says so, or None."""
    if trainer.get("enable_checkpointing") is not False:
        return None
    callbacks = trainer.get("callbacks")
    if not isinstance(callbacks, list):
        return None
    kept = [callback for callback in callbacks if not _is_config_of(callback, "ModelCheckpoint")]
    if len(kept) == len(callbacks):
        return None
    trainer["callbacks"] = kept
    return (
        "--trainer.enable_checkpointing false: the recipe's ModelCheckpoint is left out; this run writes no "
        "checkpoint, so --ckpt_path last cannot resume it"
    )


def checkpoint_tag(monitor: Any, position: int) -> str:
    """The file-name stem of an extra ``ModelCheckpoint``: ``best-<monitor>`` (``/`` and other
    characters a file name should not hold become ``_``), else ``checkpoint<position>``."""
    if isinstance(monitor, str) and monitor:
        return "best-" + re.sub(r"[^\w.=-]+", "_", monitor)
    return f"checkpoint{position}"


def same_folder(first: Any, second: Any) -> bool:
    """Whether two checkpoint folders are one: compared as real absolute paths (a user's relative
    ``runs/x/checkpoints`` and the absolute one Lightning makes of lebm's alike)."""
    if not isinstance(first, (str, os.PathLike)) or not isinstance(second, (str, os.PathLike)):
        return first == second
    return os.path.realpath(first) == os.path.realpath(second)


def name_extra_checkpoints(callbacks: Iterable[Any]) -> None:
    """Give every ``ModelCheckpoint`` config after the first (lebm's) that writes into the same
    folder and names no ``filename`` one of its own: ``<tag>-{epoch}-{step}``."""
    configs = [callback for callback in callbacks if _is_config_of(callback, "ModelCheckpoint")]
    if len(configs) < 2:
        return
    folder = configs[0].init_args.get("dirpath")
    for position, callback in enumerate(configs[1:], start=2):
        init_args = callback.init_args
        if same_folder(init_args.get("dirpath"), folder) and not init_args.get("filename"):
            init_args["filename"] = f"{checkpoint_tag(init_args.get('monitor'), position)}-{{epoch}}-{{step}}"


def name_extra_last_checkpoints(checkpoints: list[Any], *, files_too: bool = False) -> None:
    """Give every ``ModelCheckpoint`` after the first that writes a ``last`` checkpoint into the same
    folder its own: ``<tag>-last.ckpt`` (Lightning's documented ``CHECKPOINT_NAME_LAST``); with
    ``files_too`` (callbacks built in Python, whose configs :func:`name_extra_checkpoints` never
    saw), also a ``filename`` to one that names none: ``<tag>-{epoch}-{step}``."""
    if len(checkpoints) < 2:
        return
    folder = checkpoints[0].dirpath
    for position, callback in enumerate(checkpoints[1:], start=2):
        if not same_folder(callback.dirpath, folder):
            continue
        tag = checkpoint_tag(callback.monitor, position)
        if callback.save_last:
            callback.CHECKPOINT_NAME_LAST = f"{tag}-last"
        if files_too and not callback.filename:
            callback.filename = f"{tag}-{{epoch}}-{{step}}"


# ------------------------------------------------------------------------------ strategy
def strategy_note(given: Any, used: Any) -> str | None:
    """The line for a DDP strategy that lebm replaces, or None."""
    if not isinstance(given, str) or not given.startswith("ddp") or given == used:
        return None
    return (
        f"--trainer.strategy {given} runs as {used}: the same launcher, with each net's gradients reduced once, "
        "at its own optimiser's step (lebm.distributed)"
    )


# ------------------------------------------------------------------------------ monitors
_CHECKPOINT_MONITOR = re.compile(r"`ModelCheckpoint\(monitor=(.+?)\)` could not find the monitored key .*?: \[(.*?)\]")
_EARLY_STOPPING_MONITOR = re.compile(r"Early stopping conditioned on metric `(.+?)` which is not available.*?: (.*)$")


def unlogged_monitor(error: BaseException) -> str | None:
    """The one line for Lightning's error about a monitored name that was not logged (raised after
    a validation, when the run's names could not be checked before it: a part that does not
    declare what it logs, or no validation to log ``val/`` names), or None for another error."""
    message = " ".join(str(error).split())
    found = _CHECKPOINT_MONITOR.search(message)
    if found:
        callback, name, logged = "ModelCheckpoint", found.group(1).strip("'\""), found.group(2).replace("'", "")
    elif found := _EARLY_STOPPING_MONITOR.search(message):
        callback, name, logged = "EarlyStopping", found.group(1), found.group(2).replace("`", "")
    else:
        return None
    return f"{callback}(monitor={name!r}): the run did not log {name!r}; it logged: {logged or 'nothing'}"


#: Lightning's error for a share of an epoch that gives no batch (``limit_train_batches 0.001`` of 14 batches).
_TOO_SMALL_SHARE = re.compile(
    r"You requested to check (\S+) of the `(\w+)_dataloader` but \S+ \* (\d+) < 1\..*Try at least `(\w+)=(\S+)`"
)


def too_small_share(error: BaseException) -> str | None:
    """The one line for Lightning's error about a batch limit, a share of an epoch, that gives no
    batch of the data (raised when the loaders are made: the epoch's length is known only then), or
    None for another error."""
    found = _TOO_SMALL_SHARE.search(" ".join(str(error).split()))
    if found is None:
        return None
    share, loop, batches, key, least = found.groups()
    return (
        f"trainer.{key}={share} of the {batches} {loop} batches is no batch: give a number of batches (an int >= 1), "
        f"or a share of at least {float(least):.3g}"
    )
