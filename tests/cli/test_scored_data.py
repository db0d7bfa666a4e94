"""``lebm test`` on a run's checkpoint reads the data the run was trained on (device: CPU; the lebm
command in this process): a recipe whose held-out digit differs from the run's is refused in one
line naming both values, before any data is read; the command line giving the digit itself scores
the other data on purpose, said in one line."""

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
