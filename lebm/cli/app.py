"""The ``lebm`` command's LightningCLI (imported by :func:`lebm.cli.main.main` once the cheap checks pass).

A LightningCLI in OmegaConf mode (``omegaconf+``: ``${...}`` interpolations are resolved after all
config files and command-line overrides are merged) with the toolkit's defaults:

- a recipe's ``include`` list loads its fragments first (``lebm.cli.recipes``), so
  ``lebm fit -c recipes/<method>/<dataset>.yaml`` runs a recipe composed from shared parts;

- ``trainer.inference_mode`` is off (validation runs Langevin chains, which need gradients);
- the run folder is ``trainer.default_root_dir``: the loggers' ``save_dir`` (W&B, CSV, TensorBoard:
  ``lebm.cli.loggers``), checkpoint callbacks without a ``dirpath`` (``<run>/checkpoints``; a second
  one gets its own file names), PNG grids (``<run>/images``) and the resolved config
  (``<run>/config.yaml``, whichever logger; every logger gets it too) all go there;
- Trainer flags that lebm changes say so in one line, and ``fast_dev_run`` writes nothing into the
  run folder (``lebm.cli.trainer_flags``); a callback that monitors a name the run does not log is
  refused when the run is built (``lebm.training.monitoring``);
- ``--ckpt_path last`` resumes from ``<run>/checkpoints/last.ckpt`` and continues the same W&B run;
- ``lebm predict`` writes its predictions into ``<run>/predictions/`` (a ``PredictionWriter`` unless one
  is given; ``docs/predict.md``);
- a component that rejects its arguments (a missing data folder, say) stops the command with
  its message before any training starts;
- ``--trainer.devices N`` (or several nodes) runs DDP with ``lebm_ddp`` (``lebm.distributed``)
  without naming a strategy; ``ddp``/``ddp_spawn`` are mapped to lebm's;
- components built from a config (the user's own modules included) are recorded in the
  checkpoint from that config, so ``lebm test --ckpt_path`` and ``load_from_checkpoint`` rebuild them;
- a diverged run stops with the guard's message (exit code 1), not a traceback;
- a recipe's ``paper_targets`` reach its ``LearningCurves``, a value per held-out digit
  (``{val/auprc: {held_out: {1: 0.336}}}``) looked up by ``data.init_args.anomaly_classes``
  (``lebm.cli.loggers.resolve_paper_targets``);
- checkpoints are written whole beside their names (``lebm.checkpoint_io``), and one that cannot be
  written (a full disk) stops the run with one line: the folder, the space needed, how to resume;
- no run is lost, and no run folder locks itself (``lebm.cli.run_folder``): ``fit`` refuses a
  folder that holds a started run (a checkpoint) unless told to resume (``--ckpt_path last``, or
  ``auto``: resume from the intact checkpoint holding the most training, if there is one) or to ``--overwrite``; the
  files of a start that wrote no checkpoint are set aside and the same command starts again;
  SIGTERM/SIGINT save a resumable ``last.ckpt`` at the end of the batch and exit non-zero (143/1);
- the run is checked before it starts: data shape against the decoder, latent sizes across the
  model's parts (``Method.check_run``);
- config mistakes print one short message with a suggestion (``lebm.cli.errors``).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shlex
import signal
import sys
import warnings
from itertools import takewhile
from pathlib import Path
from typing import Any, Literal, NoReturn

import lightning.pytorch as L
import yaml
from jsonargparse import set_parsing_settings
from lightning.pytorch import Callback, LightningDataModule
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden

from lebm.atomic import replaced_atomically
from lebm.callbacks.interrupt import InterruptCheckpoint
from lebm.callbacks.predictions import PredictionWriter
from lebm.callbacks.progress_bar import without_version_fragment
from lebm.checkpoint_io import CheckpointNotSaved, with_atomic_checkpoints
from lebm.checkpoints import refused_global
from lebm.cli import trainer_flags
from lebm.cli.data_match import check_scored_content, check_scored_data
from lebm.cli.errors import SUBCOMMANDS, fail, summarize_parser_error
from lebm.cli.kinds import check_kinds
from lebm.cli.loggers import (
    fill_paper_targets,
    finish_wandb_run,
    log_run_config,
    mark_run_folder_save_dirs,
    paper_target_labels,
    place_in_run_folder,
    resolve_paper_targets,
    run_anomaly_classes,
    unpublished_note,
    with_metrics_table,
    without_filled_paper_targets,
    without_metrics_table,
)
from lebm.cli.resume_check import check_resume
from lebm.cli.run_folder import (
    CHECKPOINT_DIR,
    FOLDERS_MADE,
    RUN_BOUND_LOGGER_SETTINGS,
    RUN_RECORD_MARK,
    WANDB_RUN_FOLDER_FILE,
    WANDB_RUN_ID_FILE,
    best_without_a_fit,
    check_writable,
    evaluated_checkpoint,
    evaluation_folder,
    fit_checkpoint,
    is_primary_process,
    keep_test_readings,
    remove_empty_folders_made,
    run_record_folder,
    summary,
    wandb_run_id,
)
from lebm.cli.run_lock import release_locks, take_lock
from lebm.config import given_configs
from lebm.data.content import data_content, data_read
from lebm.data.errors import DataError
from lebm.devices import check_device_settings
from lebm.models.base import Method
from lebm.speed.numerics import apply_tf32
from lebm.training.guard import TrainingDiverged
from lebm.training.own_checkpoints import AnotherRunsFolder

#: Lightning's DDP strategy names and the lebm strategies that replace them.
DDP_NAMES = {
    "ddp": "lebm_ddp",
    "ddp_find_unused_parameters_true": "lebm_ddp",
    "ddp_find_unused_parameters_false": "lebm_ddp",
    "ddp_spawn": "lebm_ddp_spawn",
    "ddp_spawn_find_unused_parameters_true": "lebm_ddp_spawn",
    "ddp_spawn_find_unused_parameters_false": "lebm_ddp_spawn",
}

#: Exit code of a run stopped by SIGTERM (128 + 15, the shell's convention; Ctrl+C exits with 1).
EXIT_SIGTERM = 143
#: Exit code of Ctrl+C during start-up (128 + 2).
EXIT_SIGINT = 130
#: Trainer options that take a number of batches (an int) or a fraction of the epoch (a float).
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def gives_option(args: list[str], key: str) -> bool:
    """Whether the command line names ``--<key>`` or one of its parts (``--key V``, ``--key=V``,
    ``--key+=V``, ``--key.init_args.x V``)."""
    flag = f"--{key}"
    return any(arg == flag or arg.startswith((flag + "=", flag + "+", flag + ".")) for arg in args)


#: The ``ckpt_path`` values that name no file: they ask about the run folder of the command itself.
FOLDER_CHECKPOINTS = ("auto", "last", "best")


def refuse_a_checkpoint_only_a_file_names(ckpt_path: Any, args: list[str]) -> None:
    """Refuse ``fit`` resuming a checkpoint file that only a config file names (a resumed run's
    ``config.yaml`` written before lebm stopped recording it): it would continue another folder's
    run in this one, unasked. ``auto``/``last`` in a file ask about this folder and stay allowed."""
    if not ckpt_path or ckpt_path in FOLDER_CHECKPOINTS or gives_option(args, "ckpt_path"):
        return
    quoted = shlex.quote(str(ckpt_path))
    fail(
        f"a config file gives ckpt_path {quoted} (a resumed run's record), and lebm fit resumes only when the command "
        f"asks: add --ckpt_path null to start a new run, --ckpt_path {quoted} to continue that checkpoint here, "
        "or --ckpt_path last to resume this folder's run"
    )


def given_as_integer(args: list[str], key: str) -> bool:
    """Whether the last value the command line or its config files give ``trainer.<key>`` is written
    as an integer (``1``, not ``1.0``): ``args`` are the expanded arguments (``--config`` paths or
    YAML text, ``--trainer.<key> V`` and ``--trainer.<key>=V``)."""
    given: bool | None = None
    flag = f"--trainer.{key}"
    for index, arg in enumerate(args):
        value: Any = None
        if arg == flag and index + 1 < len(args):
            value = args[index + 1].strip()
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1].strip()
        elif arg in ("-c", "--config") and index + 1 < len(args):
            source = args[index + 1]
            try:
                text = Path(source).read_text() if os.path.isfile(source) else source
                loaded = yaml.safe_load(text)
            except (OSError, yaml.YAMLError):
                continue
            trainer = loaded.get("trainer") if isinstance(loaded, dict) else None
            if isinstance(trainer, dict) and key in trainer:
                given = isinstance(trainer[key], int) and not isinstance(trainer[key], bool)
            continue
        if value is not None:
            given = value.lstrip("+").isdigit()
    return bool(given)


def as_given(dumped: Any, given: Any) -> Any:
    """``dumped`` (the parser's dump of a config, as plain data) with every integer of ``given`` (the
    config as the run used it) put back where the dump wrote it as a float: the parser writes an
    option typed ``float | int`` (Lightning's ``limit_*_batches``, ``overfit_batches``) as ``1.0``
    even when the run used ``1`` (one batch, not the whole epoch), and reads ``1.0`` back as the
    whole epoch. Lists and mappings are walked in step; anything else is left as dumped."""
    if isinstance(dumped, dict) and isinstance(given, dict):
        return {key: as_given(value, given[key]) if key in given else value for key, value in dumped.items()}
    if isinstance(dumped, list) and isinstance(given, (list, tuple)) and len(dumped) == len(given):
        return [as_given(value, original) for value, original in zip(dumped, given, strict=True)]
    if isinstance(dumped, float) and isinstance(given, int) and not isinstance(given, bool) and dumped == given:
        return given
    return dumped


def without_filled_checkpoint_folders(recorded: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` (a run's config as plain data) with the ``dirpath`` that lebm gives a
    ``ModelCheckpoint`` without one (``<trainer.default_root_dir>/checkpoints``) written back as
    given, ``null``: a run started from this record in another run folder then writes its
    checkpoints there, not over this run's (resuming from it fills in the same folder again)."""
    trainer = recorded.get("trainer") if isinstance(recorded.get("trainer"), dict) else {}
    run_dir = trainer.get("default_root_dir")
    for callback in _as_list(trainer.get("callbacks")):
        init_args = callback.get("init_args") if isinstance(callback, dict) else None
        if not (_is_config_of(callback, "ModelCheckpoint") and isinstance(init_args, dict)):
            continue
        if isinstance(run_dir, str) and init_args.get("dirpath") == os.path.join(run_dir, CHECKPOINT_DIR):
            init_args["dirpath"] = None
    return recorded


def without_run_bound_logger_settings(recorded: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` without the logger settings that belong to this run (:data:`RUN_BOUND_LOGGER_SETTINGS`:
    the W&B id and resume mode, the folder): a record reused for another run must not log under this
    run's id or into its folder; resuming this run takes them from its folder again."""
    trainer = recorded.get("trainer") if isinstance(recorded.get("trainer"), dict) else {}
    for logger in _as_list(trainer.get("logger")):
        init_args = logger.get("init_args") if isinstance(logger, dict) else None
        if isinstance(init_args, dict):
            for key in RUN_BOUND_LOGGER_SETTINGS:
                init_args.pop(key, None)
    return recorded


def names_run_folder(config: str) -> bool:
    """Whether a ``-c`` value (a file, or the YAML text of an expanded recipe) sets
    ``trainer.default_root_dir``."""
    try:
        if os.path.isfile(config):
            with open(config) as handle:
                data = yaml.safe_load(handle)
        else:
            data = yaml.safe_load(config)
    except (OSError, yaml.YAMLError):
        return False
    trainer = data.get("trainer") if isinstance(data, dict) else None
    return isinstance(trainer, dict) and trainer.get("default_root_dir") is not None


def run_record_args(args: list[str]) -> tuple[list[str], str | None]:
    """``args`` with ``--trainer.default_root_dir <folder>`` added when a ``-c`` file is a run's
    record (:func:`~lebm.cli.run_folder.run_record_folder`) and the command does not give the folder
    itself (on its command line, or in a ``-c`` file after the record): the record trains in the
    folder it lies in (a copied run's copy), whatever folder it names; said in one line when it
    names another. Returns the arguments and the record's path."""
    configs = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
    records = [value for value in configs if run_record_folder(value) is not None]
    later = configs[configs.index(records[-1]) + 1 :] if records else []
    if not records or gives_option(args, "trainer.default_root_dir") or any(map(names_run_folder, later)):
        return args, records[-1] if records else None  # a folder the command gives itself wins
    record = records[-1]
    folder = run_record_folder(record)
    assert folder is not None
    try:
        with open(record) as handle:
            named = ((yaml.safe_load(handle) or {}).get("trainer") or {}).get("default_root_dir")
    except (OSError, yaml.YAMLError):
        named = None
    same = isinstance(named, str) and (
        os.path.realpath(named) == os.path.realpath(folder)  # a symbolic link to the same folder too
        or (not os.path.isabs(named) and folder.endswith(os.sep + os.path.normpath(named)))  # relative to its cwd then
    )
    if isinstance(named, str) and not same and is_primary_process():
        sys.stderr.write(
            f"lebm: {record} is the record of the run in {folder}: the command works there, not in {named}, the "
            "folder the record names (give --trainer.default_root_dir to work elsewhere)\n"
        )
    return [*args, "--trainer.default_root_dir", folder], record


def dump_parsed(parser: LightningArgumentParser, config: Any, **settings: Any) -> str:
    """``config``, a namespace ``parser`` returned and checked whole when it parsed it (lebm's later
    edits, such as the run folder and its loggers' ``save_dir``, are values of the same types),
    written as the parser writes it (YAML), ``None`` values included, without checking every value a
    second time (jsonargparse's ``dump`` would: most of its cost). ``settings`` go to ``parser.dump``
    (e.g. ``skip_link_targets=False``). ``tests/cli/test_config_dump.py`` compares it with the
    checked dump."""
    return parser.dump(config, skip_unset=False, skip_validation=True, **settings)


class LebmArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one short message and a pointer to ``--help``
    (jsonargparse's inner parsers raise, as usual, so the outer one sees the whole context)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:  # type: ignore[override]
        if not self.exit_on_error:
            super().error(message, ex)
        subcommand = getattr(ex, "subcommand_parser", None)
        words = (getattr(subcommand, "prog", None) or self.prog or "").split()
        command = f"lebm {words[-1]}" if words and words[-1] in SUBCOMMANDS else "lebm"
        sys.stderr.write(f"lebm: error: {summarize_parser_error(str(message))}\n(all options: {command} --help)\n")
        raise SystemExit(2)

    def validate(self, namespace: Any, *args: Any, **kwargs: Any) -> None:
        """Check the config, once the loggers that write into the run folder without a ``save_dir``
        are marked to (``lebm.cli.loggers``: Lightning's ``CSVLogger`` requires one)."""
        mark_run_folder_save_dirs(namespace)
        super().validate(namespace, *args, **kwargs)


class RunConfigSaved(SaveConfigCallback):
    """Saves the resolved config into the run folder: ``config.yaml`` for ``fit`` (the run's own,
    read by ``--ckpt_path last``), ``config_<stage>.yaml`` for ``validate``/``test``/``predict``, so
    that scoring a run with other settings never overwrites how it was trained. Always at the run
    folder's root (Lightning's ``log_dir`` is ``<run>/<name>/version_<n>`` for CSV and TensorBoard),
    and into every logger: the whole config nested, and the file on a W&B run (``lebm.cli.loggers``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False  # saved by save_config, into the run folder whatever the logger
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """On global rank 0: write the config into ``trainer.default_root_dir`` and give it to the loggers.
        The file holds the values as the run used them: an integer batch limit stays an integer
        (:func:`as_given`), so that ``lebm fit -c <run>/config.yaml`` runs the same thing."""
        run_dir = trainer.default_root_dir
        os.makedirs(run_dir, exist_ok=True)
        path = os.path.join(run_dir, self.config_filename)
        if os.path.isfile(path) and not self.overwrite:
            raise RuntimeError(f"{path} exists; refusing to overwrite it")
        text = dump_parsed(self.parser, self.config)
        header = "".join(takewhile(lambda line: line.startswith("#"), text.splitlines(keepends=True)))
        recorded = without_filled_checkpoint_folders(as_given(yaml.safe_load(text), self.config.as_dict()))
        recorded = without_filled_paper_targets(recorded)
        if self.config_filename == "config.yaml":
            recorded.pop("ckpt_path", None)  # a fit's record never resumes: the command asks (--ckpt_path)
            header = f"{RUN_RECORD_MARK}\n{header}"  # read with -c, it trains in the folder it lies in
        recorded = without_run_bound_logger_settings(recorded)
        content = data_content(trainer.datamodule)
        if content is not None:  # the data as read: the path the root resolved to and a digest of its content
            where = f"from {content['root']}" if content["root"] else "(no files: data bundled with a package)"
            header += f"# data read {where}: content digest {content['digest']}, {content['files']} files\n"
        with replaced_atomically(path, "w") as handle:
            handle.write(
                header + yaml.safe_dump(recorded, default_flow_style=False, allow_unicode=True, sort_keys=False)
            )
        if trainer.enable_autolog_hparams:  # Trainer(enable_autolog_hparams=False): the user logs them
            log_run_config(trainer.loggers, recorded, path)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        name = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
        if name != "fit":
            self.config_filename = f"config_{name}.yaml"
        super().setup(trainer, pl_module, stage)


class LebmCLI(LightningCLI):
    """LightningCLI wired to the run-folder conventions described in this module."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        quiet_lightning_notes()  # the command's and lebm.from_recipe's Trainers
        self._raw_args = list(sys.argv[1:] if args is None else args)
        self._typed_args = list(self._raw_args)  # as the user typed them, before a record's folder is added
        self._raw_args, self._run_record = run_record_args(self._raw_args)
        args = self._raw_args
        kwargs.setdefault("trainer_defaults", {"inference_mode": False})
        kwargs.setdefault("save_config_callback", RunConfigSaved)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+", "allow_abbrev": False})
        kwargs.setdefault("parser_class", LebmArgumentParser)
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

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands; a command that names its subcommand first (``lebm fit ...``) gets
        that one's parser alone: each parser describes the Trainer, the method and the data anew,
        and the other three would go unused. ``lebm --help`` or a misspelled subcommand still lists
        all four."""
        every = LightningCLI.subcommands()
        named = getattr(self, "_raw_args", [])[:1]
        return {named[0]: every[named[0]]} if named and named[0] in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="fit into a run folder that already holds a run, deleting its checkpoints, images and W&B id",
        )
        parser.add_argument(
            "--paper_targets",
            type=dict[str, Any] | None,
            default=None,
            help="the published values of logged metrics ({val/fid: 29.44}, or per held-out digit of an anomaly run: "
            "{val/auprc: {held_out: {1: 0.336, 4: 0.63}}}): drawn as lines on the learning curves "
            "(lebm.callbacks.LearningCurves)",
        )
        parser.add_argument(
            "--tf32",
            type=bool | Literal["pytorch"],
            default="pytorch",
            help="float32 matrix products and convolutions in TF32 on NVIDIA GPUs: pytorch (PyTorch's defaults: "
            "products off, convolutions on), true (both on) or false (both off) (docs/performance.md)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then hold ``ckpt_path`` back until :meth:`before_instantiate_classes`: given one,
        LightningCLI replaces the recipe's model by the checkpoint's stored hyperparameters right
        after parsing, in silence (even another method's); lebm builds the recipe's model and
        checks it against the checkpoint instead (:mod:`lebm.cli.resume_check`)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self._held_ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand:
            self.config[subcommand].ckpt_path = None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        wrong_kind = check_kinds(config.as_dict())  # before the run folder is touched
        if wrong_kind:
            fail(wrong_kind)
        if self.subcommand:
            config.ckpt_path = getattr(self, "_held_ckpt_path", config.get("ckpt_path"))
        if self.subcommand == "fit":
            refuse_a_checkpoint_only_a_file_names(config.get("ckpt_path"), self._raw_args)
        data = config.get("data")
        data = data.as_dict() if hasattr(data, "as_dict") else data
        given = functools.partial(gives_option, self._raw_args)
        args = self._raw_args
        configs = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
        self._other_data_on_purpose = False  # set on the model once built (Method.other_data_on_purpose)
        run_dir = config.trainer.default_root_dir or os.getcwd()
        if self.subcommand in ("validate", "test", "predict"):
            if config.get("ckpt_path") in ("last", "auto"):  # the run's own, by what its checkpoints say
                trusted = config.get("weights_only") is False
                config.ckpt_path = evaluated_checkpoint(run_dir, config.ckpt_path, self.subcommand, not trusted)
            self._other_data_on_purpose = check_scored_data(
                self.subcommand, config.get("ckpt_path"), data, given, configs
            )
            typed = gives_option(self._typed_args, "trainer.default_root_dir")  # a record's own folder is no choice
            beside = None if typed else evaluation_folder(config.ckpt_path, self.subcommand)
            if beside is not None and beside != os.path.abspath(run_dir):
                if is_primary_process():  # never the recipe's folder, which may hold another run
                    trainer_flags.say(
                        f"lebm {self.subcommand}: writing into {beside}, beside the checkpoint, not into {run_dir} "
                        "(give --trainer.default_root_dir to write elsewhere)"
                    )
                run_dir = beside
        config.trainer.default_root_dir = run_dir
        self._smoke_test = trainer_flags.smoke_test_batches(config.trainer) if self.subcommand == "fit" else 0
        if self._smoke_test:  # the run folder is read, never written: the smoke test's files go elsewhere
            trusted = config.get("weights_only") is False
            config.ckpt_path = trainer_flags.smoke_test_checkpoint(run_dir, config.get("ckpt_path"), not trusted)
            folder = trainer_flags.smoke_test_folder()
            unused = [f"--trainer.{key} {config.trainer.get(key):g}" for key in BATCH_LIMITS if config.trainer.get(key)]
            if is_primary_process():
                trainer_flags.say(trainer_flags.smoke_test_note(run_dir, self._smoke_test, folder, unused))
            run_dir = config.trainer.default_root_dir = folder
        elif is_primary_process():  # predict writes <run>/predictions, validate and test their config and readings
            check_writable(run_dir)
        if self.subcommand == "fit" and not self._smoke_test:
            if is_primary_process():
                take_lock(run_dir)  # one live fit per folder, before anything in it is read or moved
            trusted = config.get("weights_only") is False  # --weights_only false: the user trusts the files
            config.ckpt_path = fit_checkpoint(
                run_dir, config.get("ckpt_path"), bool(config.get("overwrite")), weights_only=not trusted
            )
            # a resume reads the data its checkpoint trained on, wherever the file lies
            self._other_data_on_purpose = check_scored_data("fit", config.get("ckpt_path"), data, given, configs)
        elif self.subcommand == "predict" and not config.get("ckpt_path"):
            last = shlex.quote(os.path.join(run_dir, CHECKPOINT_DIR, "last.ckpt"))
            fail(
                "lebm predict needs --ckpt_path: without one it would predict with a freshly initialised model and "
                f"replace {os.path.join(run_dir, 'predictions')}; pass --ckpt_path {last} (or another checkpoint)"
            )
        elif self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path") == "best":
            fail(best_without_a_fit(run_dir, f"lebm {self.subcommand}"))
        elif self.subcommand in ("validate", "test") and not config.get("ckpt_path"):
            last = shlex.quote(os.path.join(run_dir, CHECKPOINT_DIR, "last.ckpt"))
            warnings.warn(
                f"lebm {self.subcommand} without --ckpt_path scores a freshly initialised model; pass "
                f"--ckpt_path {last} (or another checkpoint)",
                stacklevel=1,
            )
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # the prediction writer keeps them: no second copy in memory
        config.overwrite = False  # used; the saved config.yaml must not overwrite next time
        resuming = bool(config.get("ckpt_path")) and self.subcommand == "fit"
        if self.subcommand == "predict" and not gives_option(self._raw_args, "trainer.logger"):
            config.trainer.logger = False  # predictions go to <run>/predictions: no second W&B run in the fit's folder
        if self.subcommand in ("fit", None):  # every number of the run as a table in its folder, whatever the logger
            config.trainer.logger = with_metrics_table(config.trainer.get("logger"), run_dir)
        else:  # validate, test, predict: the fit's table stays as the fit left it
            config.trainer.logger = without_metrics_table(config.trainer.get("logger"))
        self._fill_paper_targets(config)
        for logger in _as_list(config.trainer.get("logger")):
            place_in_run_folder(logger, run_dir)
            if not _is_config_of(logger, "WandbLogger"):
                continue
            init_args = logger.init_args
            if self._run_record is not None:  # an older record names its run's W&B id and folder
                for key in RUN_BOUND_LOGGER_SETTINGS:
                    if key in init_args and not gives_option(self._raw_args, f"trainer.logger.init_args.{key}"):
                        init_args[key] = run_dir if key == "save_dir" else None
            if self.subcommand == "fit" and init_args.get("id") is None:
                init_args.id, note = wandb_run_id(run_dir, resuming, config.get("ckpt_path"))
                if note and is_primary_process():
                    trainer_flags.say(note)
                init_args.resume = "allow"
                self._wandb_run = (run_dir, init_args.id)
        notes = [trainer_flags.drop_checkpoint_callbacks(config.trainer)]
        for callback in _as_list(config.trainer.get("callbacks")):
            if _is_config_of(callback, "ModelCheckpoint") and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = os.path.join(run_dir, "checkpoints")
        trainer_flags.name_extra_checkpoints(_as_list(config.trainer.get("callbacks")))
        # Lightning types these float | int, and the parser reads "1" as 1.0 (the whole epoch): an integer
        # written by the user means batches, set on the trainer once it is built
        self._batch_limits = {
            key: int(value)
            for key in BATCH_LIMITS
            if isinstance(value := config.trainer.get(key), float)
            and value.is_integer()
            and (value > 1 or given_as_integer(self._raw_args, key))
        }
        for key, batches in self._batch_limits.items():
            config.trainer[key] = batches  # what config.yaml records
        trainer_flags.WholeEpochNote.keys = set(self._batch_limits)  # Lightning's "100%" line is wrong for them
        self._batch_limits, limit_notes = trainer_flags.adjust_batch_limits(
            config.trainer, self._batch_limits, lambda key: given_as_integer(self._raw_args, key)
        )
        given_strategy = config.trainer.get("strategy")
        config.trainer.strategy = _method_strategy(config.trainer)
        notes += [*limit_notes, trainer_flags.strategy_note(given_strategy, config.trainer.strategy)]
        for note in notes if is_primary_process() else ():
            if note:
                trainer_flags.say(note)
        _warn_if_oversubscribed(config.trainer)
        trainer = config.trainer
        try:
            check_device_settings(trainer.get("accelerator"), trainer.get("devices"), trainer.get("precision"))
        except ValueError as error:
            fail(str(error))
        apply_tf32(config.get("tf32", "pytorch"))

    def _fill_paper_targets(self, config: Any) -> None:
        """Give the recipe's ``paper_targets``, resolved for the run (a value per held-out digit looked
        up by ``data.init_args.anomaly_classes``), to its ``LearningCurves``; a malformed target stops
        the command in one line, and a digit with no published value is said in one line."""
        given = config.get("paper_targets")
        classes = run_anomaly_classes(config)
        try:
            targets = resolve_paper_targets(given, classes)
        except ValueError as error:
            fail(str(error))
        self._paper_figure = (targets.get("val/auprc"), classes, paper_target_labels(given).get("val/auprc", "paper"))
        note = unpublished_note(given, targets, classes)
        if note and self.subcommand in ("fit", None) and is_primary_process():
            trainer_flags.say(note)
        fill_paper_targets(_as_list(config.trainer.get("callbacks")), targets, paper_target_labels(given))

    def instantiate_classes(self) -> None:
        try:
            with given_configs(self._model_argument_configs):  # dumped only when a component asks
                super().instantiate_classes()
            if isinstance(self.model, Method):
                self.model.other_data_on_purpose = getattr(self, "_other_data_on_purpose", False)
                self.model.check_run(self.datamodule)
                resuming = bool(self.subcommand and self.config[self.subcommand].get("ckpt_path"))
                self.model.check_trainer(self.trainer, self.subcommand, resuming)
        except (ValueError, TypeError, FileNotFoundError, KeyError, IndexError, MisconfigurationException) as error:
            fail(f"could not build the run: {root_cause(error)}")
        ckpt_path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        if isinstance(ckpt_path, str) and os.path.isfile(ckpt_path) and isinstance(self.model, Method):
            trusted = self.config[self.subcommand].get("weights_only") is False
            changed = check_resume(
                self.model, ckpt_path, self.subcommand, weights_only=not trusted, trainer=self.trainer
            )
            if changed and self.trainer.is_global_zero:
                sys.stderr.write(f"lebm: {ckpt_path} with the recipe's changed settings: {'; '.join(changed)}\n")
            if self.subcommand == "fit" and getattr(self.model, "said_nothing_left", False):
                raise SystemExit(0)  # a finished run's command again: said in one line, nothing built on or written
            # before the Trainer writes config.yaml or a W&B id: data of other content behind the same settings
            check_scored_content(self.subcommand, ckpt_path, self.datamodule, self._other_data_on_purpose)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's Trainer, whose checkpoints are written whole beside their names
        (:class:`lebm.checkpoint_io.AtomicCheckpointIO` among its ``plugins``, unless the run gives a
        checkpoint I/O of its own), and whose progress bar, when Lightning adds its own, shows no
        ``v_num`` fragment (:mod:`lebm.callbacks.progress_bar`)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = kwargs.pop("plugins", config["trainer"].get("plugins"))
        config["trainer"]["plugins"] = with_atomic_checkpoints(given)
        named_callbacks = list(config["trainer"].get("callbacks") or [])
        trainer = super().instantiate_trainer(**kwargs)
        without_version_fragment(trainer.callbacks, named_callbacks)
        return trainer

    def _model_argument_configs(self) -> dict[str, Any]:
        """The model's ``init_args`` as plain data (``{argument: config}``), as parsed."""
        dumped = yaml.safe_load(dump_parsed(self.parser, self.config, skip_link_targets=False))
        if self.subcommand:
            dumped = dumped.get(self.subcommand, {})
        model = dumped.get("model") or {}
        return dict(model.get("init_args") or {}) if isinstance(model, dict) else {}

    def after_fit(self) -> None:
        """One line at the end of a run: where its checkpoint, config, images and W&B run are."""
        if self.trainer.is_global_zero and getattr(self, "_smoke_test", 0):
            sys.stderr.write("lebm: fast_dev_run finished; the run folder was not written to\n")
        elif self.trainer.is_global_zero:
            run = getattr(self, "_wandb_run", None)
            sys.stderr.write(f"lebm: {summary(self.trainer.default_root_dir, run[1] if run else None)}\n")

    def after_test(self) -> None:
        """``lebm test`` ends with the line of each callback that has one (an anomaly run's: the
        figure, against chance and the no-model baseline, and how it was selected), after
        Lightning's table, and keeps each callback's record in the run folder
        (:func:`lebm.cli.run_folder.keep_test_readings`)."""
        if not self.trainer.is_global_zero:
            return
        ckpt_path = self.trainer.ckpt_path
        records = []
        for callback in self.trainer.callbacks:
            line = callback.test_closing_line(ckpt_path) if hasattr(callback, "test_closing_line") else None
            if line:
                sys.stderr.write(f"lebm: {line}\n")
            paper, digits, label = getattr(self, "_paper_figure", (None, None, ""))
            compared = (
                callback.paper_comparison(paper, digits, label)
                if paper and hasattr(callback, "paper_comparison")
                else None
            )
            if compared:
                sys.stderr.write(f"lebm: {compared}\n")
            record = callback.test_record(ckpt_path) if hasattr(callback, "test_record") else None
            if record is not None:
                records.append(record)
        if records:
            read = data_read(self.trainer.datamodule)
            records = [{**record, **read} for record in records]
            path = keep_test_readings(self.trainer.default_root_dir, records)
            sys.stderr.write(f"lebm: the test reading is kept in {path}\n")

    def after_instantiate_classes(self) -> None:
        for key, batches in getattr(self, "_batch_limits", {}).items():
            setattr(self.trainer, key, batches)
        run = getattr(self, "_wandb_run", None)
        if run is not None and self.trainer.is_global_zero:
            run_dir, run_id = run
            with replaced_atomically(os.path.join(run_dir, WANDB_RUN_ID_FILE), "w") as handle:
                handle.write(run_id)
            with replaced_atomically(os.path.join(run_dir, WANDB_RUN_FOLDER_FILE), "w") as handle:
                handle.write(os.path.abspath(run_dir))  # a copy of the folder gets a W&B run of its own
        trainer_flags.name_extra_last_checkpoints(self.trainer.checkpoint_callbacks)
        if self.subcommand == "fit" and self.trainer.checkpoint_callback is not None and not self._smoke_test:
            self.trainer.callbacks.append(InterruptCheckpoint())
        if self.subcommand == "predict":
            self._prepare_predict()
        self.trainer.callbacks.append(StartUpOver())

    def _prepare_predict(self) -> None:
        """``lebm predict``: refuse data without prediction batches, and write the predictions into
        the run folder (:class:`~lebm.callbacks.PredictionWriter`) unless a prediction writer is given."""
        datamodule = self.datamodule
        if datamodule is not None and not is_overridden("predict_dataloader", datamodule, LightningDataModule):
            fail(
                f"the data module {type(datamodule).__name__} has no predict_dataloader, so lebm predict has nothing "
                "to read: use one of lebm's data modules (they predict on the test split), lebm.data.SampleRequests "
                "for generated samples (--data lebm.data.SampleRequests --data.n 64), or give yours a "
                "predict_dataloader (lebm.data.PredictionSource among its bases reads its test split; docs/predict.md)"
            )
        if not any(isinstance(callback, BasePredictionWriter) for callback in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    def after_predict(self) -> None:
        """One line at the end of ``lebm predict``: where the predictions are."""
        writers = [callback for callback in self.trainer.callbacks if isinstance(callback, PredictionWriter)]
        if self.trainer.is_global_zero and writers:
            sys.stderr.write(f"lebm: predictions written to {writers[0].folder(self.trainer)}\n")


def root_cause(error: BaseException) -> str:
    """The message of the innermost exception: a component's own error, not the config parser's
    wrapping of it."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    lines = str(error).splitlines()
    return "\n".join(lines[:12]) if lines else type(error).__name__


def _warn_if_oversubscribed(trainer: Any) -> None:
    """More CPU processes than cores: each process gets a fraction of a core, and tiny nets crawl."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator != "cpu" and not (accelerator == "auto" and not CUDAAccelerator.is_available()):
        return
    try:
        processes = requested_processes("cpu", trainer.get("devices"), 1)
    except Exception:
        return
    cores = os.cpu_count() or 1
    if processes > cores:
        warnings.warn(
            f"{processes} CPU processes on {cores} cores: each process gets less than a core and training slows down "
            f"many times; use --trainer.devices {cores} or fewer",
            stacklevel=1,
        )


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


class _DropTips(logging.Filter):
    """Lightning's advertisement for another logging service: not the user's business."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


#: The one tips filter (a logger keeps a filter once however often it is added).
DROP_TIPS = _DropTips()


def quiet_lightning_notes() -> None:
    """Drop Lightning's notes that say nothing about the run (its "Tip:" advertisements, the "100%
    of the batches" line about lebm's own batch limits) from its info logger, for the ``lebm``
    command and for runs built from Python (:func:`lebm.from_recipe`) alike."""
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero_logger.addFilter(DROP_TIPS)
    rank_zero_logger.addFilter(trainer_flags.WHOLE_EPOCH_NOTE)


class StartupInterrupted(BaseException):
    """SIGTERM during start-up, before the first loop started: nothing trained yet (a
    ``BaseException``, so that no ``except Exception`` on the way turns it into another error)."""


class _StartUp:
    """Start-up, from the command's first line to the start of the first loop: a SIGTERM then stops
    the command with a message. (Under ``lebm_ddp_spawn`` the launching process never reaches a
    loop itself; a SIGTERM sent to it alone is reported as during start-up.)"""

    running = False

    @classmethod
    def on_sigterm(cls, signum: int, frame: Any) -> None:
        if cls.running:
            raise StartupInterrupted


class StartUpOver(Callback):
    """Marks the end of start-up: the first loop starts (Lightning's own SIGTERM handling, which
    calls this one too, is in place by then)."""

    def _over(self, *args: Any) -> None:
        _StartUp.running = False

    on_train_start = on_validation_start = on_test_start = on_predict_start = _over


STARTUP_STOPPED = (
    "stopped by {signal} during start-up, before any training: nothing was trained and no checkpoint written; "
    "the same command starts the run again"
)


def run(args: list[str] | None) -> None:
    """Run the command: ``args`` (already expanded), or ``sys.argv`` when None. A run folder the
    command made is removed again when the command fails and the folder holds no file (a run
    refused at build leaves none behind)."""
    succeeded = False
    try:
        run_command(args)
        succeeded = True
    except SystemExit as stop:  # (Lightning's SIGTERMException is one too; run_command turns it into 143)
        succeeded = stop.code in (0, None)
        raise
    finally:
        finish_wandb_run(failed=not succeeded)  # a second command in this process gets its own W&B run
        release_locks()  # after W&B's last write into the folder
        if not succeeded and is_primary_process():
            remove_empty_folders_made()  # a refused start leaves no folder behind (its emptied lock file aside)
        FOLDERS_MADE.clear()


def run_command(args: list[str] | None) -> None:
    """The command itself, its known failures said in one line (:func:`run`)."""
    quiet_lightning_notes()
    _StartUp.running = True
    try:
        previous = signal.signal(signal.SIGTERM, _StartUp.on_sigterm)
    except ValueError:  # not the main thread (a test harness): no start-up handler
        previous = None
    try:
        LebmCLI(args=args)
    except StartupInterrupted:
        sys.stderr.write(f"\nlebm: {STARTUP_STOPPED.format(signal='SIGTERM')}\n")
        raise SystemExit(EXIT_SIGTERM) from None
    except KeyboardInterrupt:
        if not _StartUp.running:
            raise
        sys.stderr.write(f"\nlebm: {STARTUP_STOPPED.format(signal='Ctrl+C')}\n")
        raise SystemExit(EXIT_SIGINT) from None
    except (DataError, AnotherRunsFolder) as error:  # raised once the run is built: the data set up, training started
        fail(str(error))
    except pickle.UnpicklingError as error:  # Lightning's torch.load of a checkpoint that holds objects
        if not str(error).startswith("Weights only load failed"):
            raise
        fail(
            f"the checkpoint holds objects other than tensors and plain data ({refused_global(error)}), which "
            "Lightning loads only when told to trust the file: a callback or your code stored it in the checkpoint "
            "(store plain Python numbers, e.g. float(x), to avoid it). If the file is yours, add --weights_only false"
        )
    except (TrainingDiverged, CheckpointNotSaved) as error:
        sys.stderr.write(f"\nlebm: {error}\n")  # on a line of its own, after a progress bar
        raise SystemExit(1) from None
    except SIGTERMException:
        sys.stderr.write("lebm: stopped by SIGTERM; a resumable checkpoint was saved: resume with --ckpt_path last\n")
        raise SystemExit(EXIT_SIGTERM) from None
    except (MisconfigurationException, RuntimeError) as error:  # a monitored name that was not logged
        message = trainer_flags.unlogged_monitor(error) or trainer_flags.too_small_share(error)
        if message is None:
            raise
        sys.stderr.write("\n")  # after a progress bar
        fail(message)
    finally:
        trainer_flags.remove_smoke_test_folders()
        _StartUp.running = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
