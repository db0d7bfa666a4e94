"""Which examples a DataModule's splits hold, as plain data a checkpoint can carry.

Every lebm DataModule declares ``split_settings``: the constructor arguments that decide which
examples the training, validation and test splits hold, and what they look like (the dataset, the
held-out digits, the split seed, the pool, the validation share, the image size ...), not those
that only decide how they are read (batch size, workers, the data folder's path). A checkpoint
keeps the fingerprint of the data it was trained on (:func:`data_fingerprint`), so a command that
scores or resumes it compares the data it is about to read with that, wherever the file lives
(:func:`differing_settings`).

The fingerprint also carries the data's content (:mod:`lebm.data.content`: a digest of the label
arrays and a sample of the files' bytes), which tells two copies with the same settings apart
(:func:`content_of`). Before comparing, each side's settings are completed with the class's defaults
and normalised by the class (:func:`normal_settings`: ``seed=None``, meaning 1, equals ``seed=1``).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from lebm.config import import_object
from lebm.data.content import data_content

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
    arguments the module was built with, as given (a list stays a list); ``content`` is the
    module's content record (:func:`lebm.data.content.data_content`; None before its set-up or for
    a module that names no sources)."""
    if datamodule is None:
        return None
    kind = type(datamodule)
    arguments = dict(getattr(datamodule, "hparams", {}) or {})
    settings = {name: json.loads(comparable(arguments[name])) for name in split_settings(kind) if name in arguments}
    return {
        "class_path": f"{kind.__module__}.{kind.__qualname__}",
        "settings": settings,
        "content": data_content(datamodule),
    }


def content_of(fingerprint: Fingerprint | None) -> dict[str, Any] | None:
    """The content record a fingerprint carries (None: unknown, as in fingerprints written before
    lebm kept one)."""
    content = fingerprint.get("content") if isinstance(fingerprint, dict) else None
    return content if isinstance(content, dict) and isinstance(content.get("digest"), str) else None


def importable_class(class_path: Any) -> type | None:
    """The class at ``class_path``, or None when it is not a dotted path importable here."""
    if not isinstance(class_path, str):
        return None
    try:
        found = import_object(class_path)
    except (ValueError, ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def normal_settings(kind: type | None, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` completed with the defaults of ``kind``'s constructor for its split settings
    and normalised by its ``normal_split_settings`` (a classmethod mapping the values that mean
    the same split to one: ``seed=None`` to the seed it stands for), so equal splits compare equal."""
    if kind is None:
        return dict(settings)
    completed = dict(settings)
    try:
        parameters = inspect.signature(kind).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    for name in split_settings(kind):
        parameter = parameters.get(name)
        if name not in completed and parameter is not None and parameter.default is not inspect.Parameter.empty:
            completed[name] = parameter.default
    normalise = getattr(kind, "normal_split_settings", None)
    return dict(normalise(completed)) if callable(normalise) else completed


def differing_settings(trained: Fingerprint | None, data: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(setting, value trained on, value here), ...]`` where ``data`` (a command's ``data``
    section: ``class_path`` and ``init_args``) reads other examples than the fingerprint ``trained``
    says; empty when they agree, when either is unknown or when the classes differ (another
    DataModule: nothing to compare by name). Both sides are completed and normalised by the class of
    ``data`` (:func:`normal_settings`). A fingerprint that names no class (read from Lightning's
    stored arguments, :func:`lightning_fingerprint`) is compared by the names of the split settings
    of the class of ``data``."""
    if not trained or not isinstance(data, dict):
        return []
    recorded = trained.get("class_path")
    if recorded is not None and not same_class(recorded, data.get("class_path")):
        return []
    kind = importable_class(data.get("class_path"))
    ran = {key: value for key, value in (trained.get("settings") or {}).items() if not str(key).startswith("_")}
    if recorded is None:
        if kind is None:
            return []
        ran = {key: value for key, value in ran.items() if key in split_settings(kind)}
    now = normal_settings(kind, data.get("init_args") or {})
    ran = normal_settings(kind, ran)
    return [
        (name, ran[name], now.get(name))
        for name in ran
        if name in now and comparable(ran[name]) != comparable(now.get(name))
    ]


def same_class(recorded: Any, given: Any) -> bool:
    """Whether two class paths name DataModules whose split settings compare: one class
    (``lebm.data.X`` and ``lebm.data.images.datamodule.X`` alike), or one a subclass of the other
    (a user's ``MyDigits(ImageDataModule)`` inherits its settings), either way round; by name where
    either does not import here."""
    if not isinstance(recorded, str) or not isinstance(given, str):
        return False
    first, second = importable_class(recorded), importable_class(given)
    if first is None or second is None:
        return recorded.rsplit(".", 1)[-1] == given.rsplit(".", 1)[-1]
    return issubclass(first, second) or issubclass(second, first)


def fingerprint_difference(trained: Fingerprint | None, now: Fingerprint | None) -> list[tuple[str, Any, Any]]:
    """:func:`differing_settings` between two fingerprints (a checkpoint's and a DataModule's)."""
    if not now:
        return []
    return differing_settings(trained, {"class_path": now.get("class_path"), "init_args": now.get("settings") or {}})


def describe_difference(differing: list[tuple[str, Any, Any]]) -> str:
    """``"anomaly_classes [4] in training, [1] here; seed 1 in training, 7 here"``."""
    return "; ".join(f"{name} {comparable(old)} in training, {comparable(new)} here" for name, old, new in differing)


def lightning_fingerprint(checkpoint: dict[str, Any]) -> Fingerprint | None:
    """A fingerprint read from what Lightning stores in every checkpoint of a fit with a DataModule
    (``datamodule_hyper_parameters``: its arguments, with ``_class_path`` when the lebm command
    built it), for a checkpoint whose lebm identity is missing or malformed; no ``content``. None
    when Lightning stored none."""
    stored = checkpoint.get("datamodule_hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict) or not stored:
        return None
    class_path = stored.get("_class_path")
    settings = {
        str(key): json.loads(comparable(value)) for key, value in stored.items() if not str(key).startswith("_")
    }
    return {"class_path": class_path if isinstance(class_path, str) else None, "settings": settings}
