"""The `lebm` command end to end: recipes parse, bad configs fail early, quickstart trains and resumes.

The console script runs in subprocesses, as a user runs it, where the process is what is tested: a
composed recipe read by the installed command, two processes launched by ``--trainer.devices 2``,
and a refusal raised after the run is built. Every other command runs in this process (``main``, as
the console script calls it, from the test's own folder): starting Python, torch and Lightning anew
for each command would test the import again, not the command (the installed wheel's console script
trains, loads and generates in ``tests/test_installed_wheel.py``; runs killed by SIGTERM resume
through it in the requeue loop of ``tests/cli/test_run_life.py``)."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.cli_runner import SHORT_RUN, run_cli, run_cli_output
from tests.helpers.subprocesses import HANG_SECONDS
from tests.test_recipes import runnable_recipes

pytestmark = pytest.mark.slow  # short trainings end to end, and console scripts (each imports torch anew)

REPO = Path(__file__).resolve().parents[2]
RECIPES = runnable_recipes()


def lebm(*args: str, timeout: int = HANG_SECONDS, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "lebm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_there_are_recipes_for_every_paper_experiment() -> None:
    for name in ("svhn", "cifar10", "celeba64", "mnist_anomaly"):
        assert f"recipes/latent_ebm/{name}.yaml" in RECIPES
        assert f"recipes/multistage_nce/{name}.yaml" in RECIPES
    assert "recipes/quickstart.yaml" in RECIPES
    assert "recipes/multistage_nce/quickstart.yaml" in RECIPES


def test_a_composed_recipe_parses_through_the_console_script() -> None:
    """Every recipe parses in-process (tests/test_recipes.py); this is the installed command's path."""
    result = lebm("fit", "-c", "recipes/latent_ebm/svhn.yaml", "--print_config")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "class_path: lebm.models.LatentEBM" in result.stdout and "include:" not in result.stdout.split("model:")[0]


def refused(capsys: pytest.CaptureFixture, *args: str) -> str:
    """``lebm <args>`` in this process, which must exit with a non-zero status: its errors."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli(*args)
    assert done.value.code not in (0, None)
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model.init_args.no_such_option", "1"], "no_such_option"),
        (["--model.init_args.decoder_lr", "fast"], "decoder_lr"),
        (["--trainer.max_epochs", "many"], "max_epochs"),
    ],
)
def test_bad_config_fails_before_training_with_a_readable_message(
    tmp_path: Path, args: list[str], expected: str, capsys: pytest.CaptureFixture
) -> None:
    error = refused(capsys, "fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path), *args)
    assert expected in error
    assert "Traceback" not in error
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_key_in_a_recipe_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(f"include: [{REPO / 'recipes/quickstart.yaml'}]\ntrainer:\n  max_epoch: 3\n")
    assert "max_epoch" in refused(capsys, "fit", "-c", str(path), "--trainer.default_root_dir", str(tmp_path))


def test_missing_data_folder_fails_before_training_through_the_console_script(tmp_path: Path) -> None:
    """The one refusal run as a user runs it: raised once Lightning has built the run, it still
    reaches the console as one message, without a traceback."""
    missing = tmp_path / "no_svhn_here"
    result = lebm(
        "fit",
        "-c",
        "recipes/latent_ebm/svhn.yaml",
        "--data.init_args.root",
        str(missing),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    )
    assert result.returncode != 0
    assert str(missing) in result.stderr and "train_32x32.mat" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_recipe_without_data_root_says_how_to_pass_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    error = refused(capsys, "fit", "-c", "recipes/latent_ebm/svhn.yaml", "--trainer.default_root_dir", str(tmp_path))
    assert "root" in error


def test_quickstart_end_to_end_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.default_root_dir",
        str(run),
        *SHORT_RUN,
        "--trainer.log_every_n_steps",
        "1",
    ]
    first = run_cli_output("fit", *common, "--trainer.max_epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / "config.yaml").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert glob.glob(str(run / "images" / "samples_epoch*.png"))
    assert glob.glob(str(run / "images" / "reconstructions_epoch*.png"))
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    (wandb_file,) = glob.glob(str(run / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    logged = Path(wandb_file).read_bytes()  # an offline run keeps its scalars in this binary file
    for key in (b"train/decoder_nll", b"train/prior_loss", b"val/mse", b"samples", b"reconstructions"):
        assert key in logged, key
    first_ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # 2 epochs x 3 batches, one step each (whatever the number of nets)
    assert first_ckpt["epoch"] == 1 and first_ckpt["global_step"] == 2 * 3

    second = run_cli_output("fit", *common, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 3 * 3
    assert (run / "wandb_run_id.txt").read_text().strip() == run_id  # the same W&B run continues
    assert len(glob.glob(str(run / "wandb" / f"offline-run-*-{run_id}"))) == 2

    from lebm.models import LatentEBM

    model = LatentEBM.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert model.generate(4).shape == (4, 1, 8, 8)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert model.reconstruct(x).shape == x.shape and model.score(x).shape == (3,)

    tested = run_cli_output("test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/mse" in tested.stdout


def test_devices_two_runs_ddp_through_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    result = lebm(
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.enable_progress_bar",
        "false",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert len(glob.glob(str(run / "wandb" / "offline-run-*"))) == 1  # rank 0 alone logs
    assert "deprecated" not in output  # Lightning's all_gather warned once per rank (issue 34)


EVALUATION_CALLBACKS = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true}
    - class_path: lebm.callbacks.ReconstructionMSE
    - class_path: lebm.callbacks.AnomalyDetection
      init_args: {anomaly_classes: [1], last_k: 2}
    - class_path: lebm.callbacks.FID
      init_args:
        num_samples: 64
        num_reference: 128
        batch_size: 32
        feature_extractor:
          class_path: lebm.metrics.SmallConvFeatures
          init_args: {seed: 0}
"""


def test_evaluation_metrics_through_the_cli(tmp_path: Path) -> None:
    extra = tmp_path / "evaluation.yaml"
    extra.write_text(EVALUATION_CALLBACKS)
    run = tmp_path / "run"
    common = [
        "-c",
        "recipes/quickstart.yaml",
        "-c",
        str(extra),
        "--trainer.default_root_dir",
        str(run),
        "--trainer.limit_train_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    fitted = run_cli_output("fit", *common, "--trainer.max_epochs", "2")
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    (wandb_file,) = glob.glob(str(run / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    logged = Path(wandb_file).read_bytes()
    for key in (b"val/fid", b"val/mse", b"val/auprc", b"val/auprc_last_k_mean"):
        assert key in logged, key
    tested = run_cli_output("test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert tested.returncode == 0, tested.stderr[-3000:]
    for key in ("test/auprc", "test/auroc", "test/mse", "test/fid"):
        assert key in tested.stdout, key
    # 4 updates: untrained, said on the console and in the run folder, and never pointed at the paper
    assert "untrained regime" in tested.stderr and "paper" not in tested.stderr
    (kept,) = [json.loads(line) for line in (run / "test_readings.jsonl").read_text().splitlines()]
    assert kept["untrained"] is True and kept["updates"] == 4 and kept["ckpt_path"].endswith("last.ckpt")
    assert {"auprc", "auroc", "chance", "no_model", "line", "date"} <= kept.keys()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    readings = [row for row in rows if row.get("val/auprc")]
    assert [(row["val/updates"], row["val/untrained"]) for row in readings] == [("2", "1"), ("4", "1")]


def test_multistage_nce_quickstart_end_to_end_resumes_mid_stage(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        "-c",
        "recipes/multistage_nce/quickstart.yaml",
        "--trainer.default_root_dir",
        str(run),
        *SHORT_RUN,
        "--trainer.log_every_n_steps",
        "1",
        "--model.init_args.stage_iterations",
        "2",
    ]
    first = run_cli_output("fit", *common, "--trainer.max_epochs", "2")  # 6 iterations: stages 0-2 done, 3 not begun
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training ended with 3 of 4 stages completed" in first.stderr
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["prior.stage_state"].tolist() == [3, 0]
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    (wandb_file,) = glob.glob(str(run / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    for key in (b"train/nce_loss", b"train/logit_pos", b"train/stage", b"val/mse", b"samples"):
        assert key in Path(wandb_file).read_bytes(), key

    second = run_cli_output("fit", *common, "--trainer.max_epochs", "5", "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["state_dict"]["prior.stage_state"].tolist() == [4, 0]
    assert resumed["epoch"] == 2  # the last stage's 2 iterations fit in epoch 3: it stopped there, not at 5

    from lebm.models import MultiStageNCE

    model = MultiStageNCE.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert model.prior.finished and model.generate(4).shape == (4, 1, 8, 8)
    tested = run_cli_output("test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "test/mse" in tested.stdout
