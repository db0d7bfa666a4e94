"""Checkpoints of earlier lebm versions, brought to the current one when they load.

Two kinds of change need a migration:

- **moved classes**: a checkpoint's hyperparameters name its parts by class path; a path that an
  earlier version wrote is read as the current one through :data:`MOVED_CLASS_PATHS` (by
  :func:`lebm.config.import_object` and :func:`lebm.config.to_config`, when a method is built from
  the checkpoint), and the checkpoint saved again records the current paths. Only checkpoints:
  recipes and imports name the current paths;
- **changed behaviour** of a part: the functions below, each called from the method's
  ``on_load_checkpoint`` with the model and the checkpoint, each a no-op on a current checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from lebm.config import RENAMED_CLASS_PATHS
from lebm.nets.resnets import SNGANGenerator

#: Class paths of components (what a checkpoint's hyperparameters name) that moved: old module ->
#: new module (every path below it follows: ``lebm.models.nets.encoders.ConvEncoder`` ->
#: ``lebm.nets.encoders.ConvEncoder``), and old ``module.Name`` -> new, for a class that left a
#: module that still exists. Add a row whenever a component class or its module moves.
MOVED_CLASS_PATHS: dict[str, str] = {
    # lebm 0.1.0 -> 0.2 (the layout of issue 33)
    "lebm.models.nets": "lebm.nets",
    "lebm.models.latents": "lebm.nets.latents",
    "lebm.models.priors.ProductOfRatiosPrior": "lebm.models.ProductOfRatiosPrior",
    # the layout of issue 99: the base's machinery and the recording out of lebm/models/
    **{
        f"lebm.models.{name}": f"lebm.training.{name}"
        for name in (
            "cadence",
            "choices",
            "double_precision",
            "final_validation",
            "guard",
            "hooks",
            "inputs",
            "migrations",
            "monitoring",
            "optimizers",
            "prediction",
            "recovery",
            "resume",
            "run_identity",
            "settings",
            "stepping",
            "training_end",
        )
    },
    **{
        f"lebm.models.{name}": f"lebm.recording.{name}"
        for name in (
            "device_adam",
            "host_reads",
            "iteration_key",
            "recorded_iteration",
        )
    },
    "lebm.samplers.capture": "lebm.recording",
    "lebm.speed.chain_capture": "lebm.recording.run_switches",
    "lebm.speed.recorded_iterations": "lebm.recording.run_switches",
    "lebm.speed.run_switch": "lebm.recording.run_switches",
}
RENAMED_CLASS_PATHS.update(MOVED_CLASS_PATHS)  # where lebm.config reads them (it cannot import this layer)


def generator_configs(config: Any, keep: Any) -> list[dict[str, Any]]:
    """The ``init_args`` of every ``SNGANGenerator`` config nested in ``config`` that ``keep`` accepts."""
    found: list[dict[str, Any]] = []
    if isinstance(config, Mapping):
        args = config.get("init_args")
        if str(config.get("class_path", "")).endswith("SNGANGenerator") and isinstance(args, dict) and keep(args):
            found.append(args)
        for value in config.values():
            found += generator_configs(value, keep)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found += generator_configs(value, keep)
    return found


def upsampling_of_earlier_checkpoints(model: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """DualMCMC checkpoints written before ``SNGANGenerator`` had ``align_corners`` (lebm then
    up-sampled with ``align_corners=False``): the generator is switched to ``False``, as it was
    trained, and the hyperparameters record it for the next checkpoint."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("decoder")
    if not generator_configs(saved, lambda args: "align_corners" not in args):
        return
    switched = [m for m in model.decoder.modules() if isinstance(m, SNGANGenerator) and m.align_corners]
    for module in switched:
        module.set_align_corners(False)
    for args in generator_configs(model.hparams.get("decoder"), lambda args: True):
        args["align_corners"] = False  # what the next checkpoint records
    if switched:
        rank_zero_warn(
            "DualMCMC: this checkpoint predates SNGANGenerator's align_corners option (lebm then up-sampled "
            "with align_corners=False): its generator runs with align_corners=False, as it was trained"
        )


def encoder_optimizer_of_earlier_checkpoints(model: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Resuming a checkpoint saved without some encoder parameters (the head biases): the
    encoder's Adam state gets empty slots for them (Adam starts them at its first step)."""
    state_dict, optimizers = checkpoint.get("state_dict"), checkpoint.get("optimizer_states")
    if not state_dict or not optimizers or len(optimizers) != 3:
        return
    names = [f"encoder.{name}" for name, _ in model.encoder.named_parameters()]
    present = [name in state_dict for name in names]
    groups = optimizers[1].get("param_groups", [])
    if all(present) or len(groups) != 1 or len(groups[0]["params"]) != sum(present):
        return
    old_ids = iter(groups[0]["params"])
    fresh = max(groups[0]["params"], default=-1) + 1
    params = []
    for was_saved in present:
        if was_saved:
            params.append(next(old_ids))
        else:
            params.append(fresh)
            fresh += 1
    groups[0]["params"] = params
