"""What a default ``lebm fit`` leaves to read without a W&B account (device: CPU): the logged numbers
as ``metrics.csv`` (training rows and the final validation, also in a 1-epoch run of a recipe that
validates every 10th), ``curves.png``, a loss in the progress bar, a text run's sentences in
``samples/*.txt``; and ``run_cli`` runs in the test's own folder, never in the clone."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli_runner
from tests.helpers.cli_runner import run_cli
from tests.helpers.run_spies import ProgressBarSpy

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "12", "--trainer.limit_val_batches", "1"]


def table(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
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
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
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


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_recipes_paper_targets_are_values_its_callbacks_log() -> None:
    from lebm.cli.resolve import resolve_recipe
    from lebm.config import build
    from lebm.training.monitoring import matches

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
        unlogged = [name for name in config["paper_targets"] if not matches(name, logged)]  # "val/auprc*" too
        assert not unlogged, f"{recipe.name}: {unlogged} are not logged"
        drawn += 1
    assert drawn >= 17  # the FID recipes and six MNIST anomaly recipes


def test_a_paper_target_per_held_out_digit_is_the_value_of_the_runs_digit(tmp_path: Path) -> None:
    """``{held_out: {digit: value}}`` resolved against ``data.init_args.anomaly_classes`` when the run
    is built (keys as YAML or JSON write them); a digit without a value draws no line, and says so."""
    import lebm
    from lebm.callbacks import LearningCurves
    from lebm.cli.loggers import resolve_paper_targets, unpublished_note
    from tests.helpers.dataset_files import write_idx_splits, write_mnist_csv

    published = {"val/auprc": {"held_out": {1: 0.336, 4: 0.63, 5: 0.619}}, "val/mse": 0.01}
    assert resolve_paper_targets(published, [4]) == {"val/auprc": 0.63, "val/mse": 0.01}
    assert resolve_paper_targets({"val/auprc": {"held_out": {"4": 0.63}}}, [4]) == {"val/auprc": 0.63}
    for unpublished in ([3], [1, 4]):  # no value for the digit; several digits held out: no line, no error
        assert resolve_paper_targets(published, unpublished) == {"val/mse": 0.01}
    note = unpublished_note(published, {"val/mse": 0.01}, [3])
    assert note == (
        "paper_targets: no published val/auprc for held-out [3] (published for held-out 1, 4, 5), so curves.png "
        "draws no paper line for it"
    )
    arrays = write_idx_splits(tmp_path / "mnist", n_train=40, n_test=20, compress=True, seed=0)
    write_mnist_csv(tmp_path / "mnist" / "mnist_5k.csv.gz", *arrays["train"], header=False)
    overrides = {
        "data.init_args.root": str(tmp_path / "mnist"),
        "data.init_args.anomaly_classes": [4],
        "trainer.default_root_dir": str(tmp_path / "run"),
    }
    recipe = lebm.from_recipe("latent_ebm/mnist_anomaly_offline", overrides)
    assert [c.targets for c in recipe.callbacks if isinstance(c, LearningCurves)] == [{"val/auprc": 0.63}]
    labels = [c.target_labels for c in recipe.callbacks if isinstance(c, LearningCurves)]
    assert labels == [{"val/auprc": "paper, mean of its last 10 test readings"}]  # LEBM's selection, named
    labelled = {
        "val/auprc": {"held_out": {4: 0.911}, "label": "paper (best of its test readings)"},
        "val/fid": {"value": 9.0},
    }
    assert resolve_paper_targets(labelled, [4]) == {"val/auprc": 0.911, "val/fid": 9.0}
    damc = lebm.from_recipe(
        "damc/mnist_anomaly_offline", {**overrides, "trainer.default_root_dir": str(tmp_path / "d")}
    )
    (curves,) = [c for c in damc.callbacks if isinstance(c, LearningCurves)]
    assert curves.targets == {"val/auprc": 0.911}  # DAMC's line says how the paper selected it
    assert curves.target_labels == {"val/auprc": "paper, best of its test readings"}


#: ``{form: (paper_targets given, the start of the one-line refusal)}``.
MALFORMED_TARGETS: dict[str, tuple[dict[str, Any], str]] = {
    "key": ({"val/auprc": {"heldout": {"1": 0.3}}}, "paper_targets val/auprc must be a number (val/fid: 29.44) or a"),
    "digit": ({"val/auprc": {"held_out": {"one": 0.3}}}, "val/auprc held_out must map held-out digits"),
    "value": ({"val/auprc": {"held_out": {"1": "high"}}}, "paper_targets val/auprc held_out 1 must be a number"),
    "no-anomaly-data": (
        {"val/auprc": {"held_out": {"1": 0.3}}},
        "given per held-out digit, but the run's data has no anomaly_",
    ),
    "flat": ({"val/fid": "low"}, "paper_targets val/fid must be a number (val/fid: 29.44) or a value per held-out"),
}


@pytest.mark.parametrize("form", MALFORMED_TARGETS)
def test_a_malformed_paper_target_is_refused_in_one_line(form: str) -> None:
    """Each malformed form, as the build reads the run's targets (a run without anomaly digits)."""
    from lebm.cli.loggers import resolve_paper_targets

    targets, message = MALFORMED_TARGETS[form]
    with pytest.raises(ValueError) as refused:
        resolve_paper_targets(targets, None)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_malformed_paper_target_stops_the_build_in_one_line(tmp_path: Path) -> None:
    """The refusal reaches ``lebm.from_recipe`` (and ``lebm fit``, which builds the same way) as its
    one line, before anything is built: shown with the form that depends on the run's data."""
    import lebm
    from lebm.cli.recipes import RecipeError

    targets, message = MALFORMED_TARGETS["no-anomaly-data"]
    overrides = {"paper_targets": targets, "trainer.default_root_dir": str(tmp_path)}
    with pytest.raises(RecipeError) as refused:
        lebm.from_recipe("quickstart", overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_run_record_keeps_the_paper_targets_as_given_not_as_resolved() -> None:
    """A run started from ``config.yaml`` with another held-out digit draws that digit's value."""
    from lebm.cli.loggers import without_filled_paper_targets

    curves = {"class_path": "lebm.callbacks.LearningCurves", "init_args": {"targets": {"val/auprc": 0.336}}}
    recorded = {
        "paper_targets": {"val/auprc": {"held_out": {1: 0.336, 4: 0.63}}},
        "data": {"init_args": {"anomaly_classes": [1]}},
        "trainer": {"callbacks": [curves]},
    }
    assert without_filled_paper_targets(recorded)["trainer"]["callbacks"][0]["init_args"]["targets"] is None
    own = {"class_path": "lebm.callbacks.LearningCurves", "init_args": {"targets": {"val/auprc": 0.5}}}
    recorded["trainer"]["callbacks"] = [own]  # targets a user gave stay
    assert without_filled_paper_targets(recorded)["trainer"]["callbacks"][0]["init_args"]["targets"] == {
        "val/auprc": 0.5
    }


@pytest.mark.usefixtures("one_thread")
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_run_that_max_steps_ends_inside_an_epoch_has_its_final_validation_in_its_table(tmp_path: Path) -> None:
    """The quickstart (it validates every 10th epoch) stopped after 2 of an epoch's 3 iterations:
    its table's last row holds the final model's validation values, and curves.png draws them."""
    import yaml

    run = tmp_path / "run"
    budget = ["--trainer.max_steps", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    logged = ["--trainer.logger", "lebm.loggers.MetricsTable", "--paper_targets", "{val/nll: 50.0}"]
    run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *budget, *quiet, *logged)
    rows = table(run)
    assert rows[-1]["val/nll"] and rows[-1]["val/mse"]
    assert (run / "curves.png").stat().st_size > 10_000
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    (curves,) = [c for c in recorded["trainer"]["callbacks"] if c["class_path"].endswith("LearningCurves")]
    assert curves["init_args"]["targets"] is None and recorded["paper_targets"] == {"val/nll": 50.0}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
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
