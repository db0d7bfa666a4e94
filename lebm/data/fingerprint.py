"""Which examples a DataModule's splits hold, as plain data a checkpoint can carry.

Every lebm DataModule declares ``split_settings``: the constructor arguments that decide which
examples the training, validation and test splits hold, and what they look like (the dataset, the
held-out digits, the split seed, the pool, the validation share, the image size ...), not those
that only decide how they are read (batch size, workers, the data folder's path). A checkpoint
keeps the fingerprint of the data it was trained on (:func:`data_fingerprint`), so a command that
scores or resumes it compares the data it is about to read with that, wherever the file lives
(:func:`differing_settings`).
"""

from __future__ import annotations

import json
from typing import Any

from lebm.config import import_object

#: A fingerprint: ``{"class_path": "lebm.data.MNISTAnomalyDataModule", "settings": {name: value}}``.
Fingerprint = dict[str, Any]


def comparable(value: Any) -> str:
    """A setting as JSON text (tuples as lists, keys sorted, a whole float as an integer), so that
    a YAML list and a parsed tuple agree, and ``train_subset: 1`` and ``1.0``."""
    return json.dumps(_normal(value), sort_keys=True, default=str)


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return value


def split_settings(kind: type) -> tuple[str, ...]:
    """The ``split_settings`` a DataModule class declares (none: a user's class that declares none)."""
    return tuple(getattr(kind, "split_settings", ()))


def data_fingerprint(datamodule: Any) -> Fingerprint | None:
    """The fingerprint of ``datamodule`` (a LightningDataModule built with its arguments saved as
    hyperparameters, as lebm's are), or None without one. Each declared setting is read from the
    arguments the module was built with, as given (a list stays a list)."""
    if datamodule is None:
        return None
    kind = type(datamodule)
    arguments = dict(getattr(datamodule, "hparams", {}) or {})
    settings = {name: json.loads(comparable(arguments[name])) for name in split_settings(kind) if name in arguments}
    return {"class_path": f"{kind.__module__}.{kind.__qualname__}", "settings": settings}


def differing_settings(trained: Fingerprint | None, data: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(setting, value trained on, value here), ...]`` where ``data`` (a command's ``data``
    section: ``class_path`` and ``init_args``, defaults filled in) reads other examples than the
    fingerprint ``trained`` says; empty when they agree, when either is unknown or when the classes
    differ (another DataModule: nothing to compare by name)."""
    if not trained or not isinstance(data, dict):
        return []
    if not same_class(trained.get("class_path"), data.get("class_path")):
        return []
    now = data.get("init_args") or {}
    ran = trained.get("settings") or {}
    return [
        (name, ran[name], now.get(name))
        for name in ran
        if name in now and comparable(ran[name]) != comparable(now.get(name))
    ]


def same_class(recorded: Any, given: Any) -> bool:
    """Whether two class paths name DataModules whose split settings compare: one class
    (``lebm.data.X`` and ``lebm.data.images.datamodule.X`` alike), or one a subclass of the other
    (a user's ``MyDigits(ImageDataModule)`` inherits its settings); by name where either does not
    import here."""
    if not isinstance(recorded, str) or not isinstance(given, str):
        return False
    try:
        first, second = import_object(recorded), import_object(given)
    except (ValueError, ImportError, AttributeError):
        return recorded.rsplit(".", 1)[-1] == given.rsplit(".", 1)[-1]
    if not isinstance(first, type) or not isinstance(second, type):
        return first is second
    return issubclass(first, second) or issubclass(second, first)


def fingerprint_difference(trained: Fingerprint | None, now: Fingerprint | None) -> list[tuple[str, Any, Any]]:
    """:func:`differing_settings` between two fingerprints (a checkpoint's and a DataModule's)."""
    if not now:
        return []
    return differing_settings(trained, {"class_path": now.get("class_path"), "init_args": now.get("settings") or {}})


def describe_difference(differing: list[tuple[str, Any, Any]]) -> str:
    """``"anomaly_classes [4] in training, [1] here; seed 1 in training, 7 here"``."""
    return "; ".join(f"{name} {comparable(old)} in training, {comparable(new)} here" for name, old, new in differing)
