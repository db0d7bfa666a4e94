"""What a checkpoint says of its data is compared, not trusted (device: CPU; tiny models on the toy
mixture, fitted for two steps):

- a checkpoint without an lebm identity (as an older lebm wrote it), or with a malformed one, is
  compared through the DataModule arguments Lightning stores with it, with one line saying what
  could not be checked (sequence 3 of the issue on run identity);
- an identity edited by hand (its seed, or its DataModule class) disagrees with those arguments and
  is refused as inconsistent (sequence 4);
- data given as dataloaders says that no data check ran;
- equal splits compare equal (a default given as None and its value);
- a subclass's fingerprint and its parent's compare both ways, and dict settings in any key order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lebm.data import MixtureDataModule
from lebm.data.errors import DataError
from lebm.data.fingerprint import comparable, differing_settings
from tests.helpers.trainers import quiet_trainer
from tests.training.test_run_identity import data, model


class SubMixture(MixtureDataModule):
    """A user's subclass of a lebm DataModule (importable here: tests.training.test_trained_data_record)."""


@pytest.fixture(scope="module")
def seven(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A checkpoint of a fit on the mixture drawn with seed 7, loaded as a dict."""
    folder = tmp_path_factory.mktemp("seven")
    trainer = quiet_trainer(max_steps=2, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model(), datamodule=data(7))
    trainer.save_checkpoint(folder / "last.ckpt")
    return torch.load(folder / "last.ckpt", weights_only=False)


def scored(checkpoint: dict, tmp_path: Path, seed: int, **kind: object) -> list[str]:
    """``trainer.test`` of ``checkpoint`` (written to a file) on the mixture of ``seed``; the warnings said."""
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        quiet_trainer(accelerator="cpu").test(model(), ckpt_path=str(path), **kind)
    return [str(warning.message) for warning in said]


@pytest.mark.parametrize("identity", ["stripped", None, "garbage", {"id": 3}])
def test_a_checkpoint_without_a_good_identity_is_compared_through_lightnings_record(
    seven: dict, tmp_path: Path, identity: object
) -> None:
    edited = dict(seven)
    if identity == "stripped":
        edited.pop("lebm_run")
    else:
        edited["lebm_run"] = identity
    with pytest.raises(DataError, match=r"seed 7 in training, 1 here"):
        scored(edited, tmp_path, 1, datamodule=data(1))
    said = scored(edited, tmp_path, 7, datamodule=data(7))
    assert any("DataModule arguments Lightning stored" in line and "could not be checked" in line for line in said)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 1), ("class_path", "lebm.data.ImageDataModule")],
)
def test_an_identity_edited_by_hand_is_refused_as_inconsistent(
    seven: dict, tmp_path: Path, field: str, value: object
) -> None:
    edited = {**seven, "lebm_run": {**seven["lebm_run"], "data": dict(seven["lebm_run"]["data"])}}
    if field == "seed":
        edited["lebm_run"]["data"]["settings"] = {**edited["lebm_run"]["data"]["settings"], "seed": value}
    else:
        edited["lebm_run"]["data"]["class_path"] = value
    with pytest.raises(DataError, match="disagrees with the DataModule arguments|names the DataModule"):
        scored(edited, tmp_path, 1, datamodule=data(1))


def test_data_given_as_dataloaders_says_no_check_ran(seven: dict, tmp_path: Path) -> None:
    loader = data(1)
    loader.setup()
    said = scored(seven, tmp_path, 1, dataloaders=loader.test_dataloader())
    assert sum("no data check ran" in line for line in said) == 1, said


def test_a_default_given_as_none_compares_equal_to_its_value() -> None:
    trained = {"class_path": "lebm.data.MNISTAnomalyDataModule", "settings": {"seed": None, "validate_on": None}}
    same = {"class_path": "lebm.data.MNISTAnomalyDataModule", "init_args": {"seed": 1, "validate_on": "val"}}
    assert differing_settings(trained, same) == []
    trained_cited = {"class_path": "lebm.data.MNISTAnomalyDataModule", "settings": {"seed": None, "split": "cited"}}
    cited = {"class_path": "lebm.data.MNISTAnomalyDataModule", "init_args": {"seed": 1, "split": "cited"}}
    assert differing_settings(trained_cited, cited) == [("seed", 42, 1)]  # None stands for the cited split's 42


def test_a_subclass_and_its_parent_compare_both_ways() -> None:
    sub = {"class_path": f"{__name__}.SubMixture", "settings": {"seed": 7}}
    parent = {"class_path": "lebm.data.MixtureDataModule", "settings": {"seed": 7}}
    assert differing_settings(sub, {"class_path": "lebm.data.MixtureDataModule", "init_args": {"seed": 1}})
    assert differing_settings(parent, {"class_path": f"{__name__}.SubMixture", "init_args": {"seed": 1}})


def test_dict_settings_compare_in_any_key_order() -> None:
    assert comparable({"a": 1, "b": [1, 2]}) == comparable({"b": (1, 2.0), "a": 1.0})
