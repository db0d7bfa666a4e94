"""A run's config reused (device: CPU; the lebm command in this process): the ``config.yaml`` a fit
writes never carries ``ckpt_path``, so ``lebm fit -c <run>/config.yaml`` in another folder starts a
new run there; and a checkpoint file that only a config file names (an older run's record) is not
resumed unasked: the command stops, in one line, before the folder is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli_runner import QUIET, run_cli

RUN = ["fit", "-c", "recipes/quickstart.yaml", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0"]
RUN += [*QUIET]


def steps(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_resumed_runs_config_starts_a_new_run_in_another_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli(*RUN, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(first))
    run_cli(*RUN, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(first), "--ckpt_path", "last")
    assert steps(first) == 4
    assert "ckpt_path" not in yaml.safe_load((first / "config.yaml").read_text())
    run_cli("fit", "-c", str(first / "config.yaml"), "--trainer.default_root_dir", str(second))
    assert steps(second) == 4 and steps(first) == 4  # two epochs from the start, not the first run continued


def test_a_checkpoint_file_only_a_config_names_is_not_resumed_unasked(tmp_path: Path, capsys) -> None:
    old = tmp_path / "old" / "checkpoints" / "last.ckpt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"a checkpoint")
    record = tmp_path / "config.yaml"
    record.write_text(yaml.safe_dump({"ckpt_path": str(old)}))
    run = tmp_path / "new"
    with pytest.raises(SystemExit) as stop:
        run_cli(*RUN, "-c", str(record), "--trainer.default_root_dir", str(run))
    message = capsys.readouterr().err
    assert stop.value.code == 2 and f"gives ckpt_path {old}" in message and "--ckpt_path null" in message, message
    assert not run.exists()  # refused before the folder is made


def test_a_resumed_fits_record_leaves_out_the_checkpoint_it_resumed(tmp_path: Path) -> None:
    """CPU. The record a fit writes (``config.yaml``, by the command's own config callback, at the
    fit's setup) of a fit resumed from a checkpoint keeps its settings and leaves out ``ckpt_path``:
    ``lebm fit -c <run>/config.yaml`` elsewhere starts a new run, not this one's continuation."""
    from lebm.cli.app import LebmArgumentParser, RunConfigSaved
    from tests.helpers.trainers import quiet_trainer

    parser = LebmArgumentParser()
    parser.add_argument("--ckpt_path", type=str | None, default=None)
    parser.add_argument("--seed_everything", type=int, default=0)
    resumed = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    config = parser.parse_args(["--ckpt_path", resumed, "--seed_everything", "3"])
    saver = RunConfigSaved(parser, config, overwrite=True)
    saver.setup(quiet_trainer(default_root_dir=str(tmp_path / "run")), None, "fit")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"seed_everything": 3}


def test_a_copied_runs_record_resumes_the_copy_and_names_the_folder_it_names(tmp_path: Path, capsys) -> None:
    """``cp -a RUN COPY; lebm fit -c COPY/config.yaml --ckpt_path last``, from another folder: the
    record trains in the folder it lies in (the copy), said in one line, and goes on writing its
    ``last.ckpt`` (no ``last-v1.ckpt``); the original is untouched.
    The record holds no W&B id, resume mode or logger folder of its run."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    run_cli(*RUN, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(original))
    record = (original / "config.yaml").read_text()
    assert record.startswith("# lebm run record")
    logger = yaml.safe_load(record)["trainer"]["logger"]
    assert not any(key in (logger.get("init_args") or {}) for key in ("id", "resume", "save_dir")) if logger else True
    shutil.copytree(original, copy)
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_cli("fit", "-c", str(copy / "config.yaml"), "--ckpt_path", "last", "--trainer.max_epochs", "2", cwd=elsewhere)
    assert steps(copy) == 4 and steps(original) == 2
    assert not (copy / "checkpoints" / "last-v1.ckpt").exists()  # the copy's own last.ckpt went on
    said = [line for line in capsys.readouterr().err.splitlines() if "is the record of the run in" in line]
    assert len(said) == 1 and str(copy) in said[0] and str(original) in said[0], said
    assert not (elsewhere / "runs").exists()


def test_a_record_leaves_out_the_logger_settings_of_its_run() -> None:
    from lebm.cli.app import without_run_bound_logger_settings

    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"id": "a1", "resume": "allow"}}
    csv = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs/a", "name": "n"}}
    recorded = without_run_bound_logger_settings({"trainer": {"logger": [wandb, csv]}})
    assert recorded["trainer"]["logger"] == [
        {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "n"}},
    ]


def test_a_record_naming_its_own_folder_relative_to_another_working_folder_says_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``runs/A/config.yaml`` names ``runs/A`` (relative to where the fit ran): read from inside the
    run, it is the same folder, so the record's folder is used without a line."""
    from lebm.cli.app import run_record_args
    from lebm.cli.run_folder import RUN_RECORD_MARK

    run = tmp_path / "runs" / "A"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"{RUN_RECORD_MARK}\ntrainer: {{default_root_dir: runs/A}}\n")
    monkeypatch.chdir(run / "checkpoints")
    args, record = run_record_args(["test", "-c", "../config.yaml"])
    assert args[-2:] == ["--trainer.default_root_dir", str(run)] and record == "../config.yaml"
    assert capsys.readouterr().err == ""


def test_a_folder_a_later_config_file_gives_wins_over_the_records_own(tmp_path: Path) -> None:
    """``-c RUN/config.yaml -c to_x.yaml`` where ``to_x.yaml`` sets ``trainer.default_root_dir``: the
    command gives a folder itself, so the record's folder is not added over it."""
    from lebm.cli.app import run_record_args
    from lebm.cli.run_folder import RUN_RECORD_MARK

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"{RUN_RECORD_MARK}\ntrainer: {{default_root_dir: {run}}}\n")
    (tmp_path / "to_x.yaml").write_text("trainer: {default_root_dir: x}\n")
    given = ["fit", "-c", str(run / "config.yaml"), "-c", str(tmp_path / "to_x.yaml")]
    assert run_record_args(given) == (given, str(run / "config.yaml"))
    expanded = ["fit", "-c", str(run / "config.yaml"), "--config", "trainer:\n  default_root_dir: y\n"]
    assert run_record_args(expanded)[0] == expanded  # an expanded recipe's text names one too
    alone = ["fit", "-c", str(run / "config.yaml")]
    assert run_record_args(alone)[0] == [*alone, "--trainer.default_root_dir", str(run)]


def test_a_record_read_through_a_symbolic_link_to_its_folder_says_nothing(tmp_path: Path, capsys) -> None:
    from lebm.cli.app import run_record_args
    from lebm.cli.run_folder import RUN_RECORD_MARK

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"{RUN_RECORD_MARK}\ntrainer: {{default_root_dir: {run}}}\n")
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    run_record_args(["fit", "-c", str(tmp_path / "link" / "config.yaml")])
    assert capsys.readouterr().err == ""  # the same folder, reached through a link
