"""Components describe themselves as class_path/init_args configs and are rebuilt from them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.config import build, to_config
from lebm.models import TiltedGaussianPrior
from lebm.nets import EnergyMLP
from lebm.samplers import Langevin, PersistentChains


def test_round_trip_of_nested_components() -> None:
    prior = TiltedGaussianPrior(
        8, EnergyMLP(8, hidden=16), sampler=PersistentChains(Langevin(5, 0.2), shape=[8], buffer_size=32)
    )
    config = to_config(prior)
    assert config["class_path"] == "lebm.models.TiltedGaussianPrior"  # the public path, stable across file moves
    assert config["init_args"]["sampler"]["init_args"]["sampler"]["init_args"]["n_steps"] == 5
    rebuilt = build(config)
    assert isinstance(rebuilt.sampler, PersistentChains) and rebuilt.sampler.sampler.n_steps == 5
    rebuilt.load_state_dict(prior.state_dict())
    z = torch.randn(3, 8)
    assert torch.equal(rebuilt.energy(z), prior.energy(z))


def test_positional_arguments_are_recorded_by_name() -> None:
    assert to_config(Langevin(7, 0.3))["init_args"]["n_steps"] == 7


def test_foreign_modules_are_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="load_from_checkpoint"):
        to_config(nn.Linear(2, 2))


def test_bad_class_path_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot import"):
        build({"class_path": "lebm.samplers.NoSuchSampler"})


def test_lebm_load_refuses_a_checkpoint_of_no_lebm_method(tmp_path) -> None:
    import lebm

    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, path)
    with pytest.raises(ValueError, match="not saved by an lebm method"):
        lebm.load(path)
