"""Recipes from Python: the model, DataModule and Trainer settings ``lebm fit -c RECIPE`` builds.

::

    import lightning as L
    import lebm

    recipe = lebm.from_recipe("quickstart", {"trainer.max_epochs": 3})
    trainer = L.Trainer(**recipe.trainer_settings, callbacks=[*recipe.callbacks, MyCallback()])
    trainer.fit(recipe.model, datamodule=recipe.datamodule)

The recipe goes through the same parser as the command (includes, interpolations, overrides,
the checks of the run), so the model, the data, the trainer flags (``inference_mode=False``, the
run folder as ``default_root_dir``, lebm's DDP strategy for several devices, integer batch limits)
and the recipe's callbacks and logger are what ``lebm fit`` would use. The recipe's callbacks carry
the run folder's rules into any Trainer (:class:`RunFolderGate`: a started run is refused unless
the fit resumes one, a smoke test into it is refused, the folder's lock is taken). What stays with
the command: ``--ckpt_path last|auto``, setting failed starts aside, the W&B run id kept in the run
folder, and the SIGTERM checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import inspect
import io
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from lebm.callbacks.progress_bar import without_version_fragment
from lebm.cli import trainer_flags
from lebm.cli.app import LebmCLI, dump_parsed
from lebm.cli.catalog import locate_config_args
from lebm.cli.known_options import check_known_options
from lebm.cli.recipes import RecipeError, expand_includes
from lebm.cli.run_folder import CHECKPOINT_DIR, best_without_a_fit, checkpoint_files
from lebm.cli.run_lock import release_locks, take_lock

__all__ = ["Recipe", "from_recipe"]


def without_trainer_defaults(callbacks: Sequence[Any], given: set[int]) -> list[Any]:
    """``callbacks`` (the list the Trainer was built with, which Lightning extends in place) less the
    ones Lightning added for itself (its model summary, progress bar, timer, default checkpoint): the
    user's Trainer makes its own, and given them it would say it skipped its default (e.g. "Trainer
    already configured with model summary callbacks"). ``given``: the ids of the recipe's callbacks."""
    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar, Timer

    defaults = (ModelSummary, ProgressBar, Timer, ModelCheckpoint)
    return [callback for callback in callbacks if id(callback) in given or not isinstance(callback, defaults)]


class RunFolderGate(L.Callback):
    """The run folder's rules for a Trainer built in Python from a recipe's callbacks
    (``L.Trainer(**recipe.trainer_settings, callbacks=[*recipe.callbacks])``, ``recipe.trainer()``),
    as ``lebm fit`` applies them. At set-up, first among the recipe's callbacks: a smoke test
    (``fast_dev_run``) into a folder that holds a run (a checkpoint) is refused in one line naming
    ``recipe.trainer(fast_dev_run=...)``, which keeps its files in a temporary folder; a fit into such
    a folder writes no ``config.yaml`` over the run's (the method itself refuses to train into it
    unless the fit resumes that run: :mod:`lebm.training.own_checkpoints`, for any Trainer). A fit
    takes the folder's lock (:mod:`lebm.cli.run_lock`) until it ends."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if str(getattr(stage, "value", stage)) != "fit":
            return
        run_dir = str(trainer.default_root_dir)
        held = checkpoint_files(run_dir) or [  # a checkpoint callback writing into another run's folder too
            path
            for callback in trainer.checkpoint_callbacks
            if isinstance(getattr(callback, "dirpath", None), str)
            for path in sorted(glob.glob(os.path.join(glob.escape(callback.dirpath), "*.ckpt")))
        ]
        if held and os.path.basename(os.path.dirname(held[0])) == CHECKPOINT_DIR:
            run_dir = os.path.dirname(os.path.dirname(held[0]))
        if held and trainer.fast_dev_run:
            raise ValueError(
                f"a smoke test (fast_dev_run) would write its checkpoint into {run_dir}, which holds a run "
                f"({os.path.basename(held[0])} ...): use recipe.trainer(fast_dev_run=True), which keeps a smoke "
                "test's files in a temporary folder, or give the Trainer another default_root_dir"
            )
        if held:
            for callback in trainer.callbacks:  # the run's record stays as the run wrote it
                if isinstance(callback, SaveConfigCallback):
                    callback.already_saved = True
        if trainer.is_global_zero and not trainer.fast_dev_run:
            said = io.StringIO()
            try:
                with contextlib.redirect_stderr(said):
                    take_lock(run_dir)  # one live fit per folder, from Python as from the command
            except SystemExit:  # the command's refusal, raised in Python as an error (a notebook goes on)
                raise ValueError(said.getvalue().strip().removeprefix("lebm: error: ")) from None
            sys.stderr.write(said.getvalue())  # a lock taken over: said in one line, as from the command

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if str(getattr(stage, "value", stage)) == "fit":
            release_locks()


class RecipeTrainer(L.Trainer):
    """``lightning.Trainer`` as :meth:`Recipe.trainer` builds it, with lebm's line for one mistake that
    Lightning reports misleadingly: ``validate|test|predict(ckpt_path="best")`` before any fit of this
    Trainer. "best" is the best checkpoint of a fit in this process; with none, Lightning says its
    ``ModelCheckpoint`` "is not configured to save the best model" though it is. This one names the
    run's kept checkpoints to pass instead."""

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        self._check_best(L.Trainer.validate, "trainer.validate()", args, kwargs)
        return super().validate(*args, **kwargs)

    def test(self, *args: Any, **kwargs: Any) -> Any:
        self._check_best(L.Trainer.test, "trainer.test()", args, kwargs)
        return super().test(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self._check_best(L.Trainer.predict, "trainer.predict()", args, kwargs)
        return super().predict(*args, **kwargs)

    def _check_best(self, method: Any, command: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``ValueError`` with :func:`~lebm.cli.run_folder.best_without_a_fit`'s line when the call
        asks for ``ckpt_path="best"`` and this Trainer's checkpoint callback has kept no best model."""
        ckpt_path = inspect.signature(method).bind(self, *args, **kwargs).arguments.get("ckpt_path")
        checkpoint = self.checkpoint_callback
        unkept = checkpoint is not None and not getattr(checkpoint, "best_model_path", "x")
        if ckpt_path == "best" and unkept and not self.fast_dev_run:
            raise ValueError(best_without_a_fit(self.default_root_dir, command, cli=False))


class RecipeBuild(LebmCLI):
    """The command's LightningCLI without a subcommand (``run=False``): it builds the model, the
    DataModule and a Trainer, and keeps the Trainer's arguments as the recipe's settings."""

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        given = {id(callback) for callback in self.config_init["trainer"].get("callbacks") or []}
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config_init["trainer"]  # its callbacks now include the one saving config.yaml
        values = {key: config[key] for key in config} if isinstance(config, dict) else vars(config).copy()
        self.recipe_callbacks = without_trainer_defaults(values.pop("callbacks", None) or [], given)
        self.recipe_callbacks.insert(0, RunFolderGate())  # the run folder's rules travel with the callbacks
        self.trainer_settings = {**values, **kwargs}
        return trainer

    def after_instantiate_classes(self) -> None:
        """The command sets its integer batch limits (``1`` is one batch, not the whole epoch) on the
        built Trainer, since the parser reads them as floats: the settings take the same values, so
        that ``L.Trainer(**recipe.trainer_settings)`` trains what ``lebm fit`` trains."""
        super().after_instantiate_classes()
        self.trainer_settings.update(getattr(self, "_batch_limits", {}))

    def resolved_config(self) -> dict[str, Any]:
        """The parsed config as plain data (what ``config.yaml`` holds)."""
        return yaml.safe_load(dump_parsed(self.parser, self.config))


@dataclass
class Recipe:
    """What a recipe builds.

    Attributes:
        name: the recipe (a packaged name or a path).
        model: the method (a :class:`lebm.models.Method`), checked against the data.
        datamodule: the recipe's DataModule.
        trainer_settings: the ``Trainer`` keyword arguments without ``callbacks`` (the logger, the
            run folder, ``max_epochs``, ``inference_mode=False``, ...).
        callbacks: the recipe's callbacks, built (image grids, FID, checkpoints, and the callback that
            saves ``config.yaml`` into the run folder).
        config: the resolved config as plain data, nested as in the run's ``config.yaml``.
    """

    name: str
    model: Any
    datamodule: Any
    trainer_settings: dict[str, Any]
    callbacks: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def trainer(self, *, callbacks: Sequence[Any] | Any = (), **overrides: Any) -> Any:
        """A ``lightning.Trainer`` (:class:`RecipeTrainer`) with the recipe's settings and callbacks,
        ``callbacks`` (a list, or one callback as ``lightning.Trainer`` takes it) added and
        ``overrides`` replacing settings (e.g. ``max_epochs=1``); the progress bar is the command's
        (no ``v_num``) unless ``callbacks`` gives one. A ``ModelCheckpoint`` of
        ``callbacks`` without a ``dirpath`` writes into ``<run>/checkpoints``, as the command puts
        one (Lightning would put it under the logger's folder), with the command's file names
        (``best-<monitor>-{epoch}-{step}``, never a ``-v1`` copy), and one with a ``monitor`` comes
        before the recipe's, so that ``ckpt_path="best"`` means its best. A smoke test (``fast_dev_run``)
        writes nothing into the run folder, as from the command: its run folder, and the folder of
        every checkpoint callback under it, move to a temporary folder deleted when Python exits,
        said in one line."""
        from lightning.pytorch.callbacks import Callback, ModelCheckpoint

        if isinstance(callbacks, Callback):  # one callback, as lightning.Trainer takes it too
            callbacks = [callbacks]
        settings = {**self.trainer_settings, **overrides}
        run_dir = str(settings.get("default_root_dir") or os.getcwd())
        recipe_dir = str(self.trainer_settings.get("default_root_dir") or os.getcwd())
        own = list(self.callbacks)
        if os.path.abspath(run_dir) != os.path.abspath(recipe_dir):  # the recipe's checkpoints follow the run folder
            own = [moved_out_of(callback, recipe_dir, run_dir) for callback in own]
        every = [*own, *callbacks]
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.join(run_dir, CHECKPOINT_DIR)
        checkpoints = [callback for callback in every if isinstance(callback, ModelCheckpoint)]
        trainer_flags.name_extra_last_checkpoints(checkpoints, files_too=True)  # the command's names
        monitored = [callback for callback in callbacks if isinstance(callback, ModelCheckpoint) and callback.monitor]
        every = [*monitored, *(callback for callback in every if callback not in monitored)]
        batches = trainer_flags.smoke_test_batches(settings)
        if batches:
            folder = trainer_flags.smoke_test_folder()
            settings["default_root_dir"] = folder
            every = [moved_out_of(callback, run_dir, folder) for callback in every]
            trainer_flags.say(trainer_flags.smoke_test_note(run_dir, batches, folder, ()))
        trainer = RecipeTrainer(**settings, callbacks=list(every))  # Lightning extends the list it is given
        without_version_fragment(trainer.callbacks, every)  # the command's bar: no v_num
        return trainer


def moved_out_of(callback: Any, run_dir: str, folder: str) -> Any:
    """``callback``, or for a checkpoint callback writing under ``run_dir`` a copy writing to the
    same place under ``folder`` instead (the recipe's own callback is left as it is)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirpath = getattr(callback, "dirpath", None)
    if not isinstance(callback, ModelCheckpoint) or not dirpath:
        return callback
    inside = os.path.relpath(os.path.abspath(dirpath), os.path.abspath(run_dir))
    if inside.startswith(os.pardir):
        return callback
    moved = copy.deepcopy(callback)
    moved.dirpath = os.path.join(folder, inside)
    return moved


def override_args(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """Command-line arguments from ``{"trainer.max_epochs": 3}`` (values as JSON, which YAML reads)
    or from a list already written as arguments (``["--trainer.max_epochs", "3"]``)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        args = []
        for key, value in overrides.items():
            text = value if isinstance(value, str) else json.dumps(value)
            args.append(f"--{key.removeprefix('--')}={text}")
        return args
    if isinstance(overrides, str):
        raise TypeError("overrides: a mapping {'trainer.max_epochs': 3} or a list of arguments, not one string")
    return [str(arg) for arg in overrides]


def from_recipe(name: str, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Recipe:
    """Build what ``lebm fit -c NAME [overrides]`` trains: see :class:`Recipe`.

    Args:
        name: a recipe file, or the name of a recipe that comes with lebm (``lebm recipes``).
        overrides: ``{"section.key": value}`` (e.g. ``{"model.init_args.decoder_lr": 1e-3}``) or
            command-line arguments (``["--trainer.max_epochs", "3"]``).

    Raises:
        TypeError: ``name`` is not a file name or a recipe's name (None, a number).
        RecipeError: an unknown recipe, a misspelt option, or a run that cannot be built, with the
            command's message (the problem and the fix).
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise TypeError(
            f"from_recipe(name) takes a recipe file or the name of a recipe that comes with lebm (`lebm recipes` "
            f"lists them), e.g. lebm.from_recipe('quickstart'), got {name!r}"
        )
    args = ["fit", "-c", str(name), *override_args(overrides)]
    expanded = expand_includes(locate_config_args(args))  # RecipeError: an unknown name, a broken file
    misspelt = check_known_options(expanded)
    if misspelt:
        raise RecipeError(misspelt)
    messages = io.StringIO()
    try:
        # the args are lebm's, whatever the Python program's own sys.argv holds: no warning about both
        with contextlib.redirect_stderr(messages), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            built = RecipeBuild(args=expanded[1:], run=False)
    except SystemExit:
        text = messages.getvalue().strip().splitlines()
        reason = next((line for line in text if line.startswith("lebm: error:")), text[-1] if text else "")
        raise RecipeError(reason.removeprefix("lebm: error: ")) from None
    sys.stderr.write(messages.getvalue())
    return Recipe(
        name=name,
        model=built.model,
        datamodule=built.datamodule,
        trainer_settings=built.trainer_settings,
        callbacks=built.recipe_callbacks,
        config=built.resolved_config(),
    )
