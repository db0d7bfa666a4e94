"""Reading lebm checkpoints: checking a file before a run uses it (loading one without knowing which
method wrote it is :mod:`lebm.models.loading`)."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A file that is not a readable lebm checkpoint."""


class CheckpointNotPlain(CheckpointError):
    """An intact checkpoint that holds objects other than tensors and plain data (a numpy number in a
    callback's state, say): it loads only when its reader is told to trust it (``weights_only=False``)."""


def refused_global(error: BaseException) -> str:
    """The class the weights-only unpickler refused, as its message names it (``numpy.float64``)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error)) or re.search(r"Unsupported global: ([\w.]+)", str(error))
    return found.group(1) if found else "an object"


def folder_given(path: str) -> str:
    """The message for a folder given where a checkpoint file belongs, naming a file that is there:
    a run folder's ``checkpoints/last.ckpt`` (or a checkpoint folder's ``last.ckpt``), else the newest
    ``*.ckpt`` in either; or saying that it holds none."""
    for candidate in (os.path.join(path, "checkpoints", "last.ckpt"), os.path.join(path, "last.ckpt")):
        if os.path.isfile(candidate):
            return f"{path} is a folder; give its checkpoint file: {candidate}"
    found = [
        os.path.join(folder, name)
        for folder in (os.path.join(path, "checkpoints"), path)
        if os.path.isdir(folder)
        for name in os.listdir(folder)
        if name.endswith(".ckpt") and os.path.isfile(os.path.join(folder, name))
    ]
    if found:
        newest = max(found, key=os.path.getmtime)
        return f"{path} is a folder; give one of its {len(found)} checkpoint files, e.g. the newest: {newest}"
    return (
        f"{path} is a folder and holds no checkpoint (no *.ckpt in it or in its checkpoints/): give a checkpoint file"
    )


def read_checkpoint(path: str | Path, *, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped; plain data only unless ``weights_only=False``,
    which unpickles any object: only for files you trust, such as your own run's).

    Raises:
        CheckpointNotPlain: the file is intact but holds objects other than tensors and plain data
            (with ``weights_only``); the message names the object and the two ways out.
        CheckpointError: the file is missing, not a PyTorch checkpoint or truncated; the message
            says which and why.
    """
    import pickle

    import torch

    path = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"the checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(folder_given(path))
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable lebm checkpoint: it is not a PyTorch checkpoint file (a zip archive written by "
            "torch.save); it may be truncated by an interrupted copy, or another kind of file"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except pickle.UnpicklingError as error:
        if not str(error).startswith("Weights only load failed"):
            raise CheckpointError(f"{path} is not a readable lebm checkpoint: {str(error).splitlines()[0]}") from None
        raise CheckpointNotPlain(
            f"{path} holds objects other than tensors and plain data ({refused_global(error)}), which lebm and "
            "Lightning load only when told to trust the file: a callback or your code stored it in the checkpoint "
            "(store plain Python numbers, e.g. float(x), to avoid it). If the file is yours, add --weights_only false "
            "(in Python: lebm.load(path, weights_only=False))"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable lebm checkpoint: {reason}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict): was it written by lebm?")
    return checkpoint


#: A checkpoint's key for the identity of the run that wrote it (:mod:`lebm.training.run_identity`).
RUN_KEY = "lebm_run"


def run_id_held(path: str | Path, *, weights_only: bool = True) -> str | None:
    """The id of the run that wrote the checkpoint at ``path`` (None: written before lebm kept
    one). Raises as :func:`read_checkpoint`."""
    record = read_checkpoint(path, weights_only=weights_only).get(RUN_KEY)
    run_id = record.get("id") if isinstance(record, dict) else None
    return run_id if isinstance(run_id, str) else None


def check_checkpoint_file(path: str | Path, *, weights_only: bool = True) -> None:
    """Fail with a clear :class:`CheckpointError` unless ``path`` is a readable checkpoint
    (:class:`CheckpointNotPlain` when it is intact but holds objects ``weights_only`` refuses)."""
    read_checkpoint(path, weights_only=weights_only)


def training_held(path: str | Path, *, weights_only: bool = True) -> tuple[int, int]:
    """``(global step, epoch)`` the checkpoint at ``path`` holds, read from the file (its tensors
    memory-mapped, so cheap); which of two checkpoints holds more training, whatever their file
    times say. Raises as :func:`read_checkpoint`."""
    checkpoint = read_checkpoint(path, weights_only=weights_only)
    return int(checkpoint.get("global_step", 0) or 0), int(checkpoint.get("epoch", 0) or 0)


#: What a checkpoint holds to resume training: the optimisers' and the loops' state (Lightning's
#: ``save_weights_only`` files, e.g. ``recipes/evaluation/checkpoints_every_500.yaml``'s, hold neither).
RESUMABLE_KEYS = ("optimizer_states", "loops")


def is_resumable(path: str | Path, *, weights_only: bool = True) -> bool:
    """Whether the checkpoint at ``path`` holds what resuming training reads (:data:`RESUMABLE_KEYS`),
    not the weights alone. Raises as :func:`read_checkpoint`."""
    checkpoint = read_checkpoint(path, weights_only=weights_only)
    return all(key in checkpoint for key in RESUMABLE_KEYS)


def most_trained_checkpoint(paths: list[str], *, weights_only: bool = True) -> tuple[str | None, list[str]]:
    """Of ``paths``, the readable checkpoint holding the most training (:func:`training_held`; of a
    tie, a ``last*.ckpt``, then the first listed), and why each unreadable one was passed over
    (``path: reason``). :class:`CheckpointNotPlain` is raised, not passed over: an intact file the
    ``weights_only`` loader refuses needs the user's word, not an older checkpoint."""
    held: dict[str, tuple[int, int]] = {}
    skipped: list[str] = []
    for path in paths:
        try:
            held[path] = training_held(path, weights_only=weights_only)
        except CheckpointNotPlain:
            raise
        except CheckpointError as error:
            skipped.append(str(error))
    if not held:
        return None, skipped
    rank = {path: index for index, path in enumerate(paths)}
    best = max(held, key=lambda path: (*held[path], os.path.basename(path).startswith("last"), -rank[path]))
    return best, skipped


#: The start of the name of a checkpoint kept for its score (``best-fid.ckpt``: a model saved during a
#: validation, not the run's latest state): ``--ckpt_path auto`` never resumes one.
KEPT_FOR_SCORE_PREFIX = "best-"
#: The key of the lebm version that wrote a checkpoint (``lebm.__version__``; absent from those of 0.2.0 and earlier).
VERSION_KEY = "lebm_version"


def writer_version(checkpoint: Any) -> str | None:
    """The lebm version that wrote ``checkpoint`` (a checkpoint's contents), or None when it does not say."""
    version = checkpoint.get(VERSION_KEY) if isinstance(checkpoint, dict) else None
    return version if isinstance(version, str) else None


def is_newer(version: str | None) -> bool:
    """Whether ``version`` is a release after the lebm installed here (False when unknown or unreadable)."""
    from packaging.version import InvalidVersion, Version

    from lebm.version import __version__

    if version is None:
        return False
    try:
        return Version(version) > Version(__version__)
    except InvalidVersion:
        return False


def newer_writer_message(path: Any, version: str) -> str:
    """The line for a checkpoint written by a newer lebm than the one installed."""
    from lebm.version import __version__

    return (
        f"{path} was written by lebm {version}, newer than this lebm ({__version__}): it may hold settings or parts "
        f"this version reads differently or not at all; install lebm {version} or newer to use it "
        "(lebm --version says which you have)"
    )


def missing_class_message(path: Any, class_path: str, version: str | None) -> str:
    """The line for a checkpoint naming ``class_path``, which this lebm cannot import: which class,
    which lebm wrote the checkpoint (``version``; None: it did not say), and what to install
    (``class_path`` may say the path it was read as: ``lebm.x.Old (read as lebm.y.Old)``)."""
    from lebm.version import __version__

    lacks = f"{path} names {class_path}, which this lebm ({__version__}) does not have"
    if version is not None and is_newer(version):
        return f"{lacks}: the checkpoint was written by lebm {version}; install lebm {version} or newer to load it"
    writer = f"lebm {version}" if version else "an lebm of 0.2.0 or earlier, which did not record its version"
    own = "if the class is yours, make its module importable (install it, or add its folder to PYTHONPATH)"
    if class_path.split(".")[0] != "lebm":
        return f"{lacks} (the checkpoint was written by {writer}): {own}"
    return (
        f"{lacks} (the checkpoint was written by {writer}): install the lebm that wrote it"
        f"{f' ({version})' if version else ''} to load it; {own}"
    )


def shape_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The tensors both state dicts (the checkpoint's, the model's) hold with different shapes, each as
    ``key: (256, 8) in the checkpoint, (256, 16) in the recipe``: what no load takes, ``strict=False``
    or not."""
    import torch

    return [
        f"{key}: {tuple(stored[key].shape)} in the checkpoint, {tuple(current[key].shape)} in the recipe"
        for key in sorted(set(stored) & set(current))
        if isinstance(stored[key], torch.Tensor)
        and isinstance(current[key], torch.Tensor)
        and stored[key].shape != current[key].shape
    ]


def architecture_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The tensors that differ in presence or shape between two state dicts: :func:`shape_differences`
    after ``key (only in the recipe's model)`` and ``key (only in the checkpoint)``."""
    import torch

    only_here = [
        f"{key} (only in the recipe's model)"
        for key in sorted(current.keys() - stored.keys())
        if isinstance(current[key], torch.Tensor)  # extra state (a vocabulary) is not a shape
    ]
    only_there = [
        f"{key} (only in the checkpoint)"
        for key in sorted(stored.keys() - current.keys())
        if isinstance(stored[key], torch.Tensor)
    ]
    return only_here + only_there + shape_differences(stored, current)
