"""``lebm test`` on a run's checkpoint reads the data the run was trained on (device: CPU; the lebm
command in this process): a recipe whose held-out digit differs from the run's is refused in one
line naming both values, before any data is read; the command line giving the digit itself scores
the other data on purpose, said in one line; a setting the parser reads as a tuple matches the
list the run's record holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "latent_ebm" / "mnist_anomaly_offline.yaml"


def trained_run(tmp_path: Path, held_out: list[int]) -> Path:
    """A run folder as a fit leaves it, as far as the check reads it: ``config.yaml``'s data section
    (the recipe's, with the held-out digit the run trained with) and a checkpoint file."""
    recipe = yaml.safe_load((REPO / "recipes" / "data" / "mnist_anomaly_offline.yaml").read_text())["data"]
    recipe["init_args"]["anomaly_classes"] = held_out
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": recipe}))
    torch.save({"state_dict": {}, "global_step": 1}, run / "checkpoints" / "last.ckpt")  # its weights are not read
    return run


def test_testing_a_runs_checkpoint_on_the_recipes_other_held_out_digit_is_refused(tmp_path: Path, capsys) -> None:
    run = trained_run(tmp_path, [4])
    checkpoint = run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", str(RECIPE), "--ckpt_path", str(checkpoint), "--trainer.logger", "false")
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert "anomaly_classes [4] in training, [1] here" in said and f"-c {run / 'config.yaml'}" in said


def test_the_command_line_giving_the_digit_scores_other_data_on_purpose(tmp_path: Path, capsys) -> None:
    from lebm.cli.data_match import check_scored_data

    run = trained_run(tmp_path, [4])
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    data["init_args"]["anomaly_classes"] = [7]
    check_scored_data("test", checkpoint, data, lambda key: key.endswith("anomaly_classes"))
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "anomaly_classes [7] (trained on [4])" in said, said
    same = yaml.safe_load((run / "config.yaml").read_text())["data"]
    check_scored_data("test", checkpoint, same, lambda key: False)  # the run's own data: nothing said
    assert capsys.readouterr().err == ""


class Checked(Exception):
    """The command's data check returned: the command goes no further (no data or weights are read)."""


def stop_after_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``lebm test`` run its own data check, on its own data section and command line, then stop."""
    from lebm.cli import app

    check = app.check_scored_data

    def check_then_stop(*args: object) -> None:
        check(*args)
        raise Checked

    monkeypatch.setattr(app, "check_scored_data", check_then_stop)


def test_lebm_test_giving_the_held_out_digit_on_its_command_line_passes_its_own_check(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. ``lebm test --data.init_args.anomaly_classes [7]`` on a run trained on 4: the command's own
    check reads its own command line, so it scores digit 7 as asked, said in one line, not refused."""
    run = trained_run(tmp_path, [4])
    stop_after_the_check(monkeypatch)
    capsys.readouterr()
    with pytest.raises(Checked):
        run_cli(
            "test", "-c", str(RECIPE), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.logger",
            "false", "--data.init_args.anomaly_classes", "[7]",
        )  # fmt: skip
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "anomaly_classes [7] (trained on [4])" in said, said


def test_a_setting_the_parser_reads_as_a_tuple_matches_the_list_in_the_runs_record(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. A user's DataModule declaring a pair (``crop: tuple[int, int]``) among its split settings:
    the run's ``config.yaml`` holds ``[2, 3]``, the command parses ``(2, 3)``; ``lebm test`` on the
    run's own data goes on, saying nothing."""
    data = {"data": {"class_path": "tests.helpers.cli_runner.CroppedImages", "init_args": {"crop": [2, 3]}}}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    torch.save({"state_dict": {}, "global_step": 1}, run / "checkpoints" / "last.ckpt")  # its weights are not read
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    method = [str(REPO / "recipes" / "base.yaml"), "data.yaml", str(REPO / "recipes" / "latent_ebm" / "_method.yaml")]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"include": method}))
    stop_after_the_check(monkeypatch)
    capsys.readouterr()
    with pytest.raises(Checked):
        run_cli(
            "test", "-c", str(tmp_path / "recipe.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
            "--trainer.logger", "false",
        )  # fmt: skip
    assert capsys.readouterr().err == ""


def test_a_checkpoint_copied_out_of_its_run_is_checked_by_the_data_it_carries(tmp_path: Path, capsys) -> None:
    """CPU. A held-out-4 checkpoint copied away from its run folder (no ``config.yaml`` beside it):
    its own fingerprint refuses the recipe's digit 1, naming the setting to give for its own data."""
    from lebm.checkpoints import RUN_KEY

    recipe = yaml.safe_load((REPO / "recipes" / "data" / "mnist_anomaly_offline.yaml").read_text())["data"]
    fingerprint = {"class_path": recipe["class_path"], "settings": {"anomaly_classes": [4], "pool": "offline"}}
    copied = tmp_path / "elsewhere" / "digit4.ckpt"
    copied.parent.mkdir()
    torch.save({"state_dict": {}, "global_step": 1, RUN_KEY: {"id": "abc", "step": 1, "data": fingerprint}}, copied)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", str(RECIPE), "--ckpt_path", str(copied), "--trainer.logger", "false")
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert "anomaly_classes [4] in training, [1] here" in said and "--data.init_args.anomaly_classes '[4]'" in said
