"""The ``lebm`` command: ``lebm fit|validate|test|predict -c recipe.yaml [--key value ...]``.

A LightningCLI in OmegaConf mode (``omegaconf+``: ``${...}`` interpolations are resolved after all
config files and command-line overrides are merged) with the toolkit's defaults:

- a recipe's ``include`` list loads its fragments first (``lebm.recipes``), so
  ``lebm fit -c recipes/<method>/<dataset>.yaml`` runs a recipe composed from shared parts;

- ``trainer.inference_mode`` is off (validation runs Langevin chains, which need gradients);
- the run folder is ``trainer.default_root_dir``: the W&B logger's ``save_dir``, checkpoint
  callbacks without a ``dirpath`` (``<run>/checkpoints``), PNG grids (``<run>/images``) and the
  resolved config (``<run>/config.yaml``) all go there;
- ``--ckpt_path last`` resumes from ``<run>/checkpoints/last.ckpt`` and continues the same W&B run;
- a component that rejects its arguments (a missing data folder, say) stops the command with
  its message before any training starts;
- ``--trainer.devices N`` (or several nodes) runs DDP with ``lebm_ddp`` (``lebm.distributed``)
  without naming a strategy; ``ddp``/``ddp_spawn`` are mapped to lebm's;
- components built from a config (the user's own modules included) are recorded in the
  checkpoint from that config, so ``lebm test --ckpt_path`` and ``load_from_checkpoint`` rebuild them;
- a diverged run stops with the guard's message (exit code 1), not a traceback.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import yaml
from jsonargparse import set_parsing_settings
from lightning.pytorch import LightningDataModule
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.cli import LightningCLI

from lebm.config import given_configs
from lebm.models.base import Method
from lebm.models.guard import TrainingDiverged
from lebm.recipes import RecipeError, expand_includes

#: Lightning's DDP strategy names and the lebm strategies that replace them.
DDP_NAMES = {
    "ddp": "lebm_ddp",
    "ddp_find_unused_parameters_true": "lebm_ddp",
    "ddp_find_unused_parameters_false": "lebm_ddp",
    "ddp_spawn": "lebm_ddp_spawn",
    "ddp_spawn_find_unused_parameters_true": "lebm_ddp_spawn",
    "ddp_spawn_find_unused_parameters_false": "lebm_ddp_spawn",
}

WANDB_RUN_ID_FILE = "wandb_run_id.txt"


class LebmCLI(LightningCLI):
    """LightningCLI wired to the run-folder conventions described in this module."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", {"inference_mode": False})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+"})
        # interpolations name keys from the config's top (`${model.init_args...}`), not from the subcommand
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        super().__init__(
            Method,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            **kwargs,
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = config.trainer.default_root_dir or os.getcwd()
        config.trainer.default_root_dir = run_dir
        resuming = bool(config.get("ckpt_path")) and self.subcommand == "fit"
        for logger in _as_list(config.trainer.get("logger")):
            if not _is_config_of(logger, "WandbLogger"):
                continue
            init_args = logger.init_args
            if init_args.get("save_dir") in (None, "."):
                init_args.save_dir = run_dir
            if self.subcommand == "fit" and init_args.get("id") is None:
                init_args.id = _wandb_run_id(run_dir, resuming)
                init_args.resume = "allow"
                self._wandb_run = (run_dir, init_args.id)
        for callback in _as_list(config.trainer.get("callbacks")):
            if _is_config_of(callback, "ModelCheckpoint") and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = os.path.join(run_dir, "checkpoints")
        config.trainer.strategy = _method_strategy(config.trainer)

    def instantiate_classes(self) -> None:
        try:
            with given_configs(self._model_argument_configs()):
                super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, KeyError) as error:
            self.parser.error(f"could not build the run: {type(error).__name__}: {error}")

    def _model_argument_configs(self) -> dict[str, Any]:
        """The model's ``init_args`` as plain data (``{argument: config}``), as parsed."""
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))
        if self.subcommand:
            dumped = dumped.get(self.subcommand, {})
        model = dumped.get("model") or {}
        return dict(model.get("init_args") or {}) if isinstance(model, dict) else {}

    def after_instantiate_classes(self) -> None:
        run = getattr(self, "_wandb_run", None)
        if run is not None and self.trainer.is_global_zero:
            run_dir, run_id = run
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, WANDB_RUN_ID_FILE), "w") as handle:
                handle.write(run_id)


def _wandb_run_id(run_dir: str, resuming: bool) -> str:
    """The W&B run id: the one stored in the run folder when resuming, else a fresh one."""
    path = os.path.join(run_dir, WANDB_RUN_ID_FILE)
    if resuming and os.path.exists(path):
        with open(path) as handle:
            return handle.read().strip()
    return uuid.uuid4().hex[:12]


def requested_processes(accelerator: Any, devices: Any, num_nodes: Any) -> int:
    """How many processes a Trainer with these arguments starts (without starting one)."""
    nodes = int(num_nodes or 1)
    accelerator = str(accelerator or "auto")
    use_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and CUDAAccelerator.is_available())
    if devices in (None, "auto"):
        count = CUDAAccelerator.auto_device_count() if use_cuda else 1
    else:
        parsed = CUDAAccelerator.parse_devices(devices) if use_cuda else CPUAccelerator.parse_devices(devices)
        count = len(parsed) if isinstance(parsed, (list, tuple)) else int(parsed or 1)
    return count * nodes


def _method_strategy(trainer: Any) -> Any:
    """The strategy for the run: lebm's DDP where Lightning would pick (or was told) plain DDP."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str) and strategy in DDP_NAMES:
        return DDP_NAMES[strategy]
    if strategy in (None, "auto"):
        try:
            processes = requested_processes(
                trainer.get("accelerator"), trainer.get("devices"), trainer.get("num_nodes")
            )
        except Exception:  # an invalid devices value: let the Trainer report it
            return strategy
        if processes > 1:
            return "lebm_ddp"
    return strategy


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_config_of(item: Any, class_name: str) -> bool:
    class_path = getattr(item, "class_path", None) if not isinstance(item, dict) else item.get("class_path")
    return isinstance(class_path, str) and class_path.rsplit(".", 1)[-1] == class_name


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lebm`` console script."""
    try:
        if args is None:  # the console script: expand sys.argv itself, as LightningCLI reads it
            sys.argv = [sys.argv[0], *expand_includes(sys.argv[1:])]
            LebmCLI()
        else:
            LebmCLI(args=expand_includes(args))
    except RecipeError as error:
        sys.stderr.write(f"lebm: error: {error}\n")
        raise SystemExit(2) from None
    except TrainingDiverged as error:
        sys.stderr.write(f"lebm: {error}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
