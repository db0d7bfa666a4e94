"""Reading lebm checkpoints: checking a file before a run uses it, and loading one without knowing
which method wrote it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from lebm.config import import_object


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


def stored_method_class(path: str | Path) -> type:
    """The method class a checkpoint names in its hyperparameters (``_class_path``)."""
    from lebm.models.base import Method

    class_path = (read_checkpoint(path).get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(class_path, str):
        raise CheckpointError(
            f"{path} does not name the method that wrote it (no `_class_path` in its hyperparameters): "
            "it was not saved by an lebm method; load it with the method's class, e.g. "
            "LatentEBM.load_from_checkpoint(path)"
        )
    cls = import_object(class_path)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CheckpointError(
            f"{path} names {class_path}, which is not an lebm method (a subclass of lebm.models.Method)"
        )
    return cls


def load_method(path: str | Path, map_location: Any = None, **kwargs: Any) -> Any:
    """``stored_method_class(path).load_from_checkpoint(path, map_location=..., **kwargs)``."""
    return stored_method_class(path).load_from_checkpoint(path, map_location=map_location, **kwargs)
