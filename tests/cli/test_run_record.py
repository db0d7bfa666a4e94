"""The run's own record is the run (device: CPU; the lebm command in this process): ``config.yaml``
writes back every Trainer limit exactly as given (an integer number of batches stays an integer, a
fraction of the epoch stays a fraction), and ``lebm fit -c <run>/config.yaml --ckpt_path last``, the
documented way to resume, trains what the run trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lebm.cli.app import BATCH_LIMITS, as_given
from tests.helpers.cli_runner import QUIET, run_cli

#: Every Trainer option that limits batches, and what the record must hold for each way of writing it.
LIMITS = (*BATCH_LIMITS, "overfit_batches")


def recorded_trainer(run: Path, name: str = "config.yaml") -> dict:
    return yaml.safe_load((run / name).read_text())["trainer"]


def steps(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.parametrize("key", LIMITS)
@pytest.mark.parametrize("value", [0, 1, 3, 0.5, 1.0])
def test_the_record_keeps_each_limit_as_the_run_used_it(key: str, value: float) -> None:
    """Device: CPU. The parser dumps an option typed ``float | int`` as a float (``1`` as ``1.0``,
    which reads back as the whole epoch); the record puts back the integer the run used, and only
    that: a float stays a float, and an integer the run did not use as one is left alone."""
    dumped = {"trainer": {key: float(value), "max_epochs": 1}, "model": {"init_args": {"betas": [0.5, 1.0]}}}
    used = {"trainer": {key: value, "max_epochs": 1}, "model": {"init_args": {"betas": (0.5, 1.0)}}}
    recorded = as_given(dumped, used)
    assert recorded["trainer"][key] == value and type(recorded["trainer"][key]) is type(value)
    assert recorded["model"]["init_args"]["betas"] == [0.5, 1.0]
    assert as_given({"trainer": {key: None}}, {"trainer": {key: None}}) == {"trainer": {key: None}}
    assert as_given({"trainer": {"flag": True}}, {"trainer": {"flag": 1}}) == {"trainer": {"flag": True}}


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_every_limit_round_trips_through_config_yaml_and_the_resume_trains_the_same(tmp_path: Path) -> None:
    """Device: CPU. One batch an epoch (``--trainer.limit_train_batches 1``) for one epoch, with every
    other limit given too (integers and a fraction): ``config.yaml`` holds each as given; resuming
    from that file for a second epoch trains one more batch (2 steps in all, not a whole epoch) and
    records the same limits again."""
    run = tmp_path / "Run"
    given = {
        "limit_train_batches": 1,
        "limit_val_batches": 1,
        "limit_test_batches": 2,
        "limit_predict_batches": 0.5,
    }
    flags = [item for key, value in given.items() for item in (f"--trainer.{key}", str(value))]
    run_cli(
        "fit", "-c", "recipes/quickstart.yaml", "--trainer.max_epochs", "1", *flags, *QUIET,
        "--trainer.default_root_dir", str(run),
    )  # fmt: skip
    trainer = recorded_trainer(run)
    assert {key: trainer[key] for key in given} == given
    assert all(type(trainer[key]) is type(value) for key, value in given.items()), trainer
    assert steps(run) == 1
    run_cli("fit", "-c", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_epochs", "2")
    assert steps(run) == 2  # one more batch: the record's 1 is one batch, not the whole epoch
    again = recorded_trainer(run)
    assert {key: again[key] for key in given} == given and again["max_epochs"] == 2


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_overfit_batches_round_trips_as_an_integer(tmp_path: Path) -> None:
    """Device: CPU. ``--trainer.overfit_batches 1`` (one batch, every epoch) is recorded as ``1``,
    and a run started from the record in another run folder trains one batch an epoch as well,
    writing its checkpoints into its own folder (the record does not pin lebm's checkpoint folder):
    the first run's checkpoint is left as it was."""
    run = tmp_path / "run"
    common = ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", *QUIET]
    run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.overfit_batches", "1", *common,
            "--trainer.default_root_dir", str(run))  # fmt: skip
    assert recorded_trainer(run)["overfit_batches"] == 1 and type(recorded_trainer(run)["overfit_batches"]) is int
    assert steps(run) == 1
    first = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    again = tmp_path / "again"
    run_cli("fit", "-c", str(run / "config.yaml"), "--trainer.default_root_dir", str(again))
    assert steps(again) == 1 and recorded_trainer(again)["overfit_batches"] == 1
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == first
