"""The edges of the run folder's rules that a review's slips crossed unseen (device: CPU):

- a checkpoint without a run id (an older lebm's) is not another run's: it is never passed over as one;
- only a ``config.yaml`` beside a ``checkpoints/`` folder (or marked as a run's record) is a run's record;
- a checkpoint of a deeper model names the tensors only it holds;
- a fit from Python into a run's folder is refused before the recipe's callbacks write: the run's
  ``config.yaml`` stays as the run wrote it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lebm.checkpoints import RUN_KEY, architecture_differences
from lebm.cli.run_folder import other_runs_checkpoints, run_record_folder


def write_checkpoint(path: Path, run_id: str | None) -> None:
    checkpoint: dict = {"state_dict": {}, "global_step": 1}
    if run_id is not None:
        checkpoint[RUN_KEY] = {"id": run_id, "step": 1, "data": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def test_a_checkpoint_without_a_run_id_is_not_passed_over_as_another_runs(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "aaaaaaaaaaaa")
    write_checkpoint(tmp_path / "checkpoints" / "epoch=0-step=1.ckpt", None)
    write_checkpoint(tmp_path / "checkpoints" / "last-v1.ckpt", "bbbbbbbbbbbb")
    assert other_runs_checkpoints(str(tmp_path)) == {str(tmp_path / "checkpoints" / "last-v1.ckpt"): "bbbbbbbbbbbb"}


def test_only_a_config_beside_a_checkpoints_folder_is_a_runs_record(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("seed_everything: 1\n")
    assert run_record_folder(str(tmp_path / "config.yaml")) is None
    (tmp_path / "checkpoints").mkdir()
    assert run_record_folder(str(tmp_path / "config.yaml")) == str(tmp_path)


def test_a_deeper_models_checkpoint_names_the_tensors_only_it_holds() -> None:
    model = {"net.0.weight": torch.zeros(2, 2)}
    deeper = {**model, "net.1.weight": torch.zeros(2, 2)}
    assert architecture_differences(deeper, model) == ["net.1.weight (only in the checkpoint)"]
    assert architecture_differences(model, deeper) == ["net.1.weight (only in the recipe's model)"]


def test_a_python_fit_into_a_runs_folder_leaves_its_config_as_the_run_wrote_it(tmp_path: Path) -> None:
    import lebm

    run = tmp_path / "run"
    write_checkpoint(run / "checkpoints" / "last.ckpt", "aaaaaaaaaaaa")
    (run / "config.yaml").write_text("# the run's own record\n")
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.logger", "false"]
    recipe = lebm.from_recipe("quickstart", [*quick, "--trainer.default_root_dir", str(run)])
    with pytest.raises(ValueError, match="holds checkpoints of run aaaaaaaaaaaa"):
        recipe.trainer().fit(recipe.model, datamodule=recipe.datamodule)
    assert (run / "config.yaml").read_text() == "# the run's own record\n"


def test_the_content_check_compares_only_the_datamodule_the_checkpoint_names(tmp_path: Path) -> None:
    """A digest kept by one DataModule class is compared with the same class's (other content: refused in
    one line), never with another class's, whose data differ by construction."""
    from lebm.cli.data_match import check_scored_content
    from lebm.data import ImageDataModule
    from lebm.data.content import ContentSources

    class Elsewhere:
        def setup(self, stage: str) -> None:
            pass

        def content_sources(self) -> ContentSources:
            return ContentSources([], {"test": torch.tensor([1, 2])}, None)

    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    write_checkpoint(path, "aaaaaaaaaaaa")
    checkpoint = torch.load(path, weights_only=True)
    content = {"digest": "0123456789abcdef", "files": 0, "bytes": 0, "root": None}
    checkpoint[RUN_KEY]["data"] = {"class_path": "lebm.data.ImageDataModule", "settings": {}, "content": content}
    torch.save(checkpoint, path)
    check_scored_content("test", str(path), Elsewhere(), on_purpose=False)  # another DataModule: not compared
    with pytest.raises(SystemExit):
        check_scored_content("test", str(path), ImageDataModule(dataset="digits"), on_purpose=False)
    check_scored_content("test", str(path), ImageDataModule(dataset="digits"), on_purpose=True)


def test_the_wandb_id_of_a_resumed_folder_is_kept_only_where_it_was_made(tmp_path: Path) -> None:
    """CPU, files only. ``wandb_run_id``: a resume in the folder that made the id continues it; the
    same files copied elsewhere get a fresh id and a line naming the id to continue on purpose; a new
    fit always gets a fresh id. (The whole command sequence: tests/cli/test_run_identity_sequences.py.)"""
    from lebm.cli.run_folder import WANDB_RUN_FOLDER_FILE, WANDB_RUN_ID_FILE, wandb_run_id

    made, copy = tmp_path / "made", tmp_path / "copy"
    for folder in (made, copy):
        folder.mkdir()
        (folder / WANDB_RUN_ID_FILE).write_text("abc123")
        (folder / WANDB_RUN_FOLDER_FILE).write_text(str(made))
    assert wandb_run_id(str(made), resuming=True) == ("abc123", None)
    fresh, line = wandb_run_id(str(copy), resuming=True)
    assert fresh != "abc123" and line is not None
    assert f"made in {made}" in line and "--trainer.logger.init_args.id abc123" in line
    new, said = wandb_run_id(str(made), resuming=False)
    assert new != "abc123" and said is None
