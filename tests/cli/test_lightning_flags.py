"""Lightning's optimisation flags and callbacks through ``lebm fit`` (the command in this process):
``accumulate_grad_batches`` and ``gradient_clip_val`` act on the quickstart's nets and steps count
iterations; callbacks and flags that cannot apply stop the command at build with one line, and a
Trainer clip that the recipe's per-net clips override is named in one warning.
Device: CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli_runner import SHORT_RUN, run_cli


def test_accumulation_and_clipping_flags_through_the_command(tmp_path: Path) -> None:
    """``--trainer.accumulate_grad_batches 2 --trainer.gradient_clip_val 1.0`` on 3 batches an epoch
    for 2 epochs: 2 updates an epoch (after batches 2 and 3), so the checkpoint is ``step=4``; the
    run's config records both flags."""
    run = tmp_path / "run"
    run_cli(
        "fit", "-c", "quickstart", *SHORT_RUN,
        "--trainer.default_root_dir", str(run),
        "--trainer.max_epochs", "2",
        "--trainer.logger", "false",
        "--trainer.accumulate_grad_batches", "2",
        "--trainer.gradient_clip_val", "1.0",
    )  # fmt: skip
    names = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert "epoch=1-step=4.ckpt" in names, names
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert trainer["accumulate_grad_batches"] == 2 and trainer["gradient_clip_val"] == 1.0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4


@pytest.mark.parametrize(
    ("callback", "named"),
    [
        (["lightning.pytorch.callbacks.StochasticWeightAveraging", "--trainer.callbacks.swa_lrs", "0.01"], "WeightEMA"),
        (["lightning.pytorch.callbacks.BatchSizeFinder"], "data.init_args.batch_size"),
        (["lebm.callbacks.HierarchicalSampleGrid"], "needs a method with sample_layer"),
        (["lebm.callbacks.MarginalLikelihood"], "normalised"),
    ],
    ids=["SWA", "BatchSizeFinder", "a-callback-for-another-method", "a-callback-for-another-decoder"],
)
def test_callbacks_that_cannot_apply_stop_the_command_at_build(
    tmp_path: Path, callback: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command exits with code 2 and one ``lebm: error:`` line naming lebm's way, before any
    training (no checkpoint)."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit", "-c", "quickstart", *SHORT_RUN,
            "--trainer.default_root_dir", str(run),
            "--trainer.logger", "false",
            "--trainer.callbacks+", *callback,
        )  # fmt: skip
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lebm: error:")]
    assert len(errors) == 1 and named in errors[0]
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("accumulate_grad_batches", "0", "accumulate_grad_batches must be"),
        ("gradient_clip_val", "-1", "gradient_clip_val must be"),
        ("gradient_clip_algorithm", "foo", "gradient_clip_algorithm"),
    ],
)
def test_bad_optimisation_settings_stop_at_build_in_one_line(
    tmp_path: Path, flag: str, value: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out-of-range accumulation or clipping settings: one ``lebm: error:`` line, exit code 2."""
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit", "-c", "quickstart", *SHORT_RUN,
            "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.logger", "false",
            f"--trainer.{flag}", value,
        )  # fmt: skip
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lebm: error:")]
    assert len(errors) == 1 and named in errors[0]


@pytest.mark.slow
def test_damc_recipe_names_its_per_net_clips_and_refuses_16_bit_weights_at_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lebm fit -c damc/quickstart --trainer.gradient_clip_val 1 --trainer.precision bf16-true``:
    DAMC's recipes clip each net by its own max-norm, so the Trainer's value clips none of them: one
    warning names the three options; then bf16-true (16-bit weights) stops the build in one line
    naming bf16-mixed, the only ``lebm:`` line (no warning that bf16 runs slowly on this CPU).
    Slow (a DAMC recipe built by the command, about 10 s on a busy machine); the fast tier guards the
    same check in Python (tests/models/test_trainer_flags_refused.py)."""
    with pytest.warns(UserWarning) as record, pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit", "-c", "damc/quickstart", *SHORT_RUN,
            "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.logger", "false",
            "--trainer.gradient_clip_val", "1",
            "--trainer.precision", "bf16-true",
        )  # fmt: skip
    clips = [str(warning.message) for warning in record if "gradient_clip_val" in str(warning.message)]
    assert len(clips) == 1 and clips[0].startswith(
        "trainer.gradient_clip_val=1 does not clip DAMC's decoder, prior and amortizer"
    )
    for option in ("decoder_grad_clip", "prior_grad_clip", "amortizer_grad_clip"):
        assert f"model.init_args.{option}=100" in clips[0]
    assert not [warning for warning in record if "slower" in str(warning.message)], "bf16-true is not run at all"
    assert stopped.value.code == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lebm:")]
    assert len(said) == 1 and said[0].startswith("lebm: error:") and "use bf16-mixed" in said[0], said
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_multistage_nce_stages_are_checked_at_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A short debug run of MultiStageNCE (3 batches, 1 epoch) cannot fill its 4 stages: one line at
    build, nothing written into the run folder."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit", "-c", "multistage_nce/quickstart",
            "--trainer.default_root_dir", str(run),
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "3",
            "--trainer.logger", "false",
        )  # fmt: skip
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lebm: error:")]
    assert len(errors) == 1 and "3 training iterations cannot fill 4 stages" in errors[0]
    assert not run.exists() or not any(run.iterdir())


def test_a_share_of_an_epoch_that_gives_no_batch_is_one_line() -> None:
    """Lightning's error for ``limit_train_batches 0.0001`` of 14 batches (raised when the loaders are
    made) becomes one line with the smallest share that gives a batch (it was a traceback)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lebm.cli import trainer_flags

    error = MisconfigurationException(
        "You requested to check 0.0001 of the `train_dataloader` but 0.0001 * 14 < 1. Please increase the "
        "`limit_train_batches` argument. Try at least `limit_train_batches=0.07142857142857142`"
    )
    assert trainer_flags.too_small_share(error) == (
        "trainer.limit_train_batches=0.0001 of the 14 train batches is no batch: give a number of batches (an int "
        ">= 1), or a share of at least 0.0714"
    )
    assert trainer_flags.too_small_share(MisconfigurationException("another")) is None
