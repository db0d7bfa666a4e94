"""The progress bar of lebm's commands shows no ``v_num`` fragment (Lightning's last four characters
of the loggers' versions joined: ``8a9_`` for a W&B id beside ``metrics.csv``), and a bar the user
names is kept as given. Device: CPU, writing under tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from lebm.callbacks import RunProgressBar
from lebm.cli.catalog import locate_config_args
from lebm.cli.recipe_api import RecipeBuild
from lebm.cli.recipes import expand_includes
from lebm.metrics_table import MetricsTable

wandb = pytest.importorskip("wandb")  # a dependency of lebm's; absent on the lent GPU machine


def bar_values(bar: TQDMProgressBar, tmp_path: Path) -> dict:
    from lebm.loggers import WandbLogger

    loggers = [WandbLogger(id="abcd8a9x", offline=True, save_dir=str(tmp_path)), MetricsTable(str(tmp_path))]
    trainer = L.Trainer(logger=loggers, callbacks=[bar], default_root_dir=str(tmp_path), enable_model_summary=False)
    return bar.get_metrics(trainer, L.LightningModule())


def test_lightnings_bar_shows_a_fragment_of_the_wandb_id_and_lebms_shows_none(tmp_path: Path) -> None:
    assert bar_values(TQDMProgressBar(), tmp_path / "lightning") == {"v_num": "a9x_"}  # what the issue saw
    assert "v_num" not in bar_values(RunProgressBar(), tmp_path / "lebm")


def build(tmp_path: Path, *args: str) -> L.Trainer:
    """The Trainer ``lebm fit -c quickstart ARGS`` builds."""
    settings = ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", *args]
    expanded = expand_includes(locate_config_args(["fit", "-c", "quickstart", *settings]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return RecipeBuild(args=expanded[1:], run=False).trainer


def test_lebm_commands_swap_lightnings_own_bar_and_keep_a_bar_the_user_names(tmp_path: Path) -> None:
    assert type(build(tmp_path / "default").progress_bar_callback) is RunProgressBar
    named = build(
        tmp_path / "named",
        "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
        "--trainer.callbacks.refresh_rate=7",
    )
    assert type(named.progress_bar_callback) is TQDMProgressBar and named.progress_bar_callback.refresh_rate == 7
    assert build(tmp_path / "off", "--trainer.enable_progress_bar", "false").progress_bar_callback is None
