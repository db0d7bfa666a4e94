"""A Python run of a recipe prints none of Lightning's notices about lebm's own doing: no "args and
sys.argv" warning when the Python program has arguments of its own, no "will override existing
callbacks" when the same Trainer validates after fitting. Device: CPU, writing under tmp_path."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest

import lebm


def test_fit_then_validate_from_python_prints_no_notice_about_lebms_own_callbacks_or_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["my_script.py", "--my-own-flag", "3"])
    overrides = {
        "trainer.max_steps": 2,
        "trainer.limit_val_batches": 1,
        "trainer.logger": False,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
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
    # the run's own callbacks are still there once each, and validation still ran
    kinds = [type(callback).__name__ for callback in trainer.callbacks]
    assert kinds.count("TrainerSettingsKept") == 1 and kinds.count("ValidateLastEpoch") == 1
    assert any(name.startswith("val/") for name in validated)
