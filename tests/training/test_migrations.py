"""Checkpoints of earlier lebm versions name their parts by the class paths of then (device: CPU):
the rewrite table ``lebm.training.migrations.MOVED_CLASS_PATHS`` reads them as the current ones, so
the checkpoints written by lebm 0.1.0 (``tests/fixtures/checkpoints``) load and generate; a path
the table does not know is a clear error; and nothing else of the old layout answers any more (no
import hook, no old module)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import lebm
from lebm.checkpoints import read_checkpoint
from lebm.config import current_class_path, import_object, to_config
from lebm.training.migrations import MOVED_CLASS_PATHS
from tests.fixtures.checkpoints.make import models as fixture_models
from tests.helpers.subprocesses import HANG_SECONDS
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import dual_mcmc

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"
METHODS = ["latent_ebm", "multistage_nce", "dual_mcmc", "joint_hierarchical_ebm"]


def with_class_paths(config: Any, rewrite: dict[str, str]) -> Any:
    """``config`` with every ``class_path`` that ``rewrite`` names replaced."""
    if isinstance(config, dict):
        return {
            key: rewrite.get(value, value) if key == "class_path" else with_class_paths(value, rewrite)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [with_class_paths(value, rewrite) for value in config]
    return config


@pytest.mark.parametrize("name", METHODS)
def test_a_checkpoint_of_lebm_0_1_loads_and_generates(name: str, tmp_path) -> None:
    path = FIXTURES / f"{name}.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert "lebm.models.nets." in yaml.safe_dump(stored["hyper_parameters"])  # the fixture keeps 0.1's paths
    model = lebm.load(str(path))
    for key, value in stored["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key
    samples = model.generate(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 2) and torch.isfinite(samples).all()
    assert type(model).load_from_checkpoint(path).hparams == model.hparams  # Lightning's loader reads it too
    # saved again, it records the current paths
    trainer = quiet_trainer(accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "again.ckpt")
    again = torch.load(tmp_path / "again.ckpt", map_location="cpu", weights_only=True)
    assert "lebm.models.nets." not in yaml.safe_dump(again["hyper_parameters"])
    assert "lebm.nets." in yaml.safe_dump(again["hyper_parameters"])


def test_a_checkpoint_naming_each_kind_of_old_path_loads(tmp_path) -> None:
    """A module row below a moved package (``lebm.models.nets.generators.MLPGenerator``) and a name
    row (``lebm.models.priors.ProductOfRatiosPrior``: the class left a module that still exists)."""
    checkpoint = torch.load(FIXTURES / "multistage_nce.ckpt", map_location="cpu", weights_only=True)
    old = {
        "lebm.models.nets.MLPGenerator": "lebm.models.nets.generators.MLPGenerator",
        "lebm.models.ProductOfRatiosPrior": "lebm.models.priors.ProductOfRatiosPrior",
    }
    checkpoint["hyper_parameters"] = with_class_paths(checkpoint["hyper_parameters"], old)
    written = yaml.safe_dump(checkpoint["hyper_parameters"])
    assert all(path in written for path in old.values())
    torch.save(checkpoint, tmp_path / "old.ckpt")
    model = lebm.load(str(tmp_path / "old.ckpt"))
    assert type(model.prior).__name__ == "ProductOfRatiosPrior"
    assert model.hparams["prior"]["class_path"] == "lebm.models.ProductOfRatiosPrior"  # the current path
    assert model.generate(3).shape == (3, 2)


def test_a_class_path_the_table_does_not_know_is_a_clear_error(tmp_path) -> None:
    checkpoint = torch.load(FIXTURES / "latent_ebm.ckpt", map_location="cpu", weights_only=True)
    gone = {"lebm.models.nets.GaussianDecoder": "lebm.models.nets.NoSuchDecoder"}
    checkpoint["hyper_parameters"] = with_class_paths(checkpoint["hyper_parameters"], gone)
    torch.save(checkpoint, tmp_path / "gone.ckpt")
    with pytest.raises(
        ValueError,
        match=r"gone.ckpt names lebm.models.nets.NoSuchDecoder \(read as lebm.nets.NoSuchDecoder\), which this lebm "
        r"\(.*\) does not have \(the checkpoint was written by an lebm of 0.2.0 or earlier",
    ):
        lebm.load(str(tmp_path / "gone.ckpt"))
    with pytest.raises(ValueError, match=r"cannot import 'lebm.gone.Thing': No module named 'lebm.gone'"):
        import_object("lebm.gone.Thing")


def is_module(path: str) -> bool:
    try:
        importlib.import_module(path)
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("old", sorted(MOVED_CLASS_PATHS))
def test_each_row_leads_from_a_path_that_is_gone_to_one_that_is_there(old: str) -> None:
    new = MOVED_CLASS_PATHS[old]
    if is_module(new):  # a module row: the old module is gone
        assert not is_module(old), f"{old} is a module again: drop its row"
    else:  # a name row: the class left a module that is still there
        module, _, name = old.rpartition(".")
        assert not hasattr(importlib.import_module(module), name), f"{old} is back: drop its row"
        assert import_object(old) is import_object(new)


def test_the_table_rewrites_the_longest_moved_prefix_and_leaves_others() -> None:
    assert current_class_path("lebm.models.nets.encoders.ConvEncoder") == "lebm.nets.encoders.ConvEncoder"
    assert current_class_path("lebm.models.nets.ConvEncoder") == "lebm.nets.ConvEncoder"
    assert current_class_path("lebm.models.latents.LatentGroups") == "lebm.nets.latents.LatentGroups"
    assert current_class_path("lebm.models.priors.ProductOfRatiosPrior") == "lebm.models.ProductOfRatiosPrior"
    for path in ("lebm.models.LatentEBM", "lebm.models.priors.TiltedGaussianPrior", "my_parts.MALA"):
        assert current_class_path(path) == path
    # a checkpoint's config as the resume check reads it: current paths, nothing else changed
    stored = {"class_path": "lebm.models.nets.MLPGenerator", "init_args": {"latent_dim": 3, "out_shape": [2]}}
    assert to_config(stored) == {**stored, "class_path": "lebm.nets.MLPGenerator"}


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_no_import_hook_and_no_old_module() -> None:
    """``import lebm`` adds no finder to ``sys.meta_path``; the old module paths and the names that
    left a module are gone (a fresh process, in which a checkpoint of 0.1 still loads)."""
    code = """
import sys
import lebm

def owner(finder):
    return (finder if isinstance(finder, type) else type(finder)).__module__.split(".")[0]

assert not [f for f in sys.meta_path if owner(f) == "lebm"], sys.meta_path
assert lebm.load(sys.argv[1]).generate(2).shape == (2, 2)
for old in ("lebm.models.nets", "lebm.models.nets.encoders", "lebm.moved", "lebm.cli_app", "lebm.data.synthetic"):
    try:
        __import__(old)
    except ModuleNotFoundError:
        continue
    raise AssertionError(f"{old} imports")
try:
    from lebm.checkpoints import load_method  # noqa: F401 (moved to lebm.models.loading)
except ImportError:
    pass
else:
    raise AssertionError("lebm.checkpoints.load_method imports")
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURES / "latent_ebm.ckpt")],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    assert "FutureWarning" not in result.stderr


def test_an_old_module_path_does_not_import() -> None:
    with pytest.raises(ModuleNotFoundError, match="lebm.models.nets"):
        import lebm.models.nets  # noqa: F401


def test_a_migrated_encoders_new_optimiser_state_ids_do_not_collide_with_saved_ones() -> None:
    """Device: CPU. A DualMCMC checkpoint saved without some encoder parameters (its head biases,
    here two of them, one between saved ones): when it loads, the encoder's Adam state gets new ids
    for them that no saved entry has, so loaded into the encoder's Adam every saved slot lands on
    its own parameter and the new ones start empty."""
    torch.manual_seed(0)
    model = dual_mcmc()
    named = list(model.encoder.named_parameters())
    missing = {"net.2.bias", "net.4.bias"}
    saved = [p for name, p in named if name not in missing]
    earlier = torch.optim.Adam(saved, lr=1e-3)  # the earlier version's encoder optimiser: ids 0..3
    for p in saved:
        p.grad = torch.randn_like(p)
    earlier.step()
    checkpoint: dict[str, Any] = {
        "state_dict": {f"encoder.{name}": p.detach().clone() for name, p in named if name not in missing},
        "optimizer_states": [
            {"state": {}, "param_groups": []},
            earlier.state_dict(),
            {"state": {}, "param_groups": []},
        ],
    }
    saved_ids = set(checkpoint["optimizer_states"][1]["state"])
    model.on_load_checkpoint(checkpoint)

    ids = checkpoint["optimizer_states"][1]["param_groups"][0]["params"]
    assert len(ids) == len(named) and len(set(ids)) == len(ids), ids
    new_ids = {i for i, (name, _) in zip(ids, named, strict=True) if name in missing}
    assert not new_ids & saved_ids, ids
    resumed = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
    resumed.load_state_dict(checkpoint["optimizer_states"][1])
    for name, p in named:
        if name in missing:
            assert p not in resumed.state, name
        else:
            assert torch.equal(resumed.state[p]["exp_avg"], earlier.state[p]["exp_avg"]), name


BEFORE_THE_MOVE = FIXTURES / "before_issue_99"


@pytest.mark.parametrize("name", [*METHODS, "damc"])
def test_a_checkpoint_written_before_the_base_left_lebm_models_loads_and_resumes(name: str, tmp_path) -> None:
    """CPU. The five methods' checkpoints written at commit 1654c9f, before the base's machinery and
    the recording moved out of ``lebm/models/`` (issue 99): ``lebm.load`` reads every weight and the
    model generates; a Trainer resumes the fit from it (optimisers, streams, run id) for one more step."""
    path = BEFORE_THE_MOVE / f"{name}.ckpt"
    stored = read_checkpoint(path)
    model = lebm.load(str(path))
    for key, value in stored["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key
    samples = model.generate(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 2) and torch.isfinite(samples).all()
    resumed = fixture_models()[name]
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    trainer = quiet_trainer(max_steps=3, accelerator="cpu", limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(resumed, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=16), ckpt_path=path)
    assert trainer.global_step == 3 and resumed.run_id == stored["lebm_run"]["id"]
