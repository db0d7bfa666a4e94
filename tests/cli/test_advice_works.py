"""Advice that works (device: CPU; the lebm command in this process): every message that suggests a
command or a path is checked by running what it suggests, as a user would copy it.

- a resume refused for another architecture suggests ``lebm fit -c <run>/config.yaml --ckpt_path ...``
  with the run folder's path as given (mixed case, a space: quoted for the shell), and that command
  runs; so does the other way out, ``--overwrite true`` without ``--ckpt_path``;
- a run that diverges before writing any checkpoint says to run the same command again (not to
  resume: there is nothing to resume), and that command, with the setting lowered, trains;
- a run that diverges after a checkpoint names that checkpoint and the ``--ckpt_path`` that resumes
  it, and that resume trains;
- ``lebm.load`` of a run folder names the checkpoint file that is there, and loading it works.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

import lebm
from lebm.checkpoints import CheckpointError, folder_given
from tests.helpers.cli_runner import QUIET, run_cli

RUN = ["fit", "-c", "recipes/quickstart.yaml", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
RUN += ["--trainer.limit_val_batches", "0", *QUIET]
#: A chain step size that makes the prior's chains overflow at the first step.
DIVERGING = ["--model.init_args.prior.init_args.sampler.init_args.step_size", "1e5"]
#: The recipe's own step size: the setting lowered, as the message says.
LOWERED = ["--model.init_args.prior.init_args.sampler.init_args.step_size", "0.4"]


def fit(run: Path, *extra: str) -> None:
    run_cli(*RUN, "--trainer.default_root_dir", str(run), *extra)


def stopped(capsys: pytest.CaptureFixture[str], *args: str, code: int) -> str:
    """Run ``lebm <args>`` expecting it to stop with ``code``; its stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(*args)
    message = capsys.readouterr().err
    assert stop.value.code == code, message
    assert "Traceback" not in message
    return message


def checkpoint_of(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_refused_resume_suggests_commands_that_run_with_the_folder_as_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. A run folder ``My Runs/C04`` (upper case, a space): the refusal's command keeps
    the path as written and quotes it; the command, split as a shell splits it, resumes the run with
    its own settings; ``lebm.load`` of the folder names its checkpoint, which loads; and the other
    way out, ``--overwrite true`` without ``--ckpt_path``, starts the changed run."""
    run = tmp_path / "My Runs" / "C04"
    fit(run)
    wider = ["--model.init_args.prior.init_args.energy_net.init_args.hidden", "64"]
    resume = ["--ckpt_path", "last", "--trainer.max_epochs", "2"]
    message = stopped(capsys, *RUN, "--trainer.default_root_dir", str(run), *wider, *resume, code=2)
    assert "has another architecture" in message
    found = re.search(r"\((lebm fit -c .+? --ckpt_path .+?)\), or start a new run", message)
    assert found, message
    command = shlex.split(found.group(1))
    assert command[3] == str(run / "config.yaml") and command[5] == str(run / "checkpoints" / "last.ckpt")
    run_cli(*command[1:], "--trainer.max_epochs", "2")  # the suggestion, one epoch further
    assert checkpoint_of(run)["global_step"] == 2  # resumed: one batch an epoch, two epochs

    with pytest.raises(CheckpointError) as refused:
        lebm.load(str(run))
    suggested = str(refused.value).rsplit(": ", 1)[-1]
    assert suggested == str(run / "checkpoints" / "last.ckpt"), refused.value
    assert lebm.load(suggested).generate(2).shape == (2, 1, 8, 8)

    assert "--overwrite true without --ckpt_path" in message
    fit(run, *wider, "--overwrite", "true")
    assert checkpoint_of(run)["state_dict"]["prior.energy_net.net.0.weight"].shape[0] == 64


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_divergence_before_any_checkpoint_says_run_again_and_running_again_trains(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. The chains overflow at step 0 of a new run: the message says no checkpoint was
    written, names what to lower and says to run the same command again (``--ckpt_path last``, the
    old advice, would find nothing); the same command with the step size lowered trains."""
    run = tmp_path / "run"
    message = stopped(capsys, *RUN, "--trainer.default_root_dir", str(run), *DIVERGING, code=1)
    assert "training diverged at epoch 0, step 0" in message
    assert "before any checkpoint was written, so there is nothing to resume" in message
    assert "the chains' step sizes. Then run the same command again, without --ckpt_path" in message
    assert "resume from" not in message
    refused = stopped(capsys, *RUN, "--trainer.default_root_dir", str(run), *LOWERED, "--ckpt_path", "last", code=2)
    assert "there is no checkpoint to resume" in refused
    fit(run, *LOWERED)  # the advice: the same command, the step size lowered
    assert checkpoint_of(run)["global_step"] == 1


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_divergence_after_a_checkpoint_names_it_and_resuming_from_it_trains(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. A run resumed for a second epoch with a step size that overflows diverges at
    its first step: the message names the checkpoint holding the last good state and the
    ``--ckpt_path`` that resumes it; that resume, the step size lowered, trains the second epoch."""
    run = tmp_path / "run"
    fit(run)
    again = ["--trainer.max_epochs", "2"]
    message = stopped(
        capsys, *RUN, "--trainer.default_root_dir", str(run), *again, *DIVERGING, "--ckpt_path", "last", code=1
    )
    last = run / "checkpoints" / "last.ckpt"
    assert f"the last checkpoint, {last}, holds the last good one" in message
    found = re.search(r"Then resume from it \((--ckpt_path) (\S+)\)\.", message)
    assert found and found.group(2) == str(last), message
    fit(run, *again, *LOWERED, *found.groups())
    assert checkpoint_of(run)["global_step"] == 2  # resumed: one batch an epoch, two epochs


def test_a_folder_given_for_a_checkpoint_names_a_file_that_is_there(tmp_path: Path) -> None:
    """Device: CPU. ``checkpoints/last.ckpt`` of a run folder, ``last.ckpt`` of a checkpoint folder,
    else the newest ``*.ckpt``; a folder without one says so."""
    run = tmp_path / "Run"
    assert "holds no checkpoint" in folder_given(str(run.parent))
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch=0-step=3.ckpt").write_bytes(b"")
    assert folder_given(str(run)).endswith(f"e.g. the newest: {run / 'checkpoints' / 'epoch=0-step=3.ckpt'}")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert folder_given(str(run)).endswith(f": {run / 'checkpoints' / 'last.ckpt'}")
    assert folder_given(str(run / "checkpoints")).endswith(f": {run / 'checkpoints' / 'last.ckpt'}")


def suggested(message: str, pattern: str) -> list[str]:
    """The command-line arguments a message suggests (``pattern``'s first group), split as a shell
    splits them."""
    found = re.search(pattern, message)
    assert found, message
    return shlex.split(found.group(1))


@pytest.mark.slow
def test_the_run_folder_messages_suggest_flags_that_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Device: CPU. A run folder with a space in its path: each way out of "already holds a run"
    (``--ckpt_path last``, the ``--trainer.default_root_dir`` it names, ``--overwrite true``), the
    ``--ckpt_path`` named when ``last.ckpt`` is unreadable, and the ``--ckpt_path`` that
    ``lebm test`` without one names: each, run as written, works."""
    run = tmp_path / "My Runs" / "C05"
    fit(run)
    message = stopped(capsys, *RUN, "--trainer.default_root_dir", str(run), code=2)
    assert "already holds a run" in message
    fit(run, *suggested(message, r"Resume it with (--ckpt_path last)"), "--trainer.max_epochs", "2")
    assert checkpoint_of(run)["global_step"] == 2
    elsewhere = suggested(message, r"train into a new folder with (--trainer.default_root_dir .+?), or replace")
    run_cli(*RUN, *elsewhere)
    assert checkpoint_of(Path(elsewhere[1]))["global_step"] == 1 and elsewhere[1] == f"{run}_2"
    fit(run, *suggested(message, r"or replace it with (--overwrite true)"))
    assert checkpoint_of(run)["global_step"] == 1

    fit(run, "--ckpt_path", "last", "--trainer.max_epochs", "2")  # a second checkpoint, then last.ckpt truncated
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    message = stopped(capsys, *RUN, "--trainer.default_root_dir", str(run), "--ckpt_path", "last", code=2)
    newest = suggested(message, r"resume from it with (--ckpt_path .+?) \(or --ckpt_path auto\)")
    fit(run, *newest, "--trainer.max_epochs", "3")
    assert checkpoint_of(run)["epoch"] == 2

    capsys.readouterr()
    with pytest.warns(UserWarning, match="without --ckpt_path") as warned:
        run_cli("test", *RUN[1:], "--trainer.default_root_dir", str(run), "--trainer.limit_test_batches", "1")
    flag = suggested(str(warned[0].message), r"pass (--ckpt_path .+?) \(or another checkpoint\)")
    assert flag[1] == str(last)
    run_cli("test", *RUN[1:], "--trainer.default_root_dir", str(run), "--trainer.limit_test_batches", "1", *flag)
    assert (run / "config_test.yaml").is_file()
