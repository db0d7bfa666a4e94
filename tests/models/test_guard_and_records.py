"""The divergence guard, and components that reload from checkpoints whoever built them.

- A non-finite loss, energy or chain state stops training with a message naming the quantity,
  the epoch and step and what to lower; the last checkpoint on disk is the last good state.
- Thresholds on named quantities apply from a given epoch on.
- A user's own module given by class_path in a recipe is recorded from that config, so the
  checkpoint reloads without it; one built in Python gets a warning naming what to pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lebm.models import DivergenceGuard, LatentEBM, TrainingDiverged
from tests.helpers.cli_runner import SHORT_RUN, run_cli

QUICK = [*SHORT_RUN, "--trainer.logger", "false"]


def test_non_finite_values_always_stop_and_limits_from_their_epoch() -> None:
    guard = DivergenceGuard({"train/loss": 10.0}, after_epoch=2, hint="Lower the learning rate.")
    guard.check({"train/loss": torch.tensor(50.0)}, epoch=1, step=4)  # over the limit, before its epoch
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 4: train/loss = 50 > limit 10\. .*Lower the learning"):
        guard.check({"train/loss": torch.tensor(-50.0)}, epoch=2, step=4)  # |value| counts
    states = torch.zeros(8, 3)
    states[5, 1] = float("inf")
    with pytest.raises(TrainingDiverged, match="train/states = non-finite entries"):
        guard.check({"train/loss": torch.tensor(1.0), "train/states": states}, epoch=0, step=0)
    with pytest.raises(TrainingDiverged, match="another process"):
        guard.check({"train/loss": torch.tensor(1.0)}, epoch=0, step=0, decide=lambda bad: True)  # a rank voted stop


def test_many_quantities_are_checked_each_against_its_own_limit() -> None:
    """Device: CPU. The scalars are checked as one stacked vector against a vector of limits: each
    limit must meet its own quantity, whatever the order and whatever else is logged."""
    guard = DivergenceGuard({"c": 10.0, "a": 1e9})
    calm = {"c": torch.tensor([9.5]), "a": torch.tensor(1e6), "b": torch.tensor(-5e8), "z": torch.zeros(4, 3)}
    for _ in range(2):  # the limits vector is cached: the second check reads the same one
        guard.check(calm, epoch=0, step=0)  # b has no limit; c and a are under theirs
    with pytest.raises(TrainingDiverged, match=r"c = 10\.5 > limit 10"):
        guard.check({**calm, "c": torch.tensor([-10.5])}, epoch=0, step=1)
    with pytest.raises(TrainingDiverged, match="b = nan"):
        guard.check({**calm, "b": torch.tensor(float("nan"))}, epoch=0, step=2)
    with pytest.raises(TrainingDiverged, match="a = 2e\\+09 > limit"):
        guard.check({"c": torch.tensor(1.0), "a": torch.tensor(2e9)}, epoch=0, step=3)  # other names, other order
    limited_states = DivergenceGuard({"z": 3.0})
    with pytest.raises(TrainingDiverged, match="z = 4 > limit 3"):
        limited_states.check({"loss": torch.tensor(1.0), "z": torch.full((4, 3), -4.0)}, epoch=0, step=0)


def test_a_diverging_run_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    extra = tmp_path / "poison.yaml"
    extra.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, every_n_epochs: 1}\n"
        "    - class_path: cases.PoisonAt\n      init_args: {epoch: 2}\n"
    )
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit",
            "-c",
            "recipes/quickstart.yaml",
            "-c",
            str(extra),
            *QUICK,
            "--trainer.max_epochs",
            "4",
            "--trainer.default_root_dir",
            str(run),
        )
    assert stopped.value.code == 1
    message = capsys.readouterr().err
    assert "training diverged at epoch 2, step 0: train/" in message and "(not finite)" in message
    assert "Lower model.init_args.decoder_lr / prior_lr" in message and "Traceback" not in message
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1  # written at the end of epoch 1, before the poisoned step
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())


def test_a_users_module_from_a_recipe_reloads_without_being_passed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    energy = '{"class_path": "cases.PlainEnergy", "init_args": {"dim": 16, "width": 24}}'
    run_cli(
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        *QUICK,
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(run),
        "--model.init_args.prior.init_args.energy_net",
        energy,
    )
    checkpoint = run / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert stored["_class_path"] == "lebm.models.LatentEBM"  # the public path
    assert stored["prior"]["init_args"]["energy_net"]["class_path"] == "cases.PlainEnergy"
    model = LatentEBM.load_from_checkpoint(checkpoint)  # nothing passed again
    assert type(model.prior.energy_net).__name__ == "PlainEnergy" and model.prior.energy_net.net[0].out_features == 24
    run_cli(
        "test",
        "-c",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(checkpoint),
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "tested"),
    )
