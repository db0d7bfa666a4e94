"""Loading any method's checkpoint without knowing which method wrote it (``lebm.load``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lebm.checkpoints import CheckpointError, missing_class_message, read_checkpoint, writer_version
from lebm.config import MissingClass, import_object
from lebm.devices import check_map_location
from lebm.models.base import Method


def stored_method_class(path: str | Path, weights_only: bool = True) -> type:
    """The method class a checkpoint names in its hyperparameters (``_class_path``)."""
    checkpoint = read_checkpoint(path, weights_only=weights_only)
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(class_path, str):
        raise CheckpointError(
            f"{path} does not name the method that wrote it (no `_class_path` in its hyperparameters): "
            "it was not saved by an lebm method; load it with the method's class, e.g. "
            "LatentEBM.load_from_checkpoint(path)"
        )
    try:
        cls = import_object(class_path)
    except MissingClass as error:
        raise CheckpointError(missing_class_message(path, error.named, writer_version(checkpoint))) from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CheckpointError(
            f"{path} names {class_path}, which is not an lebm method (a subclass of lebm.models.Method)"
        )
    return cls


def load_method(path: str | Path, map_location: Any = None, **kwargs: Any) -> Any:
    """``stored_method_class(path).load_from_checkpoint(path, map_location=..., **kwargs)``, in
    evaluation mode: nets with BatchNorm use their running statistics, so ``score``, ``infer``,
    ``reconstruct`` and ``generate`` do not depend on which examples share a batch (a Trainer puts
    the model back in training mode when it fits it). A ``map_location`` naming a device this machine
    lacks is refused first, in one line."""
    check_map_location(map_location)
    method = stored_method_class(path, weights_only=kwargs.get("weights_only") is not False)
    return method.load_from_checkpoint(path, map_location=map_location, **kwargs).eval()
