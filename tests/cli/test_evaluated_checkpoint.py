"""``lebm validate|test|predict --ckpt_path last|auto`` read the run's own checkpoint (device: CPU;
the lebm command in this process): with none there the command is refused in one line, where
Lightning would score a freshly initialised model and end with code 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli_runner import QUIET, run_cli


@pytest.mark.parametrize(("subcommand", "ckpt_path"), [("test", "last"), ("validate", "auto"), ("predict", "last")])
def test_last_or_auto_without_a_run_is_refused_in_one_line(subcommand: str, ckpt_path: str, tmp_path, capsys) -> None:
    empty = tmp_path / "no_run"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(
            subcommand, "-c", "recipes/quickstart.yaml", "--ckpt_path", ckpt_path,
            "--trainer.default_root_dir", str(empty), *QUIET,
        )  # fmt: skip
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert f"lebm {subcommand} --ckpt_path {ckpt_path}: there is no" in said and "freshly initialised" in said
    assert not Path(empty).exists()


def test_the_run_folder_function_picks_the_runs_last_checkpoint(tmp_path: Path) -> None:
    from lebm.cli.run_folder import evaluated_checkpoint
    from tests.training.test_run_identity import fit

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    fit(checkpoints, 2)
    assert evaluated_checkpoint(str(tmp_path / "run"), "last", "test") == str(checkpoints / "last.ckpt")
    assert evaluated_checkpoint(str(tmp_path / "run"), "auto", "test") == str(checkpoints / "last.ckpt")


def test_testing_another_runs_checkpoint_writes_beside_it_not_into_the_recipes_folder(tmp_path: Path, capsys) -> None:
    """A run trained elsewhere, tested with its recipe: ``config_test.yaml`` goes into that run's
    folder, never into the recipe's ``runs/quickstart`` (which may hold a run of the user's), said
    in one line; a checkpoint outside any run folder gets a new folder beside it."""
    from tests.helpers.cli_runner import tests_own_folder

    run = tmp_path / "run"
    short = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "1"]
    run_cli("fit", "-c", "recipes/quickstart.yaml", *short, "--trainer.default_root_dir", str(run), *QUIET)
    checkpoint = run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    one_batch = ["--trainer.limit_test_batches", "1", *QUIET]
    run_cli("test", "-c", "recipes/quickstart.yaml", "--ckpt_path", str(checkpoint), *one_batch)
    said = [line for line in capsys.readouterr().err.splitlines() if "beside the checkpoint" in line]
    assert len(said) == 1 and str(run) in said[0], said
    assert (run / "config_test.yaml").exists() and not (tests_own_folder() / "runs" / "quickstart").exists()
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(checkpoint.read_bytes())
    run_cli("test", "-c", "recipes/quickstart.yaml", "--ckpt_path", str(loose), *one_batch)
    assert (tmp_path / "loose-evaluated" / "config_test.yaml").exists()


def test_a_broken_record_beside_an_older_checkpoint_is_named_in_one_line(tmp_path: Path, capsys) -> None:
    """A checkpoint without a data fingerprint (an older lebm's) beside a ``config.yaml`` that is not
    valid YAML: ``lebm test`` names the file and its line, no traceback."""
    import torch

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 1}, run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text("data:\n  init_args: {anomaly_classes: [4]\n")  # the flow mapping unclosed
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", "recipes/quickstart.yaml", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *QUIET)
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1 and "Traceback" not in said, said
    assert f"{run / 'config.yaml'}, the record of the run" in said and "is not valid YAML (line" in said


def test_a_test_into_a_folder_that_cannot_be_written_is_refused_first(tmp_path: Path, capsys) -> None:
    """``lebm test`` writes its config and readings into its folder: one it cannot write is refused
    in one line before the model is built."""
    import torch

    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "global_step": 1}, checkpoint)  # refused before its weights are read
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the folder's parent should be")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", "recipes/quickstart.yaml", "--ckpt_path", str(checkpoint), "--trainer.default_root_dir",
                str(blocker / "run"), *QUIET)  # fmt: skip
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert f"cannot write into the run folder {blocker / 'run'}" in said


def test_a_copy_of_another_runs_checkpoint_in_a_run_folder_is_refused_and_a_link_is_followed(
    tmp_path: Path, capsys
) -> None:
    """Run A's checkpoint copied into run B's ``checkpoints/``: evaluating it there would write over B's
    config and predictions, so it is refused in one line naming both runs; a symbolic link to A's
    checkpoint is followed to A's folder."""
    from lebm.cli.run_folder import evaluation_folder
    from tests.training.test_run_identity import fit

    folders = {name: tmp_path / name / "checkpoints" for name in ("a", "b")}
    ids = {}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        ids[name] = fit(folder, 2)["id"]
    copy = folders["b"] / "from_a.ckpt"
    copy.write_bytes((folders["a"] / "last.ckpt").read_bytes())
    with pytest.raises(SystemExit):
        evaluation_folder(str(copy), "predict")
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and f"run {ids['a']} wrote it, not run {ids['b']}" in said, said
    link = folders["b"] / "link_to_a.ckpt"
    link.symlink_to(folders["a"] / "last.ckpt")
    assert evaluation_folder(str(link)) == str((tmp_path / "a").resolve())
    assert evaluation_folder(str(folders["b"] / "last.ckpt")) == str((tmp_path / "b").resolve())


def test_testing_another_runs_checkpoint_with_a_runs_record_writes_beside_the_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    """``lebm test -c RUN/config.yaml --ckpt_path OTHER/checkpoints/last.ckpt``: the record's folder
    is how the run was built, not a folder the user chose for the outputs, so they go beside the
    checkpoint (the placement is asked for; the command stops there)."""
    import torch
    import yaml

    from lebm.cli import app
    from lebm.cli.resolve import resolve_recipe
    from lebm.cli.run_folder import RUN_RECORD_MARK

    run, other = tmp_path / "run", tmp_path / "other"
    (run / "checkpoints").mkdir(parents=True)
    resolved = resolve_recipe(Path(app.__file__).parents[2] / "recipes" / "quickstart.yaml")  # a record is resolved
    (run / "config.yaml").write_text(f"{RUN_RECORD_MARK}\n{yaml.safe_dump(resolved)}")
    (other / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 1}, other / "checkpoints" / "last.ckpt")
    asked = []

    class Placed(Exception):
        pass

    def placement(ckpt_path: str, subcommand: str) -> str:
        asked.append(ckpt_path)
        raise Placed

    monkeypatch.setattr(app, "evaluation_folder", placement)
    with pytest.raises(Placed):
        run_cli("test", "-c", str(run / "config.yaml"), "--ckpt_path", str(other / "checkpoints" / "last.ckpt"), *QUIET)
    assert asked == [str(other / "checkpoints" / "last.ckpt")]
