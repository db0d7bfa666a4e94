"""The same weights evaluate alike however they are reached: ``trainer.validate`` right after
``fit`` reads what the checkpoint that fit saved reads when validated with it (``lebm validate
--ckpt_path``) (the evaluation
chains are seeded by the global step, which the checkpoint keeps). Device: CPU, under tmp_path."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

import lebm


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_validate_after_fit_reads_what_the_saved_checkpoint_reads(tmp_path: Path) -> None:
    overrides = {
        "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1,
        "trainer.logger": False,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.default_root_dir": str(tmp_path),
    }
    recipe = lebm.from_recipe("quickstart", overrides)
    trainer = L.Trainer(**recipe.trainer_settings, callbacks=recipe.callbacks)
    trainer.fit(recipe.model, datamodule=recipe.datamodule)
    (after_fit,) = trainer.validate(recipe.model, datamodule=recipe.datamodule, verbose=False)

    (checkpoint,) = (tmp_path / "checkpoints").glob("last*.ckpt")
    loaded = lebm.load(str(checkpoint), map_location="cpu")
    fresh = lebm.from_recipe("quickstart", overrides)  # the recipe's callbacks, as `lebm validate` builds them
    again = L.Trainer(**fresh.trainer_settings, callbacks=fresh.callbacks)
    # as `lebm validate --ckpt_path` does: the Trainer restores the checkpoint's step
    (from_checkpoint,) = again.validate(loaded, datamodule=recipe.datamodule, ckpt_path=str(checkpoint), verbose=False)
    assert after_fit.keys() == from_checkpoint.keys() and "val/nll" in after_fit
    assert after_fit == from_checkpoint  # the same chains' draws: the same numbers
