"""A newcomer's first hour: each mistake is caught before training with a message that says the
fix, and no run is lost. Each test runs the command a user types (in a subprocess where the process
boundary matters: signals, exit codes, what an installed command imports) and checks the message
and the files left behind."""

from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lebm.nets import GaussianDecoder
from lebm.samplers import Langevin
from tests.helpers.cli_runner import QUIET, REPO, run_cli, run_cli_output, working_folder
from tests.helpers.subprocesses import HANG_SECONDS

QUICK = ["--trainer.limit_val_batches", "1", *QUIET]


def lebm(*args: str, timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "lebm", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def error_of(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run ``lebm args`` in this process, expecting it to stop with exit code 2; its stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(*args)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def nothing_written(run: Path) -> bool:
    return not (run / "config.yaml").exists() and not (run / "checkpoints").exists() and not (run / "wandb").exists()


# ------------------------------------------------------------------- shapes, checked at build time
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--data.init_args.image_size", "16"], "the data are (1, 16, 16) per example but the decoder's generator"),
        (["--data.init_args.channels", "3"], "the data are (3, 8, 8) per example but the decoder's generator"),
        (
            ["--model.init_args.decoder.init_args.net.init_args.latent_dim", "32"],
            "the latent size is 16 (model.init_args.prior.init_args.latent_dim) but the generator (MLPGenerator) "
            "takes latent_dim=32",
        ),
        (
            ["--model.init_args.prior.init_args.energy_net.init_args.in_dim", "8"],
            "the latent size is 16 (model.init_args.prior.init_args.latent_dim) but the prior's energy_net "
            "(EnergyMLP) takes in_dim=8",
        ),
    ],
)
def test_shape_mistakes_are_named_when_the_run_is_built(capsys, tmp_path: Path, args: list[str], expected: str) -> None:
    run = tmp_path / "run"
    message = error_of(capsys, "fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *args)
    assert expected in message and "Traceback" not in message
    assert nothing_written(run)


@pytest.mark.parametrize(
    "option,value,python",
    [
        ("posterior_sampler.init_args.step_size", "1e20", lambda: Langevin(20, 1e20)),
        ("posterior_sampler.init_args.step_size", ".inf", lambda: Langevin(20, math.inf)),
        ("posterior_sampler.init_args.n_steps", "-3", lambda: Langevin(-3, 0.1)),
        ("decoder.init_args.sigma", "1e-30", lambda: GaussianDecoder(torch.nn.Identity(), 1e-30)),
    ],
    ids=["a step size whose square overflows float32", "an infinite step size", "negative steps", "a tiny sigma"],
)
def test_a_parts_own_check_is_the_commands_line(
    capsys, tmp_path: Path, option: str, value: str, python: Callable[[], Any]
) -> None:
    """The command prints the line the part's constructor raises in Python, once, before anything
    is written (a step size of 1e20 crashed in the first chain step)."""
    with pytest.raises(ValueError) as raised:
        python()
    run = tmp_path / "run"
    message = error_of(
        capsys, "fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run),
        f"--model.init_args.{option}", value,
    )  # fmt: skip
    assert message.strip() == f"lebm: error: could not build the run: {raised.value}", message
    assert nothing_written(run)


# --------------------------------------------------------------------------- no run is lost
@pytest.mark.slow
def test_a_short_run_checkpoints_every_epoch_and_draws_grids_at_its_last_without_validating(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = lebm(
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        *QUICK,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    # the quickstart draws grids every 10 epochs and at the last one
    assert [Path(p).name for p in glob.glob(str(run / "images" / "samples_epoch*.png"))] == ["samples_epoch0001.png"]
    assert glob.glob(str(run / "images" / "reconstructions_epoch*.png")) == [
        str(run / "images/reconstructions_epoch0001.png")
    ]
    for noise in ("LeafSpec", "anonymous setting", "Tip:"):  # dependencies' noise is filtered
        assert noise not in result.stderr + result.stdout, noise


#: The settings of the runs that check stopping and resuming: the quickstart recipe on 8 batches an
#: epoch, validated every epoch, with random flips (a data stream a resume must restore), and small
#: batches and short chains: these tests are about the run's mechanics, not the recipe's size.
STOP_AND_RESUME = [
    "-c",
    "recipes/quickstart.yaml",
    "--trainer.accelerator",
    "cpu",
    "--trainer.max_epochs",
    "3",
    "--trainer.limit_train_batches",
    "8",
    *QUICK,
    "--trainer.check_val_every_n_epoch",
    "1",
    "--data.init_args.random_flip",
    "true",
    "--data.init_args.batch_size",
    "20",
    "--model.init_args.prior.init_args.sampler.init_args.n_steps",
    "5",
    "--model.init_args.posterior_sampler.init_args.n_steps",
    "5",
]


def last_checkpoint(run: Path) -> dict[str, Any]:
    """``run``'s ``checkpoints/last.ckpt``, loaded on the CPU."""
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_training(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The two checkpoints hold the same number of steps and bitwise the same parameters."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.fixture(scope="module")
def never_stopped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``last.ckpt`` of a run of :data:`STOP_AND_RESUME` never stopped (in this process), the
    reference of every stopped-and-resumed run of this module."""
    folder = working_folder(tmp_path_factory.mktemp("never_stopped"))
    seed = os.environ.pop("PL_GLOBAL_SEED", None)  # the run sets it: kept from the tests that follow
    try:
        run_cli("fit", *STOP_AND_RESUME, "--trainer.default_root_dir", str(folder / "run"), cwd=folder)
    finally:
        os.environ.pop("PL_GLOBAL_SEED", None)
        if seed is not None:
            os.environ["PL_GLOBAL_SEED"] = seed
    return last_checkpoint(folder / "run")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(
    capfd: pytest.CaptureFixture, tmp_path: Path, never_stopped: dict[str, Any]
) -> None:
    """Killed after batch 5 of epoch 1 (as SLURM or `kill` does; the command in a process of its
    own): exit code 143, a resumable last.ckpt; `--ckpt_path last` then reaches exactly the
    parameters of a run never stopped."""
    extra = tmp_path / "kill.yaml"
    extra.write_text(
        "trainer:\n  callbacks+:\n    - class_path: tests.helpers.cli_runner.SigtermAt\n"
        "      init_args: {epoch: 1, batch: 5}\n"
    )
    run = tmp_path / "killed"
    killed = lebm("fit", *STOP_AND_RESUME, "-c", str(extra), "--trainer.default_root_dir", str(run))
    assert killed.returncode == 143, killed.stderr[-2000:]
    assert "resume with --ckpt_path last" in killed.stderr
    assert "weights_only" not in killed.stderr  # lebm's own save says what it saves: no Lightning note
    mid = last_checkpoint(run)
    assert mid["epoch"] == 1 and mid["global_step"] == 8 + 6  # 8 + 6 batches, one step each

    capfd.readouterr()
    run_cli("fit", *STOP_AND_RESUME, "--trainer.default_root_dir", str(run), "--ckpt_path", "last")
    assert "not resumable" not in capfd.readouterr().err
    assert_same_training(never_stopped, last_checkpoint(run))


@pytest.mark.slow
def test_a_max_steps_stop_inside_an_epoch_resumes_to_the_run_never_stopped(
    tmp_path: Path, never_stopped: dict[str, Any]
) -> None:
    """CPU. Stopped by ``--trainer.max_steps 14`` after batch 6 of epoch 1 (8 a epoch), then resumed
    to 3 epochs: the rest of epoch 1 is trained (Lightning counted the epoch as done and started the
    next: 22 steps, not 24) and its learning rate decays once, so the weights equal the run never
    stopped; the checkpoint says it holds 1 whole epoch and part of the next."""
    from lebm.training.resume import epochs_held

    run = tmp_path / "stopped"
    run_cli("fit", *STOP_AND_RESUME, "--trainer.max_steps", "14", "--trainer.default_root_dir", str(run))
    assert epochs_held(last_checkpoint(run)) == (1, True)
    run_cli("fit", *STOP_AND_RESUME, "--trainer.default_root_dir", str(run), "--ckpt_path", "last")
    resumed = last_checkpoint(run)
    assert never_stopped["global_step"] == resumed["global_step"] == 24
    assert_same_training(never_stopped, resumed)


def one_batch_run(run: Path) -> list[str]:
    """``lebm fit`` of the quickstart into ``run``: one epoch of one batch."""
    return [
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.max_epochs",
        "1",
    ] + ["--trainer.limit_train_batches", "1", *QUICK]


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_folder_with_a_run_is_not_overwritten_by_accident(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = one_batch_run(run)
    run_cli(*first)
    stamp = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    message = error_of(capsys, *first)
    assert "already holds a run" in message and "--ckpt_path last" in message and "--overwrite true" in message
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    run_cli(*first, "--overwrite", "true")  # asked explicitly: a new run in the same folder
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns != stamp


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_resuming_needs_a_checkpoint_unless_auto(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = one_batch_run(run)
    message = error_of(capsys, *args, "--ckpt_path", "last")
    assert "no checkpoint to resume" in message and "--ckpt_path auto" in message
    assert nothing_written(run)
    run_cli(*args, "--ckpt_path", "auto")  # nothing to resume: a new run
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    run_cli(
        *args[: -len(QUICK) - 2],
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "1",
        *QUICK,
        "--ckpt_path",
        "auto",
    )  # now it resumes
    second = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (first["epoch"], second["epoch"]) == (0, 1)


def test_checkpoint_paths_are_checked_before_anything_is_written(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run)]
    message = error_of(capsys, *args, "--ckpt_path", str(tmp_path / "missing.ckpt"))
    assert f"the checkpoint {tmp_path / 'missing.ckpt'} does not exist" in message
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    message = error_of(capsys, "test", "-c", "recipes/quickstart.yaml", "--ckpt_path", str(broken))
    assert "is not a readable lebm checkpoint" in message and "weights_only" not in message
    assert nothing_written(run)


# ------------------------------------------------------------------ messages that say the fix
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model.init_args.betas", "[0.5]"], "model.init_args.betas must be two numbers in [0, 1)"),
        (
            ["--model.init_args.prior_lr", "-1"],
            "model.init_args.prior_lr must be a finite learning rate >= 0, got -1.0",
        ),
        (["--model.init_args.decoder_lr", "nan"], "model.init_args.decoder_lr must be a finite number, got nan"),
        (["--model.init_args.decoder_lr", "fast"], "model.init_args.decoder_lr expects a float, got 'fast'"),
        (
            ["--model.init_args.prior.init_args.sampler.init_args.n_step", "3"],
            "'n_step' is not an option of lebm.samplers.Langevin (did you mean 'n_steps'?)",
        ),
        (
            ["--model.init_args.prior.init_args.sampler.class_path", "lebm.samplers.Langevn"],
            "lebm.samplers has no class 'Langevn' (did you mean 'Langevin'?)",
        ),
        (["--model.init_args.decoder_lrr", "0.1"], "(did you mean 'decoder_lr'?)"),
        (["--trainer.max_epoch", "3"], "'max_epoch' is not an option of the Trainer (did you mean 'max_epochs'?)"),
        (["--trainer.max_epochs", "abc"], "trainer.max_epochs expects an int or null, got 'abc'"),
        (["--data.init_args.batch_size", "1.5"], "data.init_args.batch_size expects an int, got '1.5'"),
        (
            ["--model.init_args.posterior_sampler.init_args.noise_std", "abc"],
            "model.init_args.posterior_sampler.init_args.noise_std expects a float or null, got 'abc'",
        ),
        (
            ["--model.init_args.posterior_sampler.init_args.form", "papr"],
            "model.init_args.posterior_sampler.init_args.form expects one of 'code', 'paper', got 'papr' "
            "(did you mean 'paper'?)",
        ),
        (["--trainer.precision", "17"], "trainer.precision expects one of 64, 32, 16, 'transformer-engine'"),
        (["--trainer.max_epochs", ""], "trainer.max_epochs expects an int or null, got ''"),
        (
            ["--model.init_args.posterior_sampler.init_args.form", ""],
            "model.init_args.posterior_sampler.init_args.form expects one of 'code', 'paper', got ''",
        ),
        (
            ["-c", "model:\n  init_args:\n    prior:\n      init_args:\n        sampler: {init_args: {n_steps: x}}"],
            "model.init_args.prior.init_args.sampler.init_args.n_steps expects an int, got 'x'",
        ),
    ],
)
def test_config_mistakes_get_one_short_message(capsys, tmp_path: Path, args: list[str], expected: str) -> None:
    message = error_of(
        capsys, "fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path / "run"), *args
    )
    assert expected in message, message
    assert len(message.splitlines()) <= 3 and "usage:" not in message and "Given value" not in message


def test_yaml_mistakes_name_the_file_and_the_tab(capsys, tmp_path: Path) -> None:
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text(f"include: [{REPO / 'recipes/quickstart.yaml'}]\ntrainer:\n\tmax_epochs: 3\n")
    assert f"{tabbed}:3: a tab character; YAML indents with spaces only" in error_of(capsys, "fit", "-c", str(tabbed))
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_epochs: [3\nmodel: 1\n")
    assert f"{broken}:3:6: expected ',' or ']'" in error_of(capsys, "fit", "-c", str(broken))


def test_recipe_file_mistakes_get_one_line_each(capsys, tmp_path: Path) -> None:
    """An empty recipe is named as empty (it got ``Unexpected config:`` and nothing after); a key
    written twice is refused with both lines (YAML kept the last in silence); a ``{`` left open to
    the end of the file is reported where it opened; two recipes of different methods are refused,
    naming both; ``recipes copy`` onto a file says so (it was a raw FileExistsError)."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert f"the recipe {empty} is empty (it holds no settings)" in error_of(capsys, "fit", "-c", str(empty))
    twice = tmp_path / "twice.yaml"
    twice.write_text(f"include: [{REPO / 'recipes/quickstart.yaml'}]\ntrainer:\n  max_epochs: 3\n  max_epochs: 5\n")
    message = error_of(capsys, "fit", "-c", str(twice))
    assert f"{twice}: the key 'max_epochs' is written twice, at lines 3 and 4" in message
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("trainer:\n  max_epochs: 3\nmodel: {init_args: {decoder_lr: 0.1}\n\n")
    assert f"{unclosed}:3:8: this '{{' is never closed" in error_of(capsys, "fit", "-c", str(unclosed))
    message = error_of(capsys, "fit", "-c", "quickstart", "-c", "multistage_nce/svhn")
    assert "quickstart.yaml is a recipe of lebm.models.LatentEBM and " in message
    assert "multistage_nce/svhn.yaml one of lebm.models.MultiStageNCE" in message
    existing = tmp_path / "existing.yaml"
    existing.write_text("trainer: {max_epochs: 1}\n")
    message = error_of(capsys, "recipes", "copy", "quickstart", str(existing))
    assert f"{existing} exists and is a file" in message and f"or remove {existing}" in message
    assert "Traceback" not in message


def test_a_command_without_a_recipe_points_to_the_recipes(capsys) -> None:
    message = error_of(capsys, "fit")
    assert "lebm fit -c quickstart" in message and "lebm recipes lists them" in message
    assert "did you mean 'fit'" in error_of(capsys, "fitt", "-c", "recipes/quickstart.yaml")


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_help_and_early_mistakes_do_not_wait_for_lightning() -> None:
    """`lebm --help`, a missing recipe and a missing checkpoint answer before Lightning is imported."""
    code = (
        "import sys\nfrom lebm.cli.main import main\n"
        "main(['--help'])\n"
        "bad = (['fit', '-c', 'no/such/recipe.yaml'],\n"
        "       ['fit', '-c', 'recipes/quickstart.yaml', '--ckpt_path', 'x.ckpt'])\n"
        "for args in bad:\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "assert 'lightning' not in sys.modules, 'Lightning was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_SECONDS
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: lebm {fit,validate,test,predict}" in result.stdout
    assert "no recipe 'no/such/recipe.yaml': it is neither a file here nor the name of a recipe" in result.stderr


# ------------------------------------------------------------- legal but almost surely wrong
@pytest.mark.slow
def test_suspicious_settings_warn_once_each(tmp_path: Path) -> None:
    result = run_cli_output(
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--model.init_args.prior.init_args.sampler.init_args.n_steps",
        "0",
        "--model.init_args.lr_decay",
        "0",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        *QUICK,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Langevin with n_steps=0 returns its starting states unchanged" in result.stderr
    assert "model.init_args.lr_decay=0 sets every learning rate to 0" in result.stderr
    tested = run_cli_output(
        "test",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.default_root_dir",
        str(tmp_path / "t"),
        "--trainer.limit_test_batches",
        "1",
        *QUICK[2:],
    )
    assert tested.returncode == 0 and "without --ckpt_path scores a freshly initialised model" in tested.stderr
    cores = os.cpu_count() or 1
    many = lebm(  # the console script: a refusal moved after the launch must not re-run this test process
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(cores + 1),
        "--data.init_args.dataset",
        "svhn",
        "--trainer.default_root_dir",
        str(tmp_path / "m"),
    )
    assert f"{cores + 1} CPU processes on {cores} cores" in many.stderr  # warned before the run is built
    assert many.returncode == 2 and "no root was given" in many.stderr  # (and stopped, before starting processes)
