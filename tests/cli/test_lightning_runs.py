"""Lightning's run flags and loggers under the ``lebm`` command (device: CPU; the command in this process).

No silent traps: ``fast_dev_run`` leaves nothing in the run folder (the real run that follows starts
as a new run), ``overfit_batches`` trains that many batches, flags lebm overrides say so in one
line. Loggers get the whole run: the logger's config holds the resolved config nested as in
``config.yaml`` (trainer settings, seed, callbacks), ``config.yaml`` is attached to the W&B run,
CSV/TensorBoard need no ``save_dir`` and keep ``config.yaml`` at the run folder's root; a monitored
name that nothing logs fails in one line; an extra ``ModelCheckpoint`` gets its own file names.
Every case checks the effect (batches trained, files written, the logger's config), not only the
exit code.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lebm.cli.trainer_flags import strategy_note, unlogged_monitor
from lebm.training.monitoring import check_monitors, declared_names, matches
from tests.helpers.cli_runner import run_cli
from tests.helpers.run_spies import BatchCounter, LoggerConfigSpy
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, toy_loader

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
#: The quickstart validates every 10th epoch: these runs validate every epoch.
QUIET += ["--trainer.check_val_every_n_epoch", "1"]
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


@pytest.fixture(autouse=True)
def _one_wandb_run_per_command() -> None:
    """Each command in this process gets its own W&B run (a process that exits ends its run)."""
    yield
    if importlib.util.find_spec("wandb") is not None:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def fit(run: Path, *extra: str) -> None:
    """``lebm fit -c recipes/quickstart.yaml`` into ``run``, quiet, with ``extra`` arguments."""
    run_cli("fit", "-c", "recipes/quickstart.yaml", *QUIET, "--trainer.default_root_dir", str(run), *extra)


def stopped(capsys: pytest.CaptureFixture, run: Path, *extra: str) -> str:
    """The stderr of a ``fit`` that must stop with exit code 2 (no traceback: a ``SystemExit``)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        fit(run, *extra)
    assert stop.value.code == 2
    return capsys.readouterr().err


def lebm_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("lebm:")]


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")} if folder.exists() else set()


def smoke_folders() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("lebm-fast_dev_run-")}


# ------------------------------------------------------------------------------- no silent traps
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_fast_dev_run_leaves_nothing_and_the_real_run_starts_fresh(capsys, tmp_path: Path) -> None:
    """The user's sequence: a smoke test, then the real run into the same folder, then a resume."""
    run = tmp_path / "run"
    before = smoke_folders()
    capsys.readouterr()
    fit(run, "--trainer.fast_dev_run", "true", "--trainer.limit_train_batches", "3")
    err = capsys.readouterr().err
    (note,) = [line for line in lebm_lines(err) if "--trainer.fast_dev_run" in line]
    assert f"writes nothing into {run}" in note and "--trainer.limit_train_batches 3 not used" in note
    assert files_under(run) == set()  # no last.ckpt, no config.yaml, no W&B id: nothing to trip on
    assert smoke_folders() == before  # its temporary folder is gone too

    fit(run, *SHORT, "--trainer.callbacks+=tests.helpers.run_spies.BatchCounter")  # the real run
    err = capsys.readouterr().err
    assert "already holds a run" not in err and "failed start" not in err
    assert BatchCounter.seen["train"] == [2]  # its own limits, not the smoke test's
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0

    mtime = last.stat().st_mtime_ns
    fit(run, "--trainer.fast_dev_run", "true", "--ckpt_path", "last")  # a smoke test of the run itself
    assert last.stat().st_mtime_ns == mtime and not (run / "checkpoints" / "last-v1.ckpt").exists()

    fit(run, *SHORT, "--trainer.max_epochs", "2", "--ckpt_path", "last")  # resumes the real run, not a smoke test
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    "given,batches",
    [
        (
            [
                "--trainer.overfit_batches",
                "2",
                "--trainer.limit_train_batches",
                "4",
                "--trainer.limit_val_batches",
                "1",
            ],
            2,
        ),
        (["--trainer.overfit_batches", "1"], 1),  # an integer means batches, not the whole epoch
    ],
)
def test_overfit_batches_trains_and_validates_that_many_batches(capsys, tmp_path: Path, given, batches) -> None:
    capsys.readouterr()
    counter = "--trainer.callbacks+=tests.helpers.run_spies.BatchCounter"
    fit(tmp_path / "run", "--trainer.max_epochs", "2", "--trainer.logger", "false", *given, counter)
    assert BatchCounter.seen == {"train": [batches, batches], "val": [batches, batches]}
    err = capsys.readouterr().err
    if "--trainer.limit_train_batches" in given:
        (note,) = [line for line in lebm_lines(err) if "--trainer.overfit_batches" in line]
        assert "--trainer.limit_train_batches 4 and --trainer.limit_val_batches 1 not used" in note


def test_enable_checkpointing_false_leaves_out_the_recipe_checkpoint_in_one_line(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    capsys.readouterr()
    fit(run, *SHORT, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false")
    (note,) = [line for line in lebm_lines(capsys.readouterr().err) if "--trainer.enable_checkpointing" in line]
    assert "ModelCheckpoint is left out" in note
    assert not (run / "checkpoints").exists() and (run / "config.yaml").exists()


def test_a_ddp_strategy_that_lebm_replaces_says_so() -> None:
    assert "--trainer.strategy ddp runs as lebm_ddp" in strategy_note("ddp", "lebm_ddp")
    assert strategy_note("auto", "lebm_ddp") is None and strategy_note("lebm_ddp", "lebm_ddp") is None


# ------------------------------------------------------------------------------ loggers: the whole run
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb (a dependency of lebm) is not installed")
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_wandb_run_holds_the_whole_config_and_config_yaml(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(run, *SHORT, "--trainer.callbacks+=tests.helpers.run_spies.LoggerConfigSpy")
    config = LoggerConfigSpy.seen
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 1 and config["trainer"]["limit_train_batches"] == 2
    assert config["seed_everything"] == saved["seed_everything"] == 1
    assert [c["class_path"] for c in config["trainer"]["callbacks"]] == [
        c["class_path"] for c in saved["trainer"]["callbacks"]
    ]
    assert config["model"]["init_args"]["prior_lr"] == saved["model"]["init_args"]["prior_lr"]
    assert config["data"] == saved["data"]
    (attached,) = run.glob("wandb/offline-run-*/files/lebm/config.yaml")
    assert attached.read_text() == (run / "config.yaml").read_text()
    import wandb

    wandb.finish()  # as the command's process does when it exits: the run's records are written
    (stored,) = run.glob("wandb/offline-run-*/run-*.wandb")  # what `wandb sync` uploads
    assert b"check_val_every_n_epoch" in stored.read_bytes() and b"seed_everything" in stored.read_bytes()


def test_csv_logger_needs_no_save_dir_and_config_stays_at_the_root(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(run, *SHORT, "--trainer.log_every_n_steps", "1", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger")
    assert (run / "config.yaml").exists()
    assert not list(run.glob("*/version_*/config.yaml"))  # one layout, whichever logger
    (hparams,) = run.glob("quickstart/version_0/hparams.yaml")  # the recipe's logger name, under the run folder
    logged = yaml.safe_load(hparams.read_text())
    assert logged["trainer"]["max_epochs"] == 1 and logged["seed_everything"] == 1
    assert any(c["class_path"].endswith("ModelCheckpoint") for c in logged["trainer"]["callbacks"])
    assert (hparams.parent / "metrics.csv").exists()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    csv_logger, table = saved["trainer"]["logger"]  # the given logger, and lebm's table beside it
    # the record holds no folder of its run (issue 98): read with -c, the folder it lies in fills it
    assert "save_dir" not in csv_logger["init_args"] and "save_dir" not in table["init_args"]
    assert table["class_path"] == "lebm.loggers.MetricsTable" and (run / "metrics.csv").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None,
    reason="TensorBoardLogger needs tensorboard or tensorboardX, not installed here",
)
def test_tensorboard_logger_needs_no_save_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(run, *SHORT, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger")
    assert (run / "config.yaml").exists() and list(run.glob("quickstart/version_0/events.out.tfevents.*"))
    (hparams,) = run.glob("quickstart/version_0/hparams.yaml")
    assert yaml.safe_load(hparams.read_text())["trainer"]["max_epochs"] == 1


# ------------------------------------------------------------------------------------ monitors
def test_monitoring_a_name_lebm_does_not_log_fails_at_build_in_one_line(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    err = stopped(
        capsys,
        run,
        *SHORT,
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor",
        "val/loss",
    )
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("lebm: error: could not build the run: EarlyStopping(monitor='val/loss')")
    assert "val/nll" in line and "train/decoder_nll" in line and "Traceback" not in err
    assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()  # nothing started


def test_a_monitor_unknown_at_build_fails_in_one_line_after_validation(capsys, tmp_path: Path) -> None:
    """A user's callback (which declares nothing) makes the run's names unknown at build: Lightning's
    error after the first validation is one line too."""
    err = stopped(
        capsys,
        tmp_path / "run",
        *SHORT,
        "--trainer.logger",
        "false",
        "--trainer.callbacks+=tests.helpers.run_spies.BatchCounter",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.monitor",
        "val/loss",
    )
    (line,) = lebm_lines(err)
    assert line.startswith("lebm: error: EarlyStopping(monitor='val/loss'): the run did not log 'val/loss'")
    assert "val/nll" in line and "Traceback" not in err


def test_lightnings_monitor_errors_become_one_line() -> None:
    checkpoint = RuntimeError(
        "`ModelCheckpoint(monitor='val/x')` could not find the monitored key in the returned metrics: "
        "['val/nll', 'epoch', 'step']. HINT: Did you call `log('val/x', value)` in the `LightningModule`?"
    )
    assert unlogged_monitor(checkpoint) == (
        "ModelCheckpoint(monitor='val/x'): the run did not log 'val/x'; it logged: val/nll, epoch, step"
    )
    assert unlogged_monitor(RuntimeError("CUDA out of memory")) is None


def test_an_extra_model_checkpoint_gets_its_own_file_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(
        run,
        *SHORT,
        "--trainer.max_epochs",
        "2",
        "--trainer.logger",
        "false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.monitor",
        "val/nll",
        "--trainer.callbacks.save_last",
        "true",
    )
    names = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert not [name for name in names if re.search(r"-v\d+\.ckpt$", name)]  # no Lightning copies beside lebm's
    assert "last.ckpt" in names and "best-val_nll-last.ckpt" in names
    assert "epoch=1-step=4.ckpt" in names  # lebm's own, the latest epoch's
    assert [name for name in names if re.fullmatch(r"best-val_nll-epoch=\d-step=\d\.ckpt", name)]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    filenames = [c["init_args"].get("filename") for c in saved["trainer"]["callbacks"] if "filename" in c["init_args"]]
    assert "best-val_nll-{epoch}-{step}" in filenames  # recorded: the same command names them the same


def test_a_users_checkpoint_naming_lebms_folder_by_a_relative_path_gets_its_own_names(
    tmp_path: Path, monkeypatch
) -> None:
    """``recipe.trainer(callbacks=[ModelCheckpoint(...)])`` with a relative run folder: the user's
    callback gets ``<run>/checkpoints`` relative, lebm's holds it absolute; one folder, so the
    user's files get their own names (no ``last-v1.ckpt``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lebm.cli.trainer_flags import name_extra_last_checkpoints

    monkeypatch.chdir(tmp_path)
    lebms = ModelCheckpoint(dirpath=str(tmp_path / "run" / "checkpoints"), save_last=True)
    users = ModelCheckpoint(monitor="val/nll", save_last=True)
    users.dirpath = "run/checkpoints"  # as recipe.trainer() gives one without a folder: the run folder, relative
    name_extra_last_checkpoints([lebms, users], files_too=True)
    assert users.CHECKPOINT_NAME_LAST == "best-val_nll-last" and users.filename == "best-val_nll-{epoch}-{step}"


# --------------------------------------------------- what each method declares is what it logs
@pytest.mark.parametrize("case", [case for case in CASES if case.in_library], ids=lambda case: case.name)
def test_every_name_a_method_logs_is_declared(case, tmp_path: Path) -> None:
    """Training and validation on the 2-D toy with every step handed to Lightning: each name in
    ``trainer.callback_metrics`` matches the method's ``logged_metric_names`` (else the build-time
    check would refuse a correct monitor)."""
    model = case.build()
    trainer = quiet_trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1
    )
    trainer.fit(model, toy_loader(), toy_loader(n_batches=1))
    logged = set(trainer.callback_metrics)
    assert {name for name in logged if name.startswith("train/")} and {"val/nll"} <= logged
    names = declared_names(model)
    assert names is not None
    assert [name for name in logged if not matches(name, names)] == []


def test_a_python_trainer_with_an_unlogged_monitor_is_refused_before_training() -> None:
    model = CASES[0].build()
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1, callbacks=[EarlyStopping(monitor="val/loss")])
    with pytest.raises(ValueError, match=r"EarlyStopping\(monitor='val/loss'\).*they log: .*val/nll"):
        trainer.fit(model, toy_loader(), toy_loader(n_batches=1))
    assert trainer.global_step == 0
    check_monitors(model, [ModelCheckpoint(monitor="step", mode="max", save_top_k=2)])  # Lightning's own names


def test_a_user_subclass_that_logs_more_is_not_refused() -> None:
    """A subclass that changes a logging hook may log names its base does not declare: unknown, not refused."""

    class Logs(type(CASES[0].build())):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            self.log("train/mine", 1.0)
            return super().training_step(batch, batch_idx)

    assert declared_names(Logs.__new__(Logs)) is None


def test_every_lebm_callback_that_logs_declares_its_names() -> None:
    """A callback of lebm's without ``logged_metric_names`` is taken to log nothing: one that calls
    ``pl_module.log`` must declare what."""
    folder = Path(__file__).resolve().parents[2] / "lebm" / "callbacks"
    undeclared = []
    for path in sorted(folder.glob("*.py")):
        for block in re.split(r"\n(?=class )", path.read_text())[1:]:
            if "pl_module.log(" in block and "def logged_metric_names" not in block:
                undeclared.append(f"{path.name}: {block.split('(', 1)[0]}")
    assert undeclared == []


def test_a_callback_of_lebm_that_logs_nothing_is_known(tmp_path: Path) -> None:
    from lebm.callbacks import SampleGrid

    assert declared_names(SampleGrid(n=4)) == () and declared_names(L.Callback()) == ()
    assert declared_names(BatchCounter()) is None  # a user's: unknown
