"""A Python run of a recipe prints none of Lightning's notices about lebm's own doing: no "args and
sys.argv" warning when the Python program has arguments of its own, no "will override existing
callbacks" when the same Trainer validates after fitting, no "💡 Tip:" advertisement, no note that
the Trainer skipped its default model summary, and no W&B warning that the run folder (its git root)
does not exist. Device: CPU, writing under tmp_path."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest

import lebm
from lebm.loggers import WandbLogger

wandb = pytest.importorskip("wandb")  # a dependency of lebm's; absent on the lent GPU machine


def test_fit_then_validate_from_python_prints_no_notice_about_lebms_own_callbacks_or_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["my_script.py", "--my-own-flag", "3"])
    overrides = {
        "trainer.max_steps": 2,
        "trainer.limit_val_batches": 1,
        "trainer.logger": False,
        "trainer.enable_progress_bar": False,
        "trainer.default_root_dir": str(tmp_path),
    }
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe = lebm.from_recipe("quickstart", overrides)
        trainer = L.Trainer(**recipe.trainer_settings, callbacks=recipe.callbacks)
        trainer.fit(recipe.model, datamodule=recipe.datamodule)
        (validated,) = trainer.validate(recipe.model, datamodule=recipe.datamodule, verbose=False)
    assert not [w for w in caught if "sys.argv" in str(w.message)]
    assert "will override existing callbacks" not in caplog.text
    assert "Tip:" not in caplog.text  # Lightning's advertisements (litlogger, litmodels)
    assert "already configured with model summary" not in caplog.text  # the recipe's Trainer's own summary
    assert "Total params" in caplog.text  # the user's Trainer still prints its model summary
    # the run's own callbacks are still there once each, and validation still ran
    kinds = [type(callback).__name__ for callback in trainer.callbacks]
    assert kinds.count("TrainerSettingsKept") == 1 and kinds.count("ValidateLastEpoch") == 1
    assert any(name.startswith("val/") for name in validated)


def test_a_wandb_run_started_from_python_finds_its_folder_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B looks for the git repository from the run's folder when the run starts, and warns
    "git root ... does not exist" when it is not made yet (a run from Python, before its first file)."""
    seen: dict[str, Any] = {}

    def init(**settings: Any) -> SimpleNamespace:
        seen["made"] = os.path.isdir(settings["dir"])
        return SimpleNamespace()

    monkeypatch.setenv("WANDB_MODE", "offline")  # Lightning sets it for an offline logger: restored after
    monkeypatch.setattr(wandb, "init", init)
    folder = tmp_path / "not_made_yet"
    logger = WandbLogger(save_dir=str(folder), offline=True)
    assert logger.experiment is not None and seen == {"made": True}
