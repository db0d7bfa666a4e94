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
    from tests.models.test_run_identity import fit

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    fit(checkpoints, 2)
    assert evaluated_checkpoint(str(tmp_path / "run"), "last", "test") == str(checkpoints / "last.ckpt")
    assert evaluated_checkpoint(str(tmp_path / "run"), "auto", "test") == str(checkpoints / "last.ckpt")
