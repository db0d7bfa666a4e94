"""Reading lebm checkpoints without knowing which method wrote them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lebm.config import import_object
from lebm.models.base import Method


def stored_method_class(path: str | Path) -> type[Method]:
    """The method class a checkpoint names in its hyperparameters (``_class_path``)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(class_path, str):
        raise ValueError(
            f"{path} does not name the method that wrote it (no `_class_path` in its hyperparameters): "
            "it was not saved by an lebm method; load it with the method's class, e.g. "
            "LatentEBM.load_from_checkpoint(path)"
        )
    cls = import_object(class_path)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{path} names {class_path}, which is not an lebm method (a subclass of lebm.models.Method)")
    return cls


def load_method(path: str | Path, map_location: Any = None, **kwargs: Any) -> Method:
    """``stored_method_class(path).load_from_checkpoint(path, map_location=..., **kwargs)``."""
    return stored_method_class(path).load_from_checkpoint(path, map_location=map_location, **kwargs)
