"""Recipes from Python (``lebm.from_recipe``): the model, DataModule, Trainer settings and callbacks
of ``lebm fit -c RECIPE``, so that a Trainer built in Python with a user's own callbacks trains
what the command trains. Device: CPU."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lebm
from lebm.callbacks.progress_bar import RunProgressBar
from lebm.cli.app import BATCH_LIMITS
from lebm.cli.recipe_api import override_args
from lebm.cli.recipes import RecipeError
from lebm.models import LatentEBM
from tests.helpers.cli_runner import run_cli

SHORT = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 3,
    "trainer.limit_val_batches": 1,
    "trainer.enable_progress_bar": False,
    "trainer.logger": False,
}


class CountBatches(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_python_trainer_with_own_callbacks_trains_what_lebm_fit_trains(tmp_path: Path) -> None:
    """``L.Trainer(**recipe.trainer_settings, callbacks=[*recipe.callbacks, mine])`` on the quickstart
    ends with the same weights, bit for bit, as ``lebm fit -c quickstart`` with the same settings,
    runs the user's callback, and keeps the command's integer batch limit (3 batches, not 3.0 epochs)."""
    overrides = {**SHORT, "trainer.default_root_dir": str(tmp_path / "python")}
    recipe = lebm.from_recipe("quickstart", overrides)
    assert isinstance(recipe.model, LatentEBM)
    assert recipe.trainer_settings["inference_mode"] is False
    assert recipe.trainer_settings["limit_train_batches"] == 3
    assert recipe.config["trainer"]["max_epochs"] == 1 and "model" in recipe.config
    mine = CountBatches()
    trainer = L.Trainer(**recipe.trainer_settings, callbacks=[*recipe.callbacks, mine])
    trainer.fit(recipe.model, datamodule=recipe.datamodule)
    assert mine.batches == 3
    assert (tmp_path / "python" / "config.yaml").is_file(), "the recipe's callbacks save the run's config"

    command_run = tmp_path / "command"
    run_cli("fit", "-c", "quickstart", *override_args({**SHORT, "trainer.default_root_dir": str(command_run)}))
    saved = torch.load(command_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    trained = recipe.model.state_dict()
    assert saved.keys() == trained.keys()
    assert all(torch.equal(saved[name], trained[name].cpu()) for name in saved)


def test_recipe_trainer_adds_callbacks_and_overrides() -> None:
    """``recipe.trainer(callbacks=[...], max_epochs=2)``: the recipe's callbacks plus the user's, and
    the override."""
    recipe = lebm.from_recipe("quickstart", SHORT)
    mine = CountBatches()
    trainer = recipe.trainer(callbacks=[mine], max_epochs=2)
    assert trainer.max_epochs == 2 and mine in trainer.callbacks
    assert all(callback in trainer.callbacks for callback in recipe.callbacks)
    shown = recipe.trainer(enable_progress_bar=True).progress_bar_callback
    assert isinstance(shown, RunProgressBar)  # the command's bar, without v_num
    alone = CountBatches()
    assert alone in recipe.trainer(callbacks=alone).callbacks  # one callback, as lightning.Trainer takes it


def test_a_smoke_test_from_python_writes_nothing_into_the_run_folder(tmp_path: Path, capsys) -> None:
    """``recipe.trainer(fast_dev_run=True).fit(...)``, as ``lebm fit --trainer.fast_dev_run true``:
    no config.yaml, image or checkpoint in the run folder (the recipe's checkpoint callback writes to
    a copy's folder under the smoke test's), said in one line; the recipe's callback is unchanged."""
    run = tmp_path / "run"
    recipe = lebm.from_recipe("quickstart", {**SHORT, "trainer.default_root_dir": str(run)})
    checkpoints = [callback for callback in recipe.callbacks if isinstance(callback, ModelCheckpoint)]
    capsys.readouterr()
    recipe.trainer(fast_dev_run=True).fit(recipe.model, datamodule=recipe.datamodule)
    said = capsys.readouterr().err
    assert not run.exists() or not any(run.rglob("*")), sorted(run.rglob("*"))
    assert f"writes nothing into {run}" in said
    assert checkpoints and all(callback.dirpath == str(run / "checkpoints") for callback in checkpoints)


def test_python_trainers_keep_the_run_folders_rules(tmp_path: Path) -> None:
    """A finished run, then from Python: a smoke test with the recipe's callbacks in a plain
    ``L.Trainer``, and ``recipe.trainer().fit()`` without ``ckpt_path``, are refused in one line
    before writing (no ``last-v1.ckpt``); resuming with ``ckpt_path`` trains on."""
    run = tmp_path / "run"
    recipe = lebm.from_recipe("quickstart", {**SHORT, "trainer.default_root_dir": str(run)})
    recipe.trainer().fit(recipe.model, datamodule=recipe.datamodule)
    before = sorted(path.name for path in (run / "checkpoints").iterdir())
    record = (run / "config.yaml").read_text()
    smoke = L.Trainer(**{**recipe.trainer_settings, "fast_dev_run": True}, callbacks=[*recipe.callbacks])
    with pytest.raises(ValueError, match=r"recipe\.trainer\(fast_dev_run=True\)") as refused:
        smoke.fit(recipe.model, datamodule=recipe.datamodule)
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=r"holds checkpoints of run \w+ .*Resume that run with ckpt_path="):
        recipe.trainer().fit(recipe.model, datamodule=recipe.datamodule)
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == before
    assert (run / "config.yaml").read_text() == record  # the run's record as it wrote it
    recipe.trainer(max_epochs=2).fit(
        recipe.model, datamodule=recipe.datamodule, ckpt_path=str(run / "checkpoints" / "last.ckpt")
    )
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not (run / "fit.lock").exists()  # taken by each fit, gone when it ended
    elsewhere = tmp_path / "elsewhere"  # a new run folder from the same recipe: its checkpoints follow it
    recipe.trainer(default_root_dir=str(elsewhere)).fit(recipe.model, datamodule=recipe.datamodule)
    assert (elsewhere / "checkpoints" / "last.ckpt").is_file()
    assert not [path.name for path in (run / "checkpoints").iterdir() if "-v" in path.name]
    plain = {**recipe.trainer_settings, "default_root_dir": str(tmp_path / "plain")}
    with pytest.raises(ValueError, match=r"holds checkpoints of run"):  # the recipe's callback writes into the run
        L.Trainer(**plain, callbacks=[*recipe.callbacks]).fit(recipe.model, datamodule=recipe.datamodule)


def test_a_checkpoint_callback_from_python_saves_where_the_command_saves(tmp_path: Path) -> None:
    """A user's ``ModelCheckpoint(monitor=...)`` without a folder, beside a logger of another folder:
    it writes into ``<run>/checkpoints`` (not under the logger's folder), and ``best`` is its best."""
    from lightning.pytorch.loggers import CSVLogger

    run = tmp_path / "run"
    recipe = lebm.from_recipe("quickstart", {**SHORT, "trainer.default_root_dir": str(run)})
    mine = ModelCheckpoint(monitor="val/nll", filename="best-nll")
    trainer = recipe.trainer(callbacks=[mine], logger=CSVLogger(tmp_path / "logs"), check_val_every_n_epoch=1)
    trainer.fit(recipe.model, datamodule=recipe.datamodule)
    assert (run / "checkpoints" / "best-nll.ckpt").is_file() and not list((tmp_path / "logs").rglob("*.ckpt"))
    assert trainer.checkpoint_callback is mine and mine.best_model_path == str(run / "checkpoints" / "best-nll.ckpt")


def test_a_monitored_checkpoint_from_python_saves_after_the_last_epochs_validation(tmp_path: Path) -> None:
    """The quickstart validates every 10th epoch; a 1-epoch fit validates its last epoch anyway (lebm's
    final validation). A user's ``ModelCheckpoint(monitor="val/nll", save_last=True)`` saves there,
    under the command's names (``best-val_nll-...``), no ``-v1`` copy beside lebm's checkpoints."""
    run = tmp_path / "run"
    recipe = lebm.from_recipe("quickstart", {**SHORT, "trainer.default_root_dir": str(run)})
    assert recipe.trainer_settings["check_val_every_n_epoch"] > 1
    mine = ModelCheckpoint(monitor="val/nll", save_last=True)
    trainer = recipe.trainer(callbacks=[mine])
    trainer.fit(recipe.model, datamodule=recipe.datamodule)
    assert trainer.check_val_every_n_epoch == recipe.trainer_settings["check_val_every_n_epoch"]  # given back
    saved = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert saved == ["best-val_nll-epoch=0-step=3.ckpt", "best-val_nll-last.ckpt", "epoch=0-step=3.ckpt", "last.ckpt"]
    assert mine.best_model_path == str(run / "checkpoints" / "best-val_nll-epoch=0-step=3.ckpt")


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("quickstrat", None, "nearest: quickstart"),
        ("quickstart", {"model.init_args.decoder_lrr": 1.0}, "did you mean 'decoder_lr'"),
        ("quickstart", {"model.init_args.decoder_lr": -1.0}, "decoder_lr must be"),
    ],
    ids=["unknown-recipe", "misspelt-option", "bad-value"],
)
def test_mistakes_raise_the_commands_message(name: str, overrides: Any, message: str) -> None:
    """An unknown recipe, a misspelt option and a bad value raise ``RecipeError`` with the message
    the command prints, not a SystemExit."""
    with pytest.raises(RecipeError, match=message):
        lebm.from_recipe(name, overrides)


def test_overrides_as_arguments_or_a_mapping() -> None:
    """A mapping becomes ``--key=<JSON>``; a list of arguments passes as it is; one string is refused."""
    assert override_args({"trainer.max_epochs": 3, "model.init_args.betas": [0.5, 0.9]}) == [
        "--trainer.max_epochs=3",
        "--model.init_args.betas=[0.5, 0.9]",
    ]
    assert override_args(["--trainer.max_epochs", "3"]) == ["--trainer.max_epochs", "3"]
    with pytest.raises(TypeError):
        override_args("--trainer.max_epochs 3")


QUIET_BUILD = {"trainer.logger": False, "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False}


def command_trainer(monkeypatch: pytest.MonkeyPatch, run: Path, overrides: dict[str, Any]) -> L.Trainer:
    """The Trainer ``lebm fit -c quickstart <overrides>`` builds, caught at ``fit`` (which then returns)."""
    built: list[L.Trainer] = []

    @functools.wraps(L.Trainer.fit)  # the parser reads fit's signature for the command's options
    def caught(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        built.append(trainer)

    with monkeypatch.context() as patch:
        patch.setattr(L.Trainer, "fit", caught)
        run_cli("fit", "-c", "quickstart", *override_args({**overrides, "trainer.default_root_dir": str(run)}))
    return built[0]


@pytest.mark.parametrize(
    "setting",
    [
        {
            "trainer.limit_train_batches": 1,
            "trainer.limit_val_batches": 0.5,
            "trainer.limit_test_batches": 1,
            "trainer.limit_predict_batches": 1.0,
        },
        {
            "trainer.limit_train_batches": 1.0,
            "trainer.limit_val_batches": 1,
            "trainer.limit_test_batches": 3,
            "trainer.limit_predict_batches": 1,
            "trainer.max_steps": 5,
        },
        pytest.param({"trainer.max_steps": 5}, marks=pytest.mark.slow),  # every limit left at its default
    ],
    ids=["train-1", "train-1.0", "defaults"],  # each batch limit one batch (1) and another form, one build each
)
def test_trainer_settings_build_the_trainer_lebm_fit_builds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: dict[str, Any]
) -> None:
    """``L.Trainer(**recipe.trainer_settings)`` has the batch limits and step bound of the Trainer
    ``lebm fit`` builds with the same overrides, for each form of a batch limit: ``1`` is one batch
    (it was ``1.0``, the whole epoch, from Python), ``1.0`` the whole epoch, ``0.5`` half of it,
    ``3`` three batches; the four limits take the forms in turn."""
    overrides = {**QUIET_BUILD, **setting}
    recipe = lebm.from_recipe("quickstart", {**overrides, "trainer.default_root_dir": str(tmp_path / "python")})
    python = L.Trainer(**recipe.trainer_settings)
    command = command_trainer(monkeypatch, tmp_path / "command", overrides)
    for key in (*BATCH_LIMITS, "max_steps", "max_epochs"):
        mine, theirs = getattr(python, key), getattr(command, key)
        assert (mine, type(mine)) == (theirs, type(theirs)), key


def test_a_limit_of_no_batch_is_refused_alike(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    """``limit_train_batches: 0`` trains nothing (Lightning skips training and says nothing): refused
    by ``from_recipe`` and ``lebm fit`` with one line, and by a Trainer built in Python when it fits."""
    overrides = {**QUIET_BUILD, "trainer.limit_train_batches": 0}
    with pytest.raises(RecipeError) as raised:
        lebm.from_recipe("quickstart", {**overrides, "trainer.default_root_dir": str(tmp_path / "python")})
    message = str(raised.value)
    assert "trainer.limit_train_batches=0 trains nothing" in message and "\n" not in message
    capsys.readouterr()
    with pytest.raises(SystemExit):
        command_trainer(monkeypatch, tmp_path / "command", overrides)
    assert capsys.readouterr().err.strip() == f"lebm: error: {message}"
    assert not any((tmp_path / "command" / name).exists() for name in ("config.yaml", "checkpoints", "wandb"))
    recipe = lebm.from_recipe("quickstart", {**QUIET_BUILD, "trainer.default_root_dir": str(tmp_path / "python")})
    for limit in ({"limit_train_batches": 0}, {"max_steps": 0}, {"max_epochs": 0}):
        with pytest.raises(ValueError, match="trains nothing"):
            recipe.trainer(**limit).fit(recipe.model, datamodule=recipe.datamodule)


def test_best_before_any_fit_from_python_names_the_runs_checkpoints_in_one_line(tmp_path: Path) -> None:
    """CPU. ``recipe.trainer().validate|test|predict(ckpt_path="best")`` before any fit: lebm's one line
    (Lightning's says the checkpoint callback "is not configured to save the best model", which it
    is), naming the run's kept checkpoint to give instead, raised before anything runs; given
    positionally too."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    recipe = lebm.from_recipe("quickstart", {**SHORT, "trainer.default_root_dir": str(run)})
    trainer = recipe.trainer()
    for call in ("validate", "test", "predict"):
        with pytest.raises(ValueError) as refused:
            getattr(trainer, call)(recipe.model, datamodule=recipe.datamodule, ckpt_path="best")
        said = str(refused.value)
        assert "\n" not in said and f"trainer.{call}() follows none" in said, said
        assert str(run / "checkpoints" / "last.ckpt") in said and 'or ckpt_path="last"' in said
        positional = (recipe.model, None, "best") if call != "predict" else (recipe.model, None, None, None, "best")
        with pytest.raises(ValueError, match="follows none"):
            getattr(trainer, call)(*positional)
