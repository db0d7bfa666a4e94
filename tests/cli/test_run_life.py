"""A run folder's life (device: CPU; the lebm command in this process): a failed start never locks
its folder, ``--ckpt_path auto`` works in every state, a corrupt ``last.ckpt`` is passed over by
name, SIGTERM during start-up stops with a message and leaves a folder the same command retries,
and ``limit_*_batches`` integers mean batches. Each case runs the command a user types and checks
the message and the files left behind (nothing lost, nothing locked)."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers.cli_runner import QUIET, run_cli
from tests.helpers.subprocesses import HANG_SECONDS

RUN = ["fit", "-c", "recipes/quickstart.yaml", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
RUN += ["--trainer.limit_val_batches", "0", *QUIET]


def fit(run: Path, *extra: str) -> None:
    run_cli(*RUN, "--trainer.default_root_dir", str(run), *extra)


def stopped(capsys: pytest.CaptureFixture, run: Path, *extra: str, code: int = 2) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        fit(run, *extra)
    assert stop.value.code == code
    return capsys.readouterr().err


def steps(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_a_failed_start_is_set_aside_and_the_same_command_starts_again(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("left by a start that failed\n")
    (run / "wandb_run_id.txt").write_text("abc123")
    (run / "images").mkdir()
    capsys.readouterr()
    fit(run)
    message = capsys.readouterr().err
    assert "holds only the files of a start that wrote no checkpoint" in message and "starting again" in message
    (aside,) = run.glob("failed_start-*")
    assert (aside / "config.yaml").read_text() == "left by a start that failed\n"  # kept, not deleted
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_a_failed_start_that_cannot_be_moved_aside_stops_in_one_line_and_leaves_the_folder_as_found(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An immutable ``curves.png`` (``chattr +i``) refuses its move: one line naming the file and the
    fix, no traceback, nothing half moved, no empty ``failed_start-*`` left behind."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("left by a start that failed\n")
    (run / "curves.png").write_bytes(b"png")
    rename = os.rename

    def immutable_curves(source: str, target: str) -> None:
        if os.path.basename(source) == "curves.png" and os.path.dirname(source) == str(run):
            raise PermissionError(1, "Operation not permitted", source)
        rename(source, target)

    monkeypatch.setattr(os, "rename", immutable_curves)
    message = stopped(capsys, run)
    assert f"{run / 'curves.png'} cannot be moved aside (operation not permitted)" in message
    assert "chattr -i" in message and "Traceback" not in message
    assert (run / "config.yaml").read_text() == "left by a start that failed\n"  # moved back
    assert not list(run.glob("failed_start-*")) and not (run / "checkpoints").exists()


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_auto_starts_resumes_and_passes_over_a_corrupt_last_checkpoint(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(run, "--ckpt_path", "auto")  # nothing there: a new run
    last = run / "checkpoints" / "last.ckpt"
    (epoch_checkpoint,) = (run / "checkpoints").glob("epoch=*.ckpt")
    assert steps(last) > 0
    time.sleep(0.05)
    last.write_bytes(last.read_bytes()[:1000])  # truncated by a kill during a copy
    os.utime(last)
    message = stopped(capsys, run, "--ckpt_path", "last", "--trainer.max_epochs", "2")
    assert "is unreadable" in message and f"--ckpt_path {epoch_checkpoint}" in message
    assert len(last.read_bytes()) == 1000  # nothing written
    capsys.readouterr()
    fit(run, "--ckpt_path", "auto", "--trainer.max_epochs", "2")
    message = capsys.readouterr().err
    assert (
        f"resuming from {epoch_checkpoint}, the intact checkpoint holding the most training; passed over: {last}"
        in (message)
    )
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1  # resumed at epoch 1


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_sigterm_during_start_up_stops_with_a_message_and_the_folder_can_be_retried(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    message = stopped(capsys, run, "--trainer.callbacks+=tests.helpers.cli_runner.SigtermAtSetup", code=143)
    assert "stopped by SIGTERM during start-up" in message and "the same command starts the run again" in message
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").glob("*.ckpt"))
    fit(run)  # the requeued command
    assert (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("written", ["2", "--trainer.limit_train_batches=2"])
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_an_integer_limit_means_batches(tmp_path: Path, written: str) -> None:
    run = tmp_path / "run"
    limit = ["--trainer.limit_train_batches", "1"] if written == "2" else ["--trainer.limit_train_batches=1"]
    fit(run, *limit)
    one = steps(run / "checkpoints" / "last.ckpt")
    fit(tmp_path / "two", "--trainer.limit_train_batches", "2")
    assert steps(tmp_path / "two" / "checkpoints" / "last.ckpt") == 2 * one  # two batches, not the epoch


# ------------------------------------------------------------------ resuming checked against the recipe
def trained(tmp_path: Path) -> tuple[Path, Path, int]:
    run = tmp_path / "run"
    fit(run)
    return run, run / "checkpoints" / "last.ckpt", (run / "config.yaml").stat().st_mtime_ns


@pytest.mark.parametrize(
    "recipe_change,expected",
    [
        (
            ["-c", "recipes/multistage_nce/quickstart.yaml"],
            "was written by LatentEBM, but the recipe builds MultiStageNCE",
        ),
        (
            ["--model.init_args.prior.init_args.energy_net.init_args.hidden", "64"],
            "the recipe's LatentEBM has another architecture than",
        ),
        (
            ["--model.init_args.decoder.init_args.sigma", "0.5"],
            "model.init_args.decoder.init_args.sigma: 0.3 in the checkpoint, 0.5 in the recipe",
        ),
    ],
    ids=["another method", "another architecture", "a fixed setting"],
)
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_resume_that_disagrees_with_the_checkpoint_is_refused_before_anything_is_written(
    capsys, tmp_path: Path, recipe_change: list[str], expected: str
) -> None:
    run, last, config_stamp = trained(tmp_path)
    stamp = last.stat().st_mtime_ns
    args = [*RUN, *recipe_change] if recipe_change[0] != "-c" else [RUN[0], *recipe_change, *RUN[3:]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(*args, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "2", "--ckpt_path", "last")
    message = capsys.readouterr().err
    assert stop.value.code == 2 and expected in message, message
    assert "lebm fit -c " in message and f"{run}/config.yaml" in message  # the way out with the stored settings
    if "architecture" in expected:
        assert "prior.energy_net" in message and "(200" in message and "(64" in message
    assert last.stat().st_mtime_ns == stamp and (run / "config.yaml").stat().st_mtime_ns == config_stamp
    # evaluating with another method or architecture is refused the same way; another setting is evaluated
    test_args = ["test", *args[1:], "--trainer.default_root_dir", str(tmp_path / "tested"), "--ckpt_path", str(last)]
    if "sigma" in expected:
        run_cli(*test_args, "--trainer.limit_test_batches", "1")
        assert "model.init_args.decoder.init_args.sigma 0.3 -> 0.5" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit):
        run_cli(*test_args)
    assert expected in capsys.readouterr().err


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_scoring_a_run_with_its_own_config_keeps_how_it_was_trained(tmp_path: Path) -> None:
    """Device: CPU. ``lebm test -c RUN/config.yaml`` with an override writes ``config_test.yaml``
    and leaves the run's ``config.yaml`` (what ``--ckpt_path last`` resumes with) byte for byte."""
    run, last, _ = trained(tmp_path)
    trained_with = (run / "config.yaml").read_bytes()
    run_cli("test", "-c", str(run / "config.yaml"), "--ckpt_path", str(last), "--trainer.limit_test_batches", "1")
    assert (run / "config.yaml").read_bytes() == trained_with
    assert "limit_test_batches: 1" in (run / "config_test.yaml").read_text()


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_changed_learning_rate_is_applied_on_resume_and_listed(capsys, tmp_path: Path) -> None:
    run, last, _ = trained(tmp_path)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    old_lr = saved["optimizer_states"][0]["param_groups"][0]["lr"]  # decoder, after one epoch's decay
    capsys.readouterr()
    fit(run, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.init_args.decoder_lr", "5.0e-4")
    message = capsys.readouterr().err
    assert "model.init_args.decoder_lr 0.001 -> 0.0005" in message
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    group = resumed["optimizer_states"][0]["param_groups"][0]
    decay = saved["hyper_parameters"]["lr_decay"]
    assert group["initial_lr"] == pytest.approx(5e-4)
    assert group["lr"] == pytest.approx(old_lr * 0.5 * decay)  # the new rate, the schedule's progress kept
    assert resumed["hyper_parameters"]["decoder_lr"] == pytest.approx(5e-4)
    # the same command again: nothing left to train, said in one line (once), and the command ends at 0
    written, config = last.read_bytes(), (run / "config.yaml").read_bytes()
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # the model's own warning is not repeated
        warnings.simplefilter("always")
        again = ("--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.init_args.decoder_lr", "5.0e-4")
        message = stopped(capsys, run, *again, code=0)  # ends before fitting: no summary, sanity check or files
    assert not [warning for warning in caught if "leaves nothing to train" in str(warning.message)]
    assert f"lebm: {last} holds 2 whole epochs (4 steps), so --trainer.max_epochs 2 leaves nothing" in message
    assert "give --trainer.max_epochs 3 or more" in message and message.count("leaves nothing to train") == 1
    assert "Sanity Checking" not in message and "| Name" not in message
    assert last.read_bytes() == written and (run / "config.yaml").read_bytes() == config
    # fewer epochs than the run holds: refused in that line, before anything is written
    message = stopped(capsys, run, "--trainer.max_epochs", "1", "--ckpt_path", "last", code=2)
    assert f"lebm: error: {last} holds 2 whole epochs (4 steps), so --trainer.max_epochs 1 leaves nothing" in message
    assert "Traceback" not in message and "Misconfiguration" not in message and message.count("\n") == 1, message
    assert last.read_bytes() == written and (run / "config.yaml").read_bytes() == config


def test_a_finished_runs_command_again_ends_at_0_before_fitting(capsys, tmp_path: Path) -> None:
    """CPU. ``--ckpt_path last`` on a run whose ``last.ckpt`` holds the ``max_epochs`` asked for (a
    requeued job): the one "nothing left to train" line, exit 0, and no fit: no Trainer summary, no
    file written, the checkpoint untouched."""
    import lebm

    model = lebm.from_recipe("quickstart").model
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    held = {"state_dict": model.state_dict(), "global_step": 42, "loops": progress(3, 3), "optimizer_states": []}
    torch.save({**held, "hyper_parameters": dict(model.hparams)}, last)
    written = last.read_bytes()
    message = stopped(capsys, tmp_path / "run", "--trainer.max_epochs", "3", "--ckpt_path", "last", code=0)
    assert f"lebm: {last} holds 3 whole epochs (42 steps), so --trainer.max_epochs 3 leaves nothing" in message
    assert "| Name" not in message and "Sanity Checking" not in message, message
    assert last.read_bytes() == written and sorted(path.name for path in (tmp_path / "run").iterdir()) == [
        "checkpoints"
    ]  # no lock file left either


def progress(processed: int, started: int) -> dict:
    """A checkpoint's ``loops`` entry as Lightning writes it (the fit loop's epoch counters)."""
    counts = {"ready": started, "started": started, "processed": processed, "completed": max(processed - 1, 0)}
    return {"fit_loop": {"epoch_progress": {"total": counts, "current": dict(counts)}}}


@pytest.mark.parametrize(
    ("saved", "max_epochs", "max_steps", "expected"),
    [
        ("end of epoch 2", 3, -1, "holds 3 whole epochs (30 steps), so --trainer.max_epochs 3 leaves nothing"),
        ("end of epoch 2", 2, -1, "refused: give --trainer.max_epochs 4 or more to go on"),
        ("end of epoch 2", -1, 29, "refused: holds 30 steps, so --trainer.max_steps 29 leaves nothing to train"),
        ("end of epoch 2", 4, -1, None),
        ("inside epoch 2", 2, -1, "holds 2 whole epochs and part of the next (30 steps), so --trainer.max_epochs 2"),
        ("inside epoch 2", 3, -1, None),  # finishes epoch 2
        ("end of epoch 2", -1, 30, "holds 30 steps, so --trainer.max_steps 30 leaves nothing to train"),
        ("end of epoch 2", -1, 31, None),
    ],
)
def test_a_resume_with_nothing_left_to_train_is_said_in_one_line(
    capsys, tmp_path: Path, saved: str, max_epochs: int, max_steps: int, expected: str | None
) -> None:
    """Saved at the end of epoch 2 (0-based: 3 epochs held) or inside it (by a kill: 2 held):
    ``max_epochs`` at what it holds (or ``max_steps`` at its steps) is said in one line naming the
    value that trains on, and the model is marked so that it does not warn again (the command then
    ends at 0); below it, the same line refuses (exit 2); more trains on, in silence."""
    from types import SimpleNamespace

    from lebm.cli.resume_check import check_resume
    from tests.models.cases import latent_ebm

    model = latent_ebm()
    path = tmp_path / "last.ckpt"
    loops = progress(3, 3) if saved.startswith("end") else progress(2, 3)
    torch.save({"state_dict": model.state_dict(), "global_step": 30, "loops": loops}, path)
    trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps)
    capsys.readouterr()
    if expected is not None and expected.startswith("refused: "):  # below what it holds: the line refuses
        with pytest.raises(SystemExit) as stop:
            check_resume(model, str(path), "fit", trainer=trainer)
        message = capsys.readouterr().err
        assert stop.value.code == 2 and message.startswith(f"lebm: error: {path} holds ") and message.count("\n") == 1
        assert expected.removeprefix("refused: ") in message, message
        return
    assert check_resume(model, str(path), "fit", trainer=trainer) == []
    message = capsys.readouterr().err
    if expected is None:
        assert message == "" and not getattr(model, "said_nothing_left", False)
        return
    assert message.startswith(f"lebm: {path} holds ") and message.count("\n") == 1 and expected in message, message
    assert model.said_nothing_left


@pytest.mark.usefixtures("one_thread")
def test_a_python_fit_resumed_with_nothing_left_to_train_says_so_at_the_users_line(tmp_path: Path) -> None:
    """``trainer.fit(model, ckpt_path=...)`` with the ``max_epochs`` the checkpoint holds: Lightning
    ends at once; a warning, pointing at this file, names the setting that trains on."""
    from tests.helpers.trainers import quiet_trainer
    from tests.models.cases import latent_ebm, toy_loader

    def trainer(epochs: int):  # noqa: ANN202
        settings = {"enable_checkpointing": True, "limit_val_batches": 0, "accelerator": "cpu"}
        return quiet_trainer(max_epochs=epochs, default_root_dir=str(tmp_path), **settings)

    trainer(1).fit(latent_ebm(), toy_loader(n_batches=1))
    (saved,) = (tmp_path / "checkpoints").glob("*.ckpt")
    with pytest.warns(UserWarning, match=r"holds 1 whole epoch \(1 steps\), so max_epochs=1 leaves nothing") as said:
        trainer(1).fit(latent_ebm(), toy_loader(n_batches=1), ckpt_path=str(saved))
    (warning,) = [w for w in said if "leaves nothing to train" in str(w.message)]
    assert "give max_epochs=2 or more to go on (to score it, use trainer.test)" in str(warning.message)
    assert warning.filename == __file__


# ------------------------------------------------------------------ command-line values
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--trainer.devices", "0"], "--trainer.devices 0 asks for no device at all"),
        (
            ["--model.init_args.prior_lr", "-1e-3"],
            "model.init_args.prior_lr must be a finite learning rate >= 0, got -0.001",
        ),
    ],
    ids=["no device", "a negative number after a space"],
)
def test_command_line_values_get_a_message_with_the_fix(capsys, tmp_path: Path, args: list[str], expected: str) -> None:
    message = stopped(capsys, tmp_path / "run", *args)
    assert expected in message, message
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_learning_rate_far_above_the_papers_warns(capsys, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"model.init_args.prior_lr=1000.0 is far above the papers' Adam rates"):
        fit(tmp_path / "run", "--model.init_args.prior_lr", "1e3", "--trainer.limit_train_batches", "1")


# ------------------------------------------------------------------ data files at fault, named
def test_a_truncated_gz_file_is_named(tmp_path: Path) -> None:
    import gzip

    from lebm.data.errors import DataError
    from lebm.data.images.idx import read_idx_file

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(os.urandom(4000))[:100])
    with pytest.raises(DataError, match=rf"{path} is truncated or corrupt .*copy or download it again"):
        read_idx_file(path)


def test_a_text_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    from lebm.data.errors import DataError
    from lebm.data.text.files import read_sentences

    path = tmp_path / "ptb.train.txt"
    path.write_bytes("a caf\xe9 sentence\n".encode("latin1"))
    with pytest.raises(DataError, match=rf"{path} is not UTF-8 text .*iconv -f latin1 -t utf-8"):
        read_sentences(path)


def test_an_image_folder_without_images_stops_with_one_message(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "images"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    message = stopped(
        capsys, tmp_path / "run", "--data.init_args.dataset", "folder", "--data.init_args.root", str(empty)
    )
    assert message.startswith("lebm: error:") and "Image folder: data files not found" in message
    assert "Traceback" not in message


def test_a_run_folder_that_cannot_be_written_is_refused_first(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the run folder's parent should be")
    message = stopped(capsys, blocker / "run")
    assert f"cannot write into the run folder {blocker / 'run'}" in message and "--trainer.default_root_dir" in message


def test_a_finished_run_says_where_its_files_are(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    capsys.readouterr()
    fit(run, "--trainer.limit_train_batches", "1")
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == (
        f"lebm: run folder {run}: checkpoint {run / 'checkpoints' / 'last.ckpt'}; config {run / 'config.yaml'}; "
        f"images {run / 'images'}"
    )


# ------------------------------------------------------------------ a requeue loop
@pytest.mark.slow
def test_a_requeue_loop_killed_at_start_up_mid_epoch_and_at_an_epoch_end_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """`lebm fit ... --ckpt_path auto`, as a SLURM requeue script runs it (console command, in a
    subprocess): killed by SIGTERM during start-up, after batch 3 of epoch 0 and after the last batch
    of epoch 1, then let finish: the parameters equal those of a run never stopped, bitwise."""
    import subprocess
    import sys

    from tests.helpers.cli_runner import REPO

    common = [
        *RUN[1:3],
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "8",
        "--trainer.limit_val_batches",
        "0",
        *RUN[9:],
        "--data.init_args.random_flip",
        "true",
    ]

    def lebm(*args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
        command = [sys.executable, "-m", "lebm", "fit", *common, *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_SECONDS)

    straight = lebm("--trainer.default_root_dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "requeued"
    kills = {
        "start-up": "    - class_path: tests.helpers.cli_runner.SigtermAtSetup\n",
        "mid-epoch": "    - class_path: tests.helpers.cli_runner.SigtermAt\n      init_args: {epoch: 0, batch: 3}\n",
        "epoch end": "    - class_path: tests.helpers.cli_runner.SigtermAt\n      init_args: {epoch: 1, batch: 7}\n",
    }
    for name, callback in kills.items():
        kill = tmp_path / f"kill_{name.replace(' ', '_')}.yaml"
        kill.write_text(f"trainer:\n  callbacks+:\n{callback}")
        attempt = lebm("-c", str(kill), "--trainer.default_root_dir", str(run), "--ckpt_path", "auto")
        assert attempt.returncode == 143, (name, attempt.stderr[-2000:])
    last = lebm("--trainer.default_root_dir", str(run), "--ckpt_path", "auto")
    assert last.returncode == 0, last.stderr[-2000:]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_command_help_is_kept_and_printed_again_without_lightning(tmp_path: Path) -> None:
    """`lebm fit --help` (several seconds: Lightning's import and the parser) is printed from a cache
    the second time, without importing Lightning, with the same text."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom lebm.cli.main import main\nmain(['fit', '--help'])\n"
        "sys.stderr.write('LIGHTNING ' + str('lightning' in sys.modules))"
    )
    env = dict(os.environ, LEBM_CACHE_DIR=str(tmp_path))
    first, second = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS, env=env)
        for _ in range(2)
    )
    assert first.returncode == second.returncode == 0, first.stderr[-2000:]
    assert "--trainer.max_epochs" in first.stdout and first.stdout == second.stdout
    assert first.stderr.endswith("LIGHTNING True") and second.stderr.endswith("LIGHTNING False")


def test_text_data_into_an_image_model_is_refused_when_the_run_is_built(capsys, tmp_path: Path) -> None:
    message = stopped(
        capsys,
        tmp_path / "run",
        "--data",
        "lebm.data.TextDataModule",
        "--data.init_args.dataset",
        "templates",
    )
    assert "are sentences (token ids), but the decoder (GaussianDecoder) models arrays" in message, message
    assert "recipes/latent_ebm/text_quickstart.yaml" in message


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_checkpoint_holding_objects_is_not_passed_over_as_unreadable(capsys, tmp_path: Path) -> None:
    """A callback that keeps a numpy number in its state makes checkpoints that ``weights_only``
    loading refuses. Such a ``last.ckpt`` is intact: the resume stops with a message naming the object
    and the fix (it used to be moved aside as unreadable and the run resumed from an older epoch);
    with ``--weights_only false`` it resumes from it."""
    run = tmp_path / "run"
    callback = ["--trainer.callbacks+", "tests.helpers.cli_runner.NumpyState"]
    fit(run, *callback)
    last = run / "checkpoints" / "last.ckpt"
    older = run / "checkpoints" / "epoch=0-plain.ckpt"  # an older, plain checkpoint a resume could fall back to
    plain = torch.load(last, map_location="cpu", weights_only=False)
    plain["callbacks"] = {key: value for key, value in plain["callbacks"].items() if "NumpyState" not in key}
    torch.save(plain, older)
    os.utime(older, (time.time() - 60, time.time() - 60))
    written = last.read_bytes()
    message = stopped(capsys, run, *callback, "--ckpt_path", "auto", "--trainer.max_epochs", "2", code=2)
    assert f"{last} holds objects other than tensors and plain data (numpy" in message
    assert "--weights_only false" in message and "is unreadable" not in message
    assert last.read_bytes() == written and not list(run.glob("checkpoints/*.unreadable-*"))  # nothing moved
    fit(run, *callback, "--ckpt_path", "auto", "--trainer.max_epochs", "2", "--weights_only", "false")
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1  # resumed from last.ckpt


def test_loading_a_checkpoint_holding_objects_names_it_and_loads_when_trusted(tmp_path: Path) -> None:
    """``lebm.load`` and an explicit ``--ckpt_path`` give the same message; ``weights_only=False`` loads."""
    import lebm
    from lebm.checkpoints import CheckpointNotPlain, read_checkpoint

    run = tmp_path / "run"
    fit(run, "--trainer.callbacks+", "tests.helpers.cli_runner.NumpyState")
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointNotPlain, match=r"holds objects other than tensors and plain data \(numpy"):
        lebm.load(last)
    assert read_checkpoint(last, weights_only=False)["global_step"] > 0
    assert not lebm.load(last, weights_only=False).training


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_testing_or_naming_a_checkpoint_holding_objects_gets_the_message_and_the_flag_works(
    capsys, tmp_path: Path
) -> None:
    """``lebm test --ckpt_path last`` (Lightning loads the file itself) stops with the message, not a
    traceback; ``--weights_only False`` (any spelling the parser reads) with a named checkpoint resumes."""
    run = tmp_path / "run"
    callback = ["--trainer.callbacks+", "tests.helpers.cli_runner.NumpyState"]
    fit(run, *callback)
    last = run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(
            "test", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), "--ckpt_path", "last",
            "--trainer.limit_test_batches", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        )  # fmt: skip
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "holds objects other than tensors and plain data (numpy" in message and "Traceback" not in message
    fit(run, *callback, "--ckpt_path", str(last), "--trainer.max_epochs", "2", "--weights_only", "False")
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1


# ------------------------------------------------------------------ after a kill
def checkpoint(path: Path, step: int, age_s: float, resumable: bool = True) -> Path:
    """A minimal readable checkpoint at ``path``, last modified ``age_s`` seconds ago; with the
    optimiser and loop state a resume reads, or (``resumable=False``) the weights alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": {}, "global_step": step}
    if resumable:
        state.update(optimizer_states=[], loops={})
    torch.save(state, path)
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


@pytest.fixture
def decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fit_checkpoint`` records its decision in the environment for DDP workers: undone after the test."""
    from lebm.cli.run_folder import DECIDED_CKPT_PATH

    monkeypatch.setenv(DECIDED_CKPT_PATH, "")


@pytest.mark.usefixtures("decided")
def test_auto_resumes_a_checkpoint_newer_than_last_ckpt_and_last_keeps_last(capsys, tmp_path: Path) -> None:
    """Killed between the two files of one save: ``epoch=1-step=4.ckpt`` written, ``last.ckpt`` still
    the step-2 one. ``auto`` takes the newer file and says why, never a checkpoint kept for its score
    (``best-fid.ckpt``, the newest of all here); ``last`` means last.ckpt."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    last = checkpoint(run / "checkpoints" / "last.ckpt", 2, age_s=60)
    checkpoint(run / "checkpoints" / "epoch=0-step=2.ckpt", 2, age_s=61)
    newer = checkpoint(run / "checkpoints" / "epoch=1-step=4.ckpt", 4, age_s=1)
    checkpoint(run / "checkpoints" / "best-fid.ckpt", 4, age_s=0)  # kept for its score, saved in a validation
    capsys.readouterr()
    assert fit_checkpoint(str(run), "auto", overwrite=False) == str(newer)
    said = capsys.readouterr().err
    assert f"lebm: resuming from {newer}, the checkpoint holding the most training (step 4, epoch 0): " in said
    assert "last.ckpt holds less (step 2, epoch 0)" in said
    assert fit_checkpoint(str(run), "last", overwrite=False) == str(last)
    assert last.is_file()  # an older, intact last.ckpt is not moved aside


@pytest.mark.usefixtures("decided")
def test_auto_and_last_resume_only_what_holds_the_optimiser_and_loop_state(capsys, tmp_path: Path) -> None:
    """CPU. A weights-only ``step=8.ckpt`` (``save_weights_only``, as recipes/evaluation/checkpoints_every_500
    writes) ahead of ``last.ckpt`` (step 4): ``auto`` resumes ``last.ckpt`` and names the file it passed
    over in one line; a weights-only ``last.ckpt`` is refused by ``last`` with that reason; a folder of
    weights-only files alone is refused in one line (nothing to resume)."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    last = checkpoint(run / "checkpoints" / "last.ckpt", 4, age_s=60)
    checkpoint(run / "checkpoints" / "step=8.ckpt", 8, age_s=1, resumable=False)
    capsys.readouterr()
    assert fit_checkpoint(str(run), "auto", overwrite=False) == str(last)
    said = capsys.readouterr().err
    assert f"resuming from {last} (step 4): step=8.ckpt holds more training (step 8) but its weights alone" in said
    assert said.count("\n") == 1
    assert fit_checkpoint(str(run), "last", overwrite=False) == str(last)

    level = tmp_path / "level"  # a weights-only file of the same step as last.ckpt holds no more training
    even = checkpoint(level / "checkpoints" / "last.ckpt", 8, age_s=60)
    checkpoint(level / "checkpoints" / "step=8.ckpt", 8, age_s=1, resumable=False)
    capsys.readouterr()
    assert fit_checkpoint(str(level), "auto", overwrite=False) == str(even)
    assert "holds more training" not in capsys.readouterr().err

    only = tmp_path / "only"
    checkpoint(only / "checkpoints" / "step=8.ckpt", 8, age_s=1, resumable=False)
    checkpoint(only / "checkpoints" / "last.ckpt", 8, age_s=1, resumable=False)
    for ckpt_path in ("auto", "last"):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            fit_checkpoint(str(only), ckpt_path, overwrite=False)
        refused = capsys.readouterr().err
        assert "weights-only checkpoints alone" in refused and "nothing to resume" in refused
        assert refused.count("\n") == 1


@pytest.mark.usefixtures("decided")
@pytest.mark.parametrize("times", ["last.ckpt restored later", "same time", "epoch file copied later"])
def test_auto_resumes_the_checkpoint_holding_the_most_training_whatever_the_file_times(
    capsys, tmp_path: Path, times: str
) -> None:
    """CPU. A ``last.ckpt`` restored from a backup (newer file time, less training), two files of the
    same time (file systems with 1-2 s times), or an older epoch file copied in after: ``auto``
    resumes what holds the most training, and says why only when that is not ``last.ckpt``."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    ages = {"last.ckpt restored later": (0, 60), "same time": (30, 30), "epoch file copied later": (60, 0)}[times]
    if times == "epoch file copied later":  # last.ckpt holds more: it is resumed, without a word
        last = checkpoint(run / "checkpoints" / "last.ckpt", 6, age_s=ages[0])
        checkpoint(run / "checkpoints" / "epoch=1-step=4.ckpt", 4, age_s=ages[1])
        capsys.readouterr()
        assert fit_checkpoint(str(run), "auto", overwrite=False) == str(last)
        assert capsys.readouterr().err == ""
        return
    checkpoint(run / "checkpoints" / "last.ckpt", 2, age_s=ages[0])
    most = checkpoint(run / "checkpoints" / "epoch=1-step=4.ckpt", 4, age_s=ages[1])
    capsys.readouterr()
    assert fit_checkpoint(str(run), "auto", overwrite=False) == str(most)
    assert "last.ckpt holds less (step 2, epoch 0)" in capsys.readouterr().err


@pytest.mark.usefixtures("decided")
def test_a_start_removes_the_temporary_files_of_killed_writes_and_nothing_else(capsys, tmp_path: Path) -> None:
    """A kill during a write leaves its hidden ``.<name>-<hex>.tmp`` beside the target; the next start
    (new or resumed) removes every one nothing wrote to for a minute, in any sub-folder, says so, and
    keeps other files and a write in progress."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    left = [
        run / "checkpoints" / ".last.ckpt-0123456789ab.tmp",
        run / ".metrics.csv-a1b2c3d4e5f6.tmp",
        run / "images" / ".samples_epoch0009.png-00ff00ff00ff.tmp",
    ]
    in_progress = run / "checkpoints" / ".config_test.yaml-0123456789cd.tmp"  # another process's write, now
    kept = [run / "notes.tmp", run / ".notes-1.tmp", run / "images" / "samples_epoch0009.png", in_progress]
    checkpoint(run / "checkpoints" / "last.ckpt", 2, age_s=10)
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
        if path != in_progress:
            os.utime(path, (time.time() - 120, time.time() - 120))
    capsys.readouterr()
    assert fit_checkpoint(str(run), "auto", overwrite=False) == str(run / "checkpoints" / "last.ckpt")
    said = capsys.readouterr().err
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)
    assert f"lebm: removed 3 temporary file(s) that interrupted writes left in {run}: " in said
    assert ".metrics.csv-a1b2c3d4e5f6.tmp" in said and said.count("\n") == 1


def test_a_run_refused_at_build_leaves_no_run_folder_it_made(capsys, tmp_path: Path) -> None:
    """CPU. A refusal while the run is built (a negative learning rate) removes the empty run folder
    the command made for it; a folder that was there before is left as it was."""
    made = tmp_path / "new_run"
    stopped(capsys, made, "--model.init_args.prior_lr", "-1")
    assert not made.exists()
    there = tmp_path / "there"
    there.mkdir()
    stopped(capsys, there, "--model.init_args.prior_lr", "-1")
    assert there.is_dir()


def test_ckpt_path_best_outside_a_fit_is_refused_at_build_with_the_files_to_give(capsys, tmp_path: Path) -> None:
    """CPU. ``lebm test --ckpt_path best`` runs no fit, so Lightning has no best model and would fail
    after the set-up with a traceback: refused at once, naming the run's checkpoints."""
    run = tmp_path / "run"
    checkpoint(run / "checkpoints" / "last.ckpt", 2, age_s=1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), "--ckpt_path", "best")
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1 and "Traceback" not in said, said
    assert "--ckpt_path best means the best checkpoint of a fit in this same process" in said
    assert str(run / "checkpoints" / "last.ckpt") in said and "or --ckpt_path last" in said


@pytest.mark.usefixtures("decided")
def test_overwrite_says_in_one_line_what_it_deletes(capsys, tmp_path: Path) -> None:
    """CPU. ``--overwrite true`` on a finished run deletes its checkpoints and files: one line names
    the run folder and what goes, before anything is deleted."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    checkpoint(run / "checkpoints" / "last.ckpt", 8, age_s=1)
    (run / "config.yaml").write_text("the finished run's config\n")
    capsys.readouterr()
    assert fit_checkpoint(str(run), None, overwrite=True) is None
    said = capsys.readouterr().err
    assert (
        said.count("\n") == 1
        and f"--overwrite true: replacing the run in {run}: deleting its checkpoints, config.yaml" in said
    )
    assert "(1 checkpoint(s))" in said and not (run / "checkpoints").exists()


def test_a_failed_command_removes_only_the_empty_run_folders_it_made(tmp_path: Path) -> None:
    """CPU. The sweep after a failed command removes a folder it made that holds no file (empty
    sub-folders, or only its emptied lock), never one that holds a checkpoint or any other file."""
    from lebm.cli.run_folder import FOLDERS_MADE, remove_empty_folders_made
    from lebm.cli.run_lock import LOCK_FILE

    empty, locked, kept, other = (tmp_path / name for name in ("empty", "locked", "kept", "other"))
    (empty / "images").mkdir(parents=True)
    locked.mkdir()
    (locked / LOCK_FILE).write_text("")
    checkpoint(kept / "checkpoints" / "last.ckpt", 3, age_s=1)
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    FOLDERS_MADE.extend(str(folder) for folder in (empty, locked, kept, other))
    remove_empty_folders_made()
    assert not empty.exists() and not locked.exists()
    assert (kept / "checkpoints" / "last.ckpt").is_file() and (other / "notes.txt").is_file()


def test_test_readings_are_kept_line_by_line_in_the_run_folder_and_go_with_an_overwrite(tmp_path: Path) -> None:
    """Device: CPU. Each ``lebm test`` adds its records as JSON lines, dated; the file is rewritten
    whole (no temporary file left) and belongs to the run, so ``--overwrite true`` deletes it."""
    from lebm.cli.run_folder import RUN_FILES, TEST_READINGS_FILE, keep_test_readings

    first = keep_test_readings(str(tmp_path), [{"ckpt_path": "a.ckpt", "untrained": True}])
    keep_test_readings(str(tmp_path), [{"ckpt_path": "b.ckpt", "untrained": False}])
    lines = [json.loads(line) for line in Path(first).read_text().splitlines()]
    assert [line["ckpt_path"] for line in lines] == ["a.ckpt", "b.ckpt"] and all("date" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEST_READINGS_FILE] and TEST_READINGS_FILE in RUN_FILES


def test_fit_with_ckpt_path_best_stops_in_one_line_and_writes_no_checkpoint(capsys, tmp_path: Path) -> None:
    """``best`` names a checkpoint of an earlier fit in the same process; ``lebm fit`` has none."""
    run = tmp_path / "run"
    said = stopped(capsys, run, "--ckpt_path", "best")
    assert said.count("\n") == 1 and "--ckpt_path best means the best checkpoint" in said, said
    assert "--ckpt_path last" in said and not list(run.glob("checkpoints/*"))
