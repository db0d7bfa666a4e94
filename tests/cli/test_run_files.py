"""What a default ``lebm fit`` leaves to read without a W&B account (device: CPU): the logged numbers
as ``metrics.csv`` (training rows and the final validation, also in a 1-epoch run of a recipe that
validates every 10th), ``curves.png``, a loss in the progress bar, a text run's sentences in
``samples/*.txt``; and ``run_cli`` runs in the test's own folder, never in the clone."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import cli_runner
from tests.helpers.cli_runner import run_cli
from tests.helpers.run_spies import ProgressBarSpy

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "12", "--trainer.limit_val_batches", "1"]


def table(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.usefixtures("one_thread")
def test_a_default_run_leaves_its_numbers_curves_and_a_loss_in_the_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    spy = "--trainer.callbacks+=tests.helpers.run_spies.ProgressBarSpy"
    run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *SHORT, spy)
    rows = table(run)
    assert any(row["train/decoder_nll"] for row in rows)  # at least one row of training numbers
    assert rows[-1]["val/nll"] and rows[-1]["val/mse"]  # the final validation (the recipe validates every 10th)
    assert (run / "curves.png").stat().st_size > 10_000
    assert (run / "wandb").is_dir()  # beside the recipe's logger, not instead of it
    assert {"train/decoder_nll", "train/prior_loss", "val/nll"} <= ProgressBarSpy.seen
    assert "numbers " + str(run / "metrics.csv") in capsys.readouterr().err  # the closing line says where


@pytest.mark.usefixtures("one_thread")
def test_a_one_epoch_text_run_writes_its_sentences(tmp_path: Path) -> None:
    run = tmp_path / "text"
    args = ["-c", "recipes/latent_ebm/text_quickstart.yaml", "--trainer.default_root_dir", str(run)]
    run_cli("fit", *args, *SHORT, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false")
    generated = (run / "samples" / "generated_epoch0000.txt").read_text().splitlines()
    assert generated[0].startswith("# epoch 0: 20 sentences of generate(n); prior chain: Langevin 60 steps")
    assert len(generated) == 21  # a line a sentence (an ancestral sample may be empty after one epoch)
    pairs = (run / "samples" / "reconstructions_epoch0000.txt").read_text().splitlines()[1:]
    assert len(pairs) == 40 and all(line.startswith("> ") for line in pairs[1::2])
    assert not any(line.startswith("> ") for line in pairs[::2])


def test_run_cli_runs_in_the_tests_own_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as printed:
        run_cli("fit", "-c", "recipes/quickstart.yaml", "--print_config")  # a relative recipe path resolves there too
    assert printed.value.code == 0
    folder = cli_runner.tests_own_folder()
    assert folder != cli_runner.REPO and cli_runner.REPO not in folder.parents
    assert (folder / "recipes").resolve() == cli_runner.REPO / "recipes"


def test_a_recipes_paper_targets_reach_the_curves_and_every_run_gets_a_table(tmp_path: Path) -> None:
    import lebm
    from lebm.callbacks import LearningCurves
    from lebm.loggers import MetricsTable, WandbLogger

    overrides = {"paper_targets": {"val/fid": 29.44}, "trainer.default_root_dir": str(tmp_path)}
    recipe = lebm.from_recipe("quickstart", overrides)
    assert [c.targets for c in recipe.callbacks if isinstance(c, LearningCurves)] == [{"val/fid": 29.44}]
    loggers = recipe.trainer_settings["logger"]
    assert [type(logger) for logger in loggers] == [WandbLogger, MetricsTable]
    assert loggers[1].path == str(tmp_path / "metrics.csv")
    quiet = lebm.from_recipe("quickstart", {"trainer.logger": False, "trainer.default_root_dir": str(tmp_path)})
    assert quiet.trainer_settings["logger"] is False  # no logger asked: none added


def test_a_recipes_paper_targets_are_values_its_callbacks_log() -> None:
    from lebm.cli.resolve import resolve_recipe
    from lebm.config import build

    drawn = 0
    for recipe in sorted(cli_runner.REPO.glob("recipes/*/[!_]*.yaml")):
        text = recipe.read_text()
        target_line = next((line for line in text.splitlines() if line.startswith("# Paper target:")), "")
        if "paper_targets:" not in text:
            assert not target_line.startswith("# Paper target: FID"), f"{recipe.name}: a FID target with no line"
            continue
        config = resolve_recipe(recipe)
        built = (build(callback) for callback in config["trainer"]["callbacks"])
        logged = {name for callback in built for name in getattr(callback, "logged_metric_names", None) or ()}
        targets = set(config["paper_targets"])
        assert targets <= logged, f"{recipe.name}: {sorted(targets - logged)} are not logged"
        drawn += 1
    assert drawn >= 11


@pytest.mark.usefixtures("one_thread")
def test_an_evaluation_from_the_runs_config_leaves_its_table_and_a_new_run_gets_its_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *SHORT, *quiet)
    table = (run / "metrics.csv").read_bytes()
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    config = str(run / "config.yaml")
    run_cli("test", "-c", config, "--ckpt_path", checkpoint, "--trainer.limit_test_batches", "1", *quiet)
    assert (run / "metrics.csv").read_bytes() == table  # lebm test logs to the run's loggers, not its table
    other = tmp_path / "other"
    run_cli("fit", "-c", config, "--trainer.default_root_dir", str(other), *quiet)
    assert (run / "metrics.csv").read_bytes() == table
    assert (other / "metrics.csv").is_file()  # a run started from another's config writes its own table
