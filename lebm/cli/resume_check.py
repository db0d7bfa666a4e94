"""Resuming (or evaluating) a checkpoint with a recipe, checked before anything is written.

The recipe builds the model; the checkpoint gives its weights, optimiser and random states. What
the two may disagree on:

- **the training left** (``fit``): a ``max_epochs`` or ``max_steps`` the checkpoint has reached
  exactly is said in one line naming the value that trains on, and the command ends with code 0
  before it fits (no model summary, sanity check, ``config.yaml`` or logger run: a requeued job or a
  rerun on a finished run is not an error); one below what the checkpoint holds is refused in that
  line (code 2; Lightning would fail with a long traceback after rewriting ``config.yaml``);
- **the method** (``LatentEBM`` against a ``MultiStageNCE`` checkpoint): refused; a method class
  this lebm does not have is named with the lebm that wrote the checkpoint and what to install;
- **a checkpoint of a newer lebm**: named in one line (it may hold what this version reads
  differently), then used;
- **the architecture** (a parameter or buffer of another shape, or one only one side has):
  refused, naming the differing keys;
- **settings that may change on resume** (learning rates, Adam's betas and weight decay, gradient
  clipping, learning-rate decay, chain steps, step sizes and noise, divergence limits): applied and
  listed in one line (the optimisers' learning rates are rescaled in the restored state,
  :func:`lebm.training.resume.apply_optimizer_settings`);
- **any other setting** (a likelihood's sigma, an activation, a prior's reference): refused, by name,
  when resuming ``fit``; ``test``/``validate`` evaluate the recipe's settings (an anomaly score,
  evaluation chains) with the checkpoint's weights, and list what differs.

Each refusal names the two ways out: run with the checkpoint's own settings (its run folder's
``config.yaml``), or start a new run. LightningCLI's own behaviour, overriding the recipe with the
checkpoint's hyperparameters in silence, is turned off (:class:`lebm.cli.app.LebmCLI`).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Any

from lebm.checkpoints import (
    CheckpointError,
    architecture_differences,
    is_newer,
    missing_class_message,
    newer_writer_message,
    read_checkpoint,
    writer_version,
)
from lebm.cli.errors import fail
from lebm.cli.run_folder import is_primary_process
from lebm.config import MissingClass, import_object, to_config
from lebm.training.resume import asks_fewer, nothing_left_message

#: The last key of a setting that may change when a run resumes.
CHANGEABLE = re.compile(
    r"(^|_)(lr|betas|weight_decay|grad_clip|lr_decay|n_steps|step_size|noise_std|temperature_schedule)$"
    r"|^divergence_"
)
#: Settings that a checkpoint migration rewrites when it loads (lebm.training.migrations): never compared.
MIGRATED = ("align_corners",)
#: How many differing keys a message lists.
SHOWN = 6


def plain(value: Any) -> Any:
    """``value`` with tuples as lists, so that ``(0.5, 0.9)`` and ``[0.5, 0.9]`` compare equal."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"decoder.init_args.sigma": 0.3, ...}``: the leaves of nested dicts (lists are leaves)."""
    if not isinstance(config, dict):
        return {prefix: plain(config)}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def shown(key: str) -> str:
    """A hyperparameter's key as the recipe writes it: ``model.init_args.<key>``."""
    return f"model.init_args.{key}"


def sentence(text: str) -> str:
    """``text`` with its first letter upper-cased and the rest as written (``str.capitalize`` would
    lower-case the rest: the paths and commands in it)."""
    return text[:1].upper() + text[1:]


def ways_out(ckpt_path: str, subcommand: str) -> str:
    """The two ways out of a refused resume or evaluation, as a clause: the command that runs the
    checkpoint with its own settings (its run folder's ``config.yaml``; paths as given, quoted for
    the shell where needed), or a new run (``fit``) or another checkpoint (evaluation)."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
    saved = os.path.join(run_dir, "config.yaml")
    command = f"lebm {subcommand} -c {shlex.quote(saved)} --ckpt_path {shlex.quote(ckpt_path)}"
    with_saved = command if os.path.isfile(saved) else None
    first = f"run with the checkpoint's own settings ({with_saved})" if with_saved else "use the recipe that wrote it"
    if subcommand == "fit":
        return (
            f"{first}, or start a new run (another --trainer.default_root_dir, or --overwrite true without --ckpt_path)"
        )
    return f"{first}, or evaluate another checkpoint"


def check_resume(
    model: Any, ckpt_path: str, subcommand: str, weights_only: bool = True, trainer: Any | None = None
) -> list[str]:
    """Check ``model`` (built from the recipe) against the checkpoint; refuse with a message that
    names the difference and the ways out; return the changed settings that apply, as ``key old ->
    new`` (empty when none). ``weights_only=False`` (the command's ``--weights_only false``) reads a
    checkpoint that holds objects other than tensors and plain data. ``trainer`` (``fit``, not a
    ``fast_dev_run`` smoke test): when its ``max_epochs`` or ``max_steps`` leave nothing to train,
    one line says so (:func:`lebm.training.resume.nothing_left_message`) and the model is marked
    (``said_nothing_left``: the command then ends at 0 before fitting); below what the checkpoint
    holds, the line is a refusal (exit 2)."""
    try:
        checkpoint = read_checkpoint(ckpt_path, weights_only=weights_only)
    except CheckpointError as error:
        fail(str(error))
    if subcommand == "fit" and trainer is not None and not getattr(trainer, "fast_dev_run", False):
        max_epochs, max_steps = getattr(trainer, "max_epochs", None), getattr(trainer, "max_steps", -1)
        nothing_left = nothing_left_message(checkpoint, ckpt_path, max_epochs, max_steps)
        if nothing_left is not None and asks_fewer(checkpoint, max_epochs, max_steps):
            fail(nothing_left)  # less training than the run holds: refused before anything is written
        if nothing_left is not None:  # said, not refused: a requeued or repeated command on a finished run ends at 0
            model.said_nothing_left = True
            if is_primary_process():
                sys.stderr.write(f"lebm: {nothing_left}\n")
    version = writer_version(checkpoint)
    if is_newer(version):  # one line here; the model's own warning when Lightning loads it is not repeated
        model.said_checkpoint_writer = True
        if is_primary_process():
            sys.stderr.write(f"lebm: {newer_writer_message(ckpt_path, str(version))}\n")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    stored_class = hparams.pop("_class_path", None)
    if isinstance(stored_class, str):
        try:
            cls = import_object(stored_class)
        except MissingClass as error:
            fail(missing_class_message(ckpt_path, error.named, writer_version(checkpoint)))
        except ValueError:
            cls = None
        if cls is not None and cls is not type(model):
            fail(
                f"{ckpt_path} was written by {cls.__name__}, but the recipe builds {type(model).__name__}: "
                f"{ways_out(ckpt_path, subcommand)}"
            )
    differing = [
        key
        for key in architecture_differences(checkpoint["state_dict"], model.state_dict())
        if not key.endswith("(only in the recipe's model)")  # a part added since (migrations fill it in)
    ]
    if differing:
        more = f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else ""
        fail(
            f"the recipe's {type(model).__name__} has another architecture than {ckpt_path}: "
            f"{'; '.join(differing[:SHOWN])}{more}. {sentence(ways_out(ckpt_path, subcommand))}"
        )
    old, new = flatten(to_config(hparams)), flatten(dict(getattr(model, "hparams", {}) or {}))
    changed = [key for key in old if key in new and old[key] != new[key] and key.rsplit(".", 1)[-1] not in MIGRATED]
    evaluating = subcommand != "fit"  # evaluation settings (anomaly score, chains, batch norm) may differ
    fixed = [] if evaluating else [key for key in changed if not any(map(CHANGEABLE.search, key.split(".")))]
    if fixed:
        listed = "; ".join(f"{shown(key)}: {old[key]!r} in the checkpoint, {new[key]!r} in the recipe" for key in fixed)
        out = sentence(ways_out(ckpt_path, subcommand))
        fail(f"these settings cannot change when resuming {ckpt_path}: {listed}. {out}")
    return [f"{shown(key)} {old[key]!r} -> {new[key]!r}" for key in changed]
