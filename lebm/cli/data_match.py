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
from collections.abc import Callable
from typing import Any

import yaml

from lebm.checkpoints import RUN_KEY, CheckpointError, read_checkpoint
from lebm.cli.errors import fail
from lebm.cli.run_folder import CHECKPOINT_DIR, is_primary_process, say
from lebm.config import import_object
from lebm.data.fingerprint import Fingerprint, comparable, describe_difference, differing_settings

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


def trained_data_of(ckpt_path: str) -> Fingerprint | None:
    """The data fingerprint the checkpoint carries (:mod:`lebm.training.run_identity`; None: a
    checkpoint written before lebm kept one, or a file the command's own load will name)."""
    try:
        record = read_checkpoint(ckpt_path).get(RUN_KEY)
    except CheckpointError:
        return None
    data = record.get("data") if isinstance(record, dict) else None
    return data if isinstance(data, dict) else None


def recorded_differences(ckpt_path: str, data: dict[str, Any]) -> list[tuple[str, Any, Any]] | None:
    """The split settings in which ``data`` differs from the run's ``config.yaml`` beside the
    checkpoint (a checkpoint without a fingerprint); None without such a record."""
    record = run_config_of(ckpt_path)
    if record is None:
        return None
    try:
        with open(record) as handle:
            trained = (yaml.safe_load(handle) or {}).get("data") or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        fail(
            f"{record}, the record of the run that wrote {ckpt_path}, is not valid YAML{where}: restore it from the "
            "run's W&B files or a backup, or move it aside and give the data settings the run trained on"
        )
    if not isinstance(trained, dict) or trained.get("class_path") != data.get("class_path"):
        return []
    ran, now = trained.get("init_args") or {}, data.get("init_args") or {}
    return [
        (key, ran[key], now.get(key))
        for key in split_settings_of(data.get("class_path"))
        if key in ran and comparable(ran[key]) != comparable(now.get(key))
    ]


def check_scored_data(subcommand: str, ckpt_path: Any, data: dict[str, Any], given: Callable[[str], bool]) -> bool:
    """Stop ``subcommand`` in one line when ``data`` (the command's ``data`` section) differs from
    the data the checkpoint was trained on in a split setting the command line does not give
    itself; ``given(key)`` says whether it gives ``--<key>``. The checkpoint's own fingerprint
    decides, wherever the file lives; an older checkpoint is compared with its run's
    ``config.yaml``. Returns whether the command scores other data on purpose (said in one line)."""
    if not isinstance(ckpt_path, str) or not data or not os.path.isfile(ckpt_path):
        return False
    fingerprint = trained_data_of(ckpt_path)
    if fingerprint is not None:
        differing = differing_settings(fingerprint, data)
    else:
        differing = recorded_differences(ckpt_path, data) or []
    unasked = [item for item in differing if not given(f"data.init_args.{item[0]}")]
    if unasked:
        verb = "train on" if subcommand == "fit" else "score"
        record = run_config_of(ckpt_path)
        own = (
            f"{verb} the run's own data with -c {shlex.quote(record)}"
            if record is not None
            else f"{verb} the data it was trained on (give "
            + " ".join(f"--data.init_args.{key} {shlex.quote(comparable(old))}" for key, old, _ in unasked)
            + ")"
        )
        fail(
            f"lebm {subcommand}: {ckpt_path} was trained on other data than this command reads "
            f"({describe_difference(unasked)}): {own}, or give --data.init_args.<setting> to {verb} other data on "
            "purpose"
        )
    if differing and is_primary_process():
        listed = "; ".join(f"{key} {comparable(new)} (trained on {comparable(old)})" for key, old, new in differing)
        say(f"lebm {subcommand}: scoring {ckpt_path} on other data than it trained on, as the command gives: {listed}")
    return bool(differing)
