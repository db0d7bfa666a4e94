"""Loggers in the run folder, and the whole run in every logger.

- **No ``save_dir`` needed.** Lightning's ``CSVLogger``, ``TensorBoardLogger`` and ``WandbLogger``
  (lebm's too, and subclasses of them) given without a ``save_dir`` write under the run folder
  (``trainer.default_root_dir``): ``<run>/<name>/version_<n>/`` for CSV and TensorBoard,
  ``<run>/wandb/`` for W&B. ``CSVLogger`` and ``TensorBoardLogger`` require the argument, so the
  parser would refuse them before lebm could fill it: :func:`mark_run_folder_save_dirs` marks it
  (``"."``, the run folder) while the command line is checked, and :func:`place_in_run_folder`
  replaces the mark by the run folder.
- **The whole resolved config in every logger**: :func:`log_run_config` gives each logger the run's
  config as saved in ``<run>/config.yaml`` (``trainer``, ``seed_everything``, ``model``, ``data``,
  the callbacks inside ``trainer``), nested as in the file, so runs that differ in a Trainer flag or
  a callback differ in the loggers too; a W&B run also gets the file itself, as ``lebm/config.yaml``
  among its files (W&B keeps its own ``config.yaml`` there).
- **The published values on the curves**: a recipe's ``paper_targets`` (``{val/fid: 29.44}``, or a
  value per held-out digit, ``{val/auprc: {held_out: {1: 0.336, 4: 0.63}}}``) resolved for the run
  by :func:`resolve_paper_targets` and given to its ``LearningCurves`` (:func:`fill_paper_targets`);
  the run's ``config.yaml`` keeps them as written (:func:`without_filled_paper_targets`).
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

#: Loggers (and their subclasses) that write into the run folder when given no ``save_dir``.
RUN_FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger", "WandbLogger")
#: What marks a ``save_dir`` to be filled with the run folder (also W&B's own default).
RUN_FOLDER_MARK = "."
#: The folder of a W&B run's files that holds lebm's files.
WANDB_FILES_FOLDER = "lebm"


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, (dict, Namespace)) else getattr(item, key, None)


def logger_configs(value: Any) -> list[Any]:
    """The ``class_path``/``init_args`` configs in a ``trainer.logger`` value (one, a list, or none)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item for item in items if isinstance(_get(item, "class_path"), str)]


def writes_into_run_folder(class_path: str) -> bool:
    """Whether the logger at ``class_path`` is (a subclass of) one of :data:`RUN_FOLDER_LOGGERS`; a
    short name (``CSVLogger``) counts by its name."""
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        return name in RUN_FOLDER_LOGGERS
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and any(klass.__name__ in RUN_FOLDER_LOGGERS for klass in cls.__mro__)


def _trainer_configs(namespace: Any) -> list[Any]:
    """The ``trainer`` branches of a parsed config: its own, or its subcommands'."""
    found = []
    if not isinstance(namespace, Namespace):
        return found
    for key in ("", "fit", "validate", "test", "predict"):
        branch = namespace if not key else namespace.get(key)
        trainer = branch.get("trainer") if isinstance(branch, Namespace) else None
        if isinstance(trainer, (Namespace, dict)):
            found.append(trainer)
    return found


def mark_run_folder_save_dirs(namespace: Any) -> None:
    """Give every run-folder logger of ``namespace`` without a ``save_dir`` the mark
    :data:`RUN_FOLDER_MARK`, in place (before the parser checks the required arguments)."""
    for trainer in _trainer_configs(namespace):
        for logger in logger_configs(_get(trainer, "logger")):
            if not writes_into_run_folder(_get(logger, "class_path")):
                continue
            init_args = _get(logger, "init_args")
            if init_args is None:
                init_args = Namespace() if isinstance(logger, Namespace) else {}
                logger["init_args"] = init_args
            if _get(init_args, "save_dir") is None:
                init_args["save_dir"] = RUN_FOLDER_MARK


def place_in_run_folder(logger: Any, run_dir: str) -> None:
    """Set a run-folder logger's ``save_dir`` to ``run_dir`` when it has none (or the mark)."""
    if not writes_into_run_folder(_get(logger, "class_path")):
        return
    init_args = _get(logger, "init_args")
    if init_args is not None and _get(init_args, "save_dir") in (None, RUN_FOLDER_MARK):
        init_args["save_dir"] = run_dir


def log_run_config(loggers: list[Any], config: Mapping[str, Any], config_path: str) -> None:
    """Give every logger the run's resolved ``config`` (nested, as in ``config_path``); attach
    ``config_path`` to each W&B run. On global rank 0 only (where the loggers write)."""
    for logger in loggers:
        logger.log_hyperparams(dict(config))
        if isinstance(logger, WandbLogger):
            attach_to_wandb_run(logger, config_path)


def attach_to_wandb_run(logger: WandbLogger, path: str) -> None:
    """Copy ``path`` among the W&B run's files, as ``lebm/<file name>``, and upload it now (offline:
    with the run, at ``wandb sync``). A failure is a warning: the run goes on."""
    try:
        run = logger.experiment
        folder = os.path.join(run.dir, WANDB_FILES_FOLDER)
        os.makedirs(folder, exist_ok=True)
        copy = os.path.join(folder, os.path.basename(path))
        shutil.copyfile(path, copy)
        run.save(copy, base_path=run.dir, policy="now")
    except Exception as error:  # W&B's own errors vary by version; attaching must not stop training
        rank_zero_warn(f"could not attach {path} to the W&B run: {error}")


#: The class path of lebm's table of logged numbers (:class:`lebm.loggers.MetricsTable`).
METRICS_TABLE = "lebm.loggers.MetricsTable"


def with_metrics_table(value: Any, run_dir: str) -> Any:
    """``trainer.logger``'s ``value`` with a :class:`~lebm.loggers.MetricsTable` writing into
    ``run_dir`` among its loggers: added when missing; one already there (a run's own
    ``config.yaml`` lists it) is pointed at ``run_dir``, the run folder being the table's place.
    ``False`` (no logger) and Lightning's default logger (``True``/``None``: TensorBoard, or CSV
    without it, in ``lightning_logs/``) stay as given."""
    if value is None or isinstance(value, bool):
        return value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    tables = [item for item in logger_configs(items) if _is_table(item)]
    if not tables:
        tables = [Namespace(class_path=METRICS_TABLE, init_args=Namespace())]
        items.append(tables[0])
    for table in tables:
        if _get(table, "init_args") is None:
            table["init_args"] = Namespace()
        table["init_args"]["save_dir"] = run_dir
    return items


def without_metrics_table(value: Any) -> Any:
    """``trainer.logger``'s ``value`` without the run's :class:`~lebm.loggers.MetricsTable`: a
    ``validate``, ``test`` or ``predict`` command from a run's ``config.yaml`` leaves the fit's table
    alone (``False`` when nothing is left)."""
    if value is None or isinstance(value, bool):
        return value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    kept = [item for item in items if not (isinstance(_get(item, "class_path"), str) and _is_table(item))]
    return kept if kept else False


def _is_table(item: Any) -> bool:
    return _get(item, "class_path").rsplit(".", 1)[-1] == "MetricsTable"


#: The key of a paper target given per held-out digit: ``{val/auprc: {held_out: {1: 0.336, 4: 0.63}}}``.
HELD_OUT = "held_out"
#: The key of a paper target's legend label, beside ``held_out`` or ``value``:
#: ``{val/auprc: {held_out: {1: 0.684}, label: "paper, best of its test readings"}}``.
LABEL = "label"
#: How a paper target is written, for the messages that refuse one.
TARGET_FORMS = (
    "a number (val/fid: 29.44) or a value per held-out digit (val/auprc: {held_out: {1: 0.336, 4: 0.63}}), "
    "either as a mapping with a legend label ({value: 57.72, label: 'paper, unverified'})"
)


def resolve_paper_targets(targets: Mapping[str, Any] | None, anomaly_classes: Any = None) -> dict[str, float]:
    """The run's ``paper_targets`` as ``{logged name: value}``, the form ``LearningCurves`` draws.

    A target is a number, or a value per held-out digit (``{held_out: {digit: value}}``), which is
    looked up by the run's ``anomaly_classes`` (``data.init_args.anomaly_classes``, e.g. ``[1]``):
    a digit the mapping has no value for, or several held-out digits, give no target (no line).

    Raises:
        ValueError: a target of another form, in one line naming the target and the forms.
    """
    resolved: dict[str, float] = {}
    for name, value in dict(targets or {}).items():
        if not isinstance(name, str):
            raise ValueError(f"paper_targets must map logged names to published values, got the key {name!r}")
        if isinstance(value, Mapping):
            value = labelled_value(name, value, anomaly_classes)
            if value is None:
                continue
        resolved[name] = published_number(f"paper_targets {name}", value)
    return resolved


def labelled_value(name: str, value: Mapping[Any, Any], anomaly_classes: Any) -> Any:
    """The number of a target written as a mapping: ``{value: x}`` or ``{held_out: {...}}`` (looked up
    by :func:`held_out_value`), each with an optional ``label`` string; another mapping is a one-line
    ``ValueError``."""
    label = value.get(LABEL)
    if label is not None and not isinstance(label, str):
        raise ValueError(f"paper_targets {name} label must be a string (the legend's name for the line), got {label!r}")
    rest = {key: item for key, item in value.items() if key != LABEL}
    if set(rest) == {"value"}:
        return rest["value"]
    return held_out_value(name, rest, anomaly_classes)


def paper_target_labels(targets: Mapping[str, Any] | None) -> dict[str, str]:
    """``{logged name: legend label}`` of the targets that give one (``label``)."""
    return {
        name: value[LABEL]
        for name, value in dict(targets or {}).items()
        if isinstance(value, Mapping) and isinstance(value.get(LABEL), str)
    }


def held_out_value(name: str, value: Mapping[Any, Any], anomaly_classes: Any) -> float | None:
    """The value of ``{held_out: {digit: value}}`` for the run's one held-out digit (None: no value
    for it, or several digits held out); a malformed mapping is a one-line ``ValueError``."""
    per_digit = value.get(HELD_OUT) if set(value) == {HELD_OUT} else None
    if not isinstance(per_digit, Mapping) or not per_digit:
        raise ValueError(f"paper_targets {name} must be {TARGET_FORMS}, got {dict(value)!r}")
    digits = {held_out_digit(name, digit): number for digit, number in per_digit.items()}
    for digit, number in digits.items():
        published_number(f"paper_targets {name} {HELD_OUT} {digit}", number)
    if anomaly_classes is None:
        raise ValueError(
            f"paper_targets {name} is given per held-out digit, but the run's data has no anomaly_classes: give it "
            f"as a number ({name}: {next(iter(digits.values()))}) or use an anomaly data module "
            "(lebm.data.MNISTAnomalyDataModule)"
        )
    classes = [anomaly_classes] if isinstance(anomaly_classes, int) else list(anomaly_classes)
    return digits.get(int(classes[0])) if len(classes) == 1 else None


def held_out_digit(name: str, digit: Any) -> int:
    """A ``held_out`` key as an int (``1`` or ``"1"``); another key is a one-line ``ValueError``."""
    if isinstance(digit, int) and not isinstance(digit, bool):
        return digit
    if isinstance(digit, str) and digit.strip().isdigit():
        return int(digit)
    raise ValueError(
        f"paper_targets {name} {HELD_OUT} must map held-out digits (data.init_args.anomaly_classes) to values, "
        f"as {{1: 0.336, 4: 0.63}}, got the key {digit!r}"
    )


def published_number(label: str, value: Any) -> float:
    """``value`` as a float: a finite number; anything else is a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{label} must be {TARGET_FORMS}, with finite numbers, got {value!r}")
    return float(value)


def unpublished_note(
    targets: Mapping[str, Any] | None, resolved: Mapping[str, float], anomaly_classes: Any
) -> str | None:
    """One line naming the per-digit targets with no value for the run's held-out digits (no line is
    drawn for them), or None."""
    missing = sorted(name for name in dict(targets or {}) if name not in resolved)
    if not missing or targets is None:
        return None
    per_digit = [targets[name][HELD_OUT] for name in missing if isinstance(targets[name], Mapping)]
    published = sorted({int(digit) for values in per_digit for digit in values})
    classes = [anomaly_classes] if isinstance(anomaly_classes, int) else list(anomaly_classes or [])
    return (
        f"paper_targets: no published {', '.join(missing)} for held-out {classes} (published for held-out "
        f"{', '.join(map(str, published))}), so curves.png draws no paper line for it"
    )


def run_anomaly_classes(config: Any) -> Any:
    """The run's held-out classes, ``data.init_args.anomaly_classes`` of a parsed config or of its
    plain data (None: the data has none)."""
    return _get(_get(_get(config, "data"), "init_args"), "anomaly_classes")


def without_filled_paper_targets(recorded: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` (a run's config as plain data) with the targets that lebm gives a ``LearningCurves``
    without any (the resolved ``paper_targets``) written back as given, ``null``: a run started from
    this record with another held-out digit or other ``paper_targets`` draws its own lines."""
    try:
        resolved = resolve_paper_targets(recorded.get("paper_targets"), run_anomaly_classes(recorded))
    except ValueError:
        return recorded
    trainer = recorded.get("trainer") if isinstance(recorded.get("trainer"), dict) else {}
    callbacks = trainer.get("callbacks")
    for callback in callbacks if isinstance(callbacks, list) else []:
        class_path = _get(callback, "class_path")
        init_args = _get(callback, "init_args")
        if not isinstance(class_path, str) or class_path.rsplit(".", 1)[-1] != "LearningCurves":
            continue
        if isinstance(init_args, dict) and resolved and init_args.get("targets") == resolved:
            init_args["targets"] = None
            labels = paper_target_labels(recorded.get("paper_targets"))
            if labels and init_args.get("target_labels") == labels:
                init_args["target_labels"] = None
    return recorded


def fill_paper_targets(
    callbacks: list[Any], targets: Mapping[str, float] | None, labels: Mapping[str, str] | None = None
) -> None:
    """Give the run's ``paper_targets`` (resolved: :func:`resolve_paper_targets`) and their legend
    ``labels`` to each ``LearningCurves`` callback config that names no targets."""
    if not targets:
        return
    for callback in callbacks:
        class_path = _get(callback, "class_path")
        if not isinstance(class_path, str) or class_path.rsplit(".", 1)[-1] != "LearningCurves":
            continue
        init_args = _get(callback, "init_args")
        if init_args is None:
            init_args = callback["init_args"] = Namespace()
        if _get(init_args, "targets") is None:
            init_args["targets"] = dict(targets)
            if labels and _get(init_args, "target_labels") is None:
                init_args["target_labels"] = {name: label for name, label in labels.items() if name in targets}


def finish_wandb_run(failed: bool) -> None:
    """End the W&B run a command started, if one is active: Lightning leaves it open until the
    process exits, so a second command in the same process (a notebook, a test) would log into the
    first one's run (W&B returns the active run) and leave its own run folder empty."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
