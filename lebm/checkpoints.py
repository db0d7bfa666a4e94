"""Reading lebm checkpoints: checking a file before a run uses it (loading one without knowing which
method wrote it is :mod:`lebm.models.loading`)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from lebm.moved import moved_names


class CheckpointError(ValueError):
    """A file that is not a readable lebm checkpoint."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped, plain data only).

    Raises:
        CheckpointError: the file is missing, not a PyTorch checkpoint, truncated, or holds
            objects other than tensors and plain data; the message says which and why.
    """
    import pickle

    import torch

    path = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"the checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; give a checkpoint file such as {os.path.join(path, 'last.ckpt')}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable lebm checkpoint: it is not a PyTorch checkpoint file (a zip archive written by "
            "torch.save); it may be truncated by an interrupted copy, or another kind of file"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable lebm checkpoint: {reason}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict): was it written by lebm?")
    return checkpoint


def check_checkpoint_file(path: str | Path) -> None:
    """Fail with a clear :class:`CheckpointError` unless ``path`` is a readable checkpoint."""
    read_checkpoint(path)


__getattr__ = moved_names(__name__)  # names that moved away (lebm.moved.MOVED_NAMES)
