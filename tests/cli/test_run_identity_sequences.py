"""The sequences in which a run's files were lost or another run's data trusted, each ending in the
right files, the right run and the right line (device: CPU; the lebm command in this process, on
the quickstart's 8x8 digits or on small MNIST-named files the test writes):

1. another run's ``last.ckpt`` copied over a run's, then resumed: the run's own checkpoint is kept
   (passed over means kept), and the W&B history is not mixed;
2. a copy of the data whose labels were shifted, behind the same ``$LEBM_DATA`` root: refused;
5. a copied run folder, resumed: a W&B run of its own;
6. a moved run of an older lebm (no ids), resumed: into its ``last.ckpt``, no ``last-v1.ckpt``;
7. a plain ``L.Trainer(**recipe.trainer_settings)`` fitting into a run's folder: refused.

Sequences 3 and 4 (a checkpoint without, or with a forged, identity) are in
tests/training/test_trained_data_record.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lebm.checkpoints import run_id_held
from tests.helpers.cli_runner import run_cli, working_folder

#: Whole command sequences, each several lebm commands (about 5 s each): the slow tier. Their parts
#: fail fast tests of the default tier: tests/training/test_run_identity.py,
#: tests/training/test_trained_data_record.py and tests/cli/test_run_folder_edges.py.
pytestmark = pytest.mark.slow

#: One epoch of 4 batches, one validation batch, no bar: the issue's quick run.
QUICK = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "4",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs ``A`` and ``B`` of the quickstart, same settings (W&B offline, as the recipe logs)."""
    folder = working_folder(tmp_path_factory.mktemp("runs"))
    for name in ("A", "B"):
        run_cli("fit", "-c", "quickstart", *QUICK, "--trainer.default_root_dir", name, cwd=folder)
    return folder


def copied(two_runs: Path, tmp_path: Path) -> Path:
    """The two runs copied into this test's own folder (each test changes its copy), each as if made
    there (its W&B id's folder record rewritten)."""
    here = working_folder(tmp_path)
    for name in ("A", "B"):
        shutil.copytree(two_runs / name, here / name, symlinks=True)
        (here / name / "wandb_run_folder.txt").write_text(str(here / name))
    return here


def resume(folder: Path, run: str, epochs: int = 2) -> None:
    quick = [*QUICK[2:], "--trainer.max_epochs", str(epochs)]
    run_cli("fit", "-c", f"{run}/config.yaml", "--ckpt_path", "last", *quick, cwd=folder)


def test_another_runs_last_copied_over_keeps_the_runs_own_checkpoint(two_runs: Path, tmp_path: Path, capsys) -> None:
    here = copied(two_runs, tmp_path)
    own = here / "A" / "checkpoints" / "epoch=0-step=4.ckpt"
    own_id = run_id_held(own)
    wandb_id = (here / "A" / "wandb_run_id.txt").read_text()
    shutil.copy(here / "B" / "checkpoints" / "last.ckpt", here / "A" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    resume(here, "A")
    said = capsys.readouterr().err
    assert "passed over 1 checkpoint(s)" in said and "epoch=0-step=4.ckpt" in said, said
    assert own.is_file() and run_id_held(own) == own_id  # passed over means kept: A's weights survive
    resumed = run_id_held(here / "B" / "checkpoints" / "last.ckpt")
    assert run_id_held(here / "A" / "checkpoints" / "last.ckpt") == resumed
    assert (here / "A" / "wandb_run_id.txt").read_text() != wandb_id  # B's steps never land in A's W&B run
    assert "logged to W&B run" in said and "new W&B run" in said, said


def test_a_copied_run_folder_resumed_gets_a_wandb_run_of_its_own(two_runs: Path, tmp_path: Path, capsys) -> None:
    here = copied(two_runs, tmp_path)
    shutil.copytree(here / "A", here / "A2", symlinks=True)
    original = (here / "A" / "wandb_run_id.txt").read_text()
    capsys.readouterr()
    resume(here, "A2")
    said = capsys.readouterr().err
    assert (here / "A2" / "wandb_run_id.txt").read_text() != original
    assert f"its W&B id {original} was made in {here / 'A'}" in said and "--trainer.logger.init_args.id" in said
    assert (here / "A2" / "wandb_run_folder.txt").read_text() == str(here / "A2")
    resume(here, "A2", epochs=3)  # resumed again where its id was made: the same W&B run goes on
    assert "new W&B run" not in capsys.readouterr().err


def test_a_moved_older_run_resumes_into_its_last_checkpoint(two_runs: Path, tmp_path: Path) -> None:
    here = copied(two_runs, tmp_path)
    moved = here / "moved"
    shutil.move(here / "A", moved)
    (moved / "wandb_run_folder.txt").unlink()  # an older lebm wrote neither file nor ids
    for path in (moved / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=False)
        checkpoint.pop("lebm_run")
        torch.save(checkpoint, path)
    resume(here, "moved")
    names = sorted(path.name for path in (moved / "checkpoints").glob("*.ckpt"))
    assert "last-v1.ckpt" not in names, names
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8


def test_a_plain_trainer_from_the_recipes_settings_is_refused_in_a_runs_folder(two_runs: Path, tmp_path: Path) -> None:
    import lightning as L

    import lebm

    here = copied(two_runs, tmp_path)
    recipe = lebm.from_recipe("quickstart", [*QUICK, "--trainer.default_root_dir", str(here / "A")])
    before = sorted((here / "A" / "checkpoints").iterdir())
    trainer = L.Trainer(**recipe.trainer_settings)
    with pytest.raises(ValueError, match=r"holds checkpoints of run \w+ .*this fit starts a new run"):
        trainer.fit(recipe.model, datamodule=recipe.datamodule)
    assert sorted((here / "A" / "checkpoints").iterdir()) == before


def shifted_copy(source: Path, target: Path) -> Path:
    """``source``'s MNIST-named files with the test labels shifted by one digit."""
    import gzip

    import numpy as np

    shutil.copytree(source, target)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8:] = bytes(((np.frombuffer(bytes(raw[8:]), dtype=np.uint8) + 1) % 10).astype(np.uint8))
    labels.write_bytes(gzip.compress(bytes(raw)))
    return target


def test_scoring_on_a_copy_with_shifted_labels_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    from tests.helpers.dataset_files import write_idx_splits

    here = working_folder(tmp_path)
    write_idx_splits(tmp_path / "data" / "mnist", n_train=120, n_test=60, compress=True, seed=0)
    shifted_copy(tmp_path / "data" / "mnist", tmp_path / "shifted" / "mnist")
    monkeypatch.setenv("LEBM_DATA", str(tmp_path / "data"))
    mnist = ["--data.init_args.dataset", "mnist", "--data.init_args.root", "$LEBM_DATA/mnist"]
    mnist += ["--data.init_args.image_size", "8", "--data.init_args.batch_size", "20", "--trainer.logger", "false"]
    run_cli("fit", "-c", "quickstart", *QUICK, *mnist, "--trainer.default_root_dir", "run", cwd=here)
    recorded = (here / "run" / "config.yaml").read_text()
    assert f"# data read from {tmp_path / 'data' / 'mnist'}: content digest" in recorded
    test = ["test", "-c", "run/config.yaml", "--ckpt_path", "last", "--trainer.logger", "false"]
    run_cli(*test, cwd=here)  # the data it was trained on: scored
    scored = (here / "run" / "config_test.yaml").read_text()
    assert f"# data read from {tmp_path / 'data' / 'mnist'}: content digest" in scored
    monkeypatch.setenv("LEBM_DATA", str(tmp_path / "shifted"))
    resumed = ["fit", "-c", "run/config.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "2"]
    for command in (test, resumed):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli(*command, cwd=here)
        said = capsys.readouterr().err
        assert stop.value.code != 0 and "same settings but other content" in said, said
        assert f"read from {tmp_path / 'data' / 'mnist'} in training" in said and str(tmp_path / "shifted") in said
    # refused before the Trainer wrote: the run's records stay as the run and the good test wrote them
    assert (here / "run" / "config.yaml").read_text() == recorded
    assert (here / "run" / "config_test.yaml").read_text() == scored


def test_a_partial_copy_resumed_says_which_wandb_run_its_checkpoint_logged_to(
    two_runs: Path, tmp_path: Path, capsys
) -> None:
    here = copied(two_runs, tmp_path)
    shutil.copytree(here / "A" / "checkpoints", here / "partial" / "checkpoints")
    logged = (here / "A" / "wandb_run_id.txt").read_text()
    capsys.readouterr()
    quick = [*QUICK[2:], "--trainer.max_epochs", "2", "--trainer.default_root_dir", "partial"]
    run_cli("fit", "-c", "quickstart", *quick, "--ckpt_path", "last", cwd=here)
    said = capsys.readouterr().err
    assert f"logged to W&B run {logged}" in said and f"--trainer.logger.init_args.id {logged}" in said, said


def test_a_checkpoint_callback_writing_into_another_runs_folder_is_one_line(
    two_runs: Path, tmp_path: Path, capsys
) -> None:
    """The method's own refusal, reached from the command (the folder rules of ``lebm fit`` read only
    its run folder): one line, no traceback, nothing written into the other run's checkpoints."""
    here = copied(two_runs, tmp_path)
    before = sorted((here / "A" / "checkpoints").iterdir())
    extra = "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(
            "fit",
            "-c",
            "quickstart",
            *QUICK,
            "--trainer.default_root_dir",
            "C",
            "--trainer.logger",
            "false",
            extra,
            "--trainer.callbacks.dirpath",
            str(here / "A" / "checkpoints"),
            "--trainer.callbacks.every_n_train_steps",
            "2",
            cwd=here,
        )
    said = capsys.readouterr().err
    assert stop.value.code == 2 and "holds checkpoints of run" in said and "Traceback" not in said, said
    assert sorted((here / "A" / "checkpoints").iterdir()) == before
