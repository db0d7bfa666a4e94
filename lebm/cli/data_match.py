"""A run's checkpoint scored on the data it was trained on: ``lebm validate``, ``test`` and
``predict`` compare the data settings of the command with those of the run's own ``config.yaml``.

A recipe's defaults are not the run's: ``lebm test -c recipes/latent_ebm/mnist_anomaly.yaml
--ckpt_path RUN/checkpoints/last.ckpt`` on a run trained with ``--data.init_args.anomaly_classes
[4]`` would read the recipe's held-out digit 1. The settings that decide which examples each split
holds are declared by the DataModule class that owns them (its ``split_settings``); a difference
in one of them stops the command in one line naming both values, unless the command line gives
that setting itself (scoring on other data on purpose, which is said in one line).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from lebm.checkpoints import CheckpointError, read_checkpoint
from lebm.cli.errors import fail
from lebm.cli.run_folder import CHECKPOINT_DIR, is_primary_process, say
from lebm.config import import_object
from lebm.data.content import content_difference, data_content
from lebm.data.fingerprint import (
    Fingerprint,
    comparable,
    content_of,
    describe_difference,
    differing_settings,
    same_class,
)
from lebm.training.run_identity import TrainedData, trained_data_of_checkpoint

#: The run's record beside its ``checkpoints/`` folder.
RUN_CONFIG = "config.yaml"


def run_config_of(ckpt_path: str) -> str | None:
    """``<run>/config.yaml`` of a checkpoint in ``<run>/checkpoints/`` (None elsewhere or without one)."""
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    if os.path.basename(folder) != CHECKPOINT_DIR:
        return None
    path = os.path.join(os.path.dirname(folder), RUN_CONFIG)
    return path if os.path.isfile(path) else None


def split_settings_of(class_path: Any) -> tuple[str, ...]:
    """The ``split_settings`` the DataModule class at ``class_path`` declares (none when it declares
    none or cannot be imported)."""
    if not isinstance(class_path, str):
        return ()
    try:
        kind = import_object(class_path)
    except ValueError:  # not dotted, or not importable here
        return ()
    return tuple(getattr(kind, "split_settings", ()))


def trained_data_of(ckpt_path: str) -> TrainedData:
    """What the checkpoint says of its data (:func:`lebm.training.run_identity.trained_data_of_checkpoint`:
    its lebm identity's fingerprint, else one read from the DataModule arguments Lightning stored;
    nothing for a file the command's own load will name)."""
    try:
        checkpoint = read_checkpoint(ckpt_path)
    except CheckpointError:
        return TrainedData(None)
    return trained_data_of_checkpoint(checkpoint, ckpt_path)


def record_disagreement(ckpt_path: str, fingerprint: Fingerprint) -> str | None:
    """How the checkpoint's own data record (``fingerprint``, from its lebm identity) disagrees
    with the ``config.yaml`` of the run folder it lies in, in words (None: they agree, or no such
    record, or another DataModule class)."""
    record = run_config_of(ckpt_path)
    if record is None or fingerprint.get("class_path") is None:
        return None
    recorded = recorded_data(record, ckpt_path)
    if not isinstance(recorded, dict) or not same_class(fingerprint["class_path"], recorded.get("class_path")):
        return None
    differing = differing_settings(fingerprint, recorded)
    if not differing:
        return None
    listed = "; ".join(f"{key} {comparable(old)} against {comparable(new)}" for key, old, new in differing)
    return f"the data record {ckpt_path} carries disagrees with its run's {record} ({listed})"


def recorded_data(record: str, ckpt_path: str) -> Any:
    """The ``data`` section of the run record ``record`` (the ``config.yaml`` beside ``ckpt_path``'s
    ``checkpoints/`` folder); a record that is not valid YAML stops the command in one line."""
    try:
        with open(record) as handle:
            return (yaml.safe_load(handle) or {}).get("data") or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        fail(
            f"{record}, the record of the run that wrote {ckpt_path}, is not valid YAML{where}: restore it from the "
            "run's W&B files or a backup, or move it aside and give the data settings the run trained on"
        )


def recorded_differences(ckpt_path: str, data: dict[str, Any]) -> list[tuple[str, Any, Any]] | None:
    """The split settings in which ``data`` differs from the run's ``config.yaml`` beside the
    checkpoint (a checkpoint without a fingerprint); None without such a record."""
    record = run_config_of(ckpt_path)
    if record is None:
        return None
    trained = recorded_data(record, ckpt_path)
    if not isinstance(trained, dict) or trained.get("class_path") != data.get("class_path"):
        return []
    ran = {key: value for key, value in (trained.get("init_args") or {}).items()}
    settings = set(split_settings_of(data.get("class_path")))
    return differing_settings(
        {"class_path": trained["class_path"], "settings": {key: ran[key] for key in ran if key in settings}}, data
    )


def check_scored_data(
    subcommand: str,
    ckpt_path: Any,
    data: dict[str, Any],
    given: Callable[[str], bool],
    configs: Sequence[str] = (),
) -> bool:
    """Stop ``subcommand`` in one line when ``data`` (the command's ``data`` section) differs from
    the data the checkpoint was trained on in a split setting the command line does not give
    itself; ``given(key)`` says whether it gives ``--<key>``, ``configs`` are the ``-c`` files it
    reads. The checkpoint's own fingerprint decides, wherever the file lives (an older checkpoint's
    is read from Lightning's stored DataModule arguments, or its run's ``config.yaml``); a
    fingerprint that disagrees with the ``config.yaml`` of the run folder it lies in is refused as
    inconsistent. Returns whether the command reads other data on purpose (said in one line): a
    differing setting it gives, or ``--data.init_args.root`` (the content check of the model then
    says what differs instead of refusing)."""
    if not isinstance(ckpt_path, str) or not data or not os.path.isfile(ckpt_path):
        return False
    verb = "train on" if subcommand == "fit" else "score"
    trained = trained_data_of(ckpt_path)
    fingerprint = trained.fingerprint
    if fingerprint is not None:
        differing = differing_settings(fingerprint, data)
        disagreement = trained.inconsistent or record_disagreement(ckpt_path, fingerprint)
    else:
        differing = recorded_differences(ckpt_path, data) or []
        disagreement = None
    unasked = [item for item in differing if not given(f"data.init_args.{item[0]}")]
    if disagreement is not None and (unasked or not differing):
        fail(
            f"lebm {subcommand}: {disagreement}: the file was edited or comes from another run, so the data it was "
            f"trained on is unknown; give the settings to {verb} as --data.init_args.<setting> on purpose, or use the "
            "run's own checkpoint"
        )
    if unasked:
        flags = " ".join(f"--data.init_args.{key} {shlex.quote(comparable(old))}" for key, old, _ in unasked)
        record = run_config_of(ckpt_path)
        given_configs = {os.path.abspath(path) for path in configs}
        record_named = record is not None and os.path.abspath(record) not in given_configs
        own = f"{verb} the data it was trained on with {flags}" + (
            f" (or -c {shlex.quote(record)}, its run's record)" if record_named else ""
        )
        fail(
            f"lebm {subcommand}: {ckpt_path} was trained on other data than this command reads "
            f"({describe_difference(unasked)}): {own}, or give --data.init_args.<setting> to {verb} other data on "
            "purpose"
        )
    if differing and is_primary_process():
        listed = "; ".join(f"{key} {comparable(new)} (trained on {comparable(old)})" for key, old, new in differing)
        say(f"lebm {subcommand}: scoring {ckpt_path} on other data than it trained on, as the command gives: {listed}")
    return bool(differing) or given("data.init_args.root")


def check_scored_content(subcommand: str, ckpt_path: Any, datamodule: Any, on_purpose: bool) -> None:
    """Stop ``subcommand`` in one line, before the Trainer writes anything into the run folder, when
    the checkpoint's data record holds a content digest and ``datamodule`` (built, not yet set up)
    reads data of other content (:mod:`lebm.data.content`: a copy whose labels or files differ behind
    the same settings); ``on_purpose`` (the command gives ``--data.init_args.root``, or a differing
    setting): the method says what differs instead. The DataModule is set up here to read its
    content (its set-up is done once: Lightning's call then finds it done)."""
    if on_purpose or datamodule is None or not callable(getattr(datamodule, "content_sources", None)):
        return
    if not isinstance(ckpt_path, str) or not os.path.isfile(ckpt_path):
        return
    fingerprint = trained_data_of(ckpt_path).fingerprint
    trained = content_of(fingerprint)
    kind = type(datamodule)
    if trained is None or not same_class(fingerprint.get("class_path"), f"{kind.__module__}.{kind.__qualname__}"):
        return  # no digest kept, or another DataModule: nothing to compare (the method says the latter)
    datamodule.setup("fit" if subcommand == "fit" else subcommand)
    other = content_difference(trained, data_content(datamodule))
    if other:
        verb = "train on" if subcommand == "fit" else "score"
        fail(
            f"lebm {subcommand}: {ckpt_path} was trained on data of the same settings but other content than this "
            f"command reads ({other}): point data.init_args.root at the data it was trained on, or give "
            f"--data.init_args.root on the command line to {verb} this data on purpose"
        )
