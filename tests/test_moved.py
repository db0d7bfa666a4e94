"""Nothing breaks for users of lebm 0.1 (device: CPU): old module paths import as the modules they
moved to, old class paths in recipes and checkpoints resolve through the alias table
(``lebm.moved``), the checkpoints written by lebm 0.1.0 (``tests/fixtures/checkpoints``) load and
generate, and a decoder written before the ``Decoder`` base runs as before."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from trainers import quiet_trainer

import lebm
from lebm.cli.resolve import resolve_recipe
from lebm.config import Configurable, build, import_object, to_config
from lebm.moved import MOVED_MODULES, MOVED_NAMES, current_path
from lebm.nets import Decoder, MLPGenerator

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_imports_as_the_module_it_moved_to(old: str) -> None:
    assert not (REPO / (old.replace(".", "/") + ".py")).exists(), f"{old} exists again: drop its alias"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert importlib.import_module(old) is importlib.import_module(MOVED_MODULES[old])


@pytest.mark.parametrize("old", sorted(MOVED_NAMES))
def test_an_old_name_resolves_to_the_object_it_moved_to(old: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert import_object(old) is import_object(MOVED_NAMES[old])


def test_current_path_rewrites_the_longest_moved_prefix_and_leaves_others() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert current_path("lebm.models.nets.encoders.ConvEncoder") == "lebm.nets.encoders.ConvEncoder"
        assert current_path("lebm.models.nets.ConvEncoder") == "lebm.nets.ConvEncoder"
    assert current_path("lebm.models.LatentEBM") == "lebm.models.LatentEBM"
    assert current_path("my_parts.MALA") == "my_parts.MALA"


def old_paths(config: Any) -> Any:
    """``config`` with every class path written as lebm 0.1 wrote it."""
    back = {
        "lebm.nets.": "lebm.models.nets.",
        "lebm.speed.": "lebm.callbacks.",
        "lebm.data.toy.": "lebm.data.synthetic.",
    }
    if isinstance(config, dict):
        return {key: old_paths(value) for key, value in config.items()}
    if isinstance(config, list):
        return [old_paths(value) for value in config]
    if isinstance(config, str):
        for new, old in back.items():
            if config.startswith(new):
                return old + config[len(new) :]
    return config


def test_a_recipe_with_the_old_class_paths_parses_to_the_same_config(tmp_path) -> None:
    """The CLI (jsonargparse) and build() read a 0.1 recipe: nets under lebm.models.nets, speed
    callbacks under lebm.callbacks."""
    current = resolve_recipe(REPO / "recipes" / "quickstart.yaml")
    written = old_paths(current)
    assert "lebm.models.nets.GaussianDecoder" in yaml.safe_dump(written)
    assert "lebm.callbacks.CPUThreads" in yaml.safe_dump(written)
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump(written))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = resolve_recipe(recipe)
        model = build(written["model"])
        assert yaml.safe_dump(to_config(parsed["model"])) == yaml.safe_dump(current["model"])
        classes = [import_object(c["class_path"]) for c in parsed["trainer"]["callbacks"]]
    assert classes == [import_object(c["class_path"]) for c in current["trainer"]["callbacks"]]
    assert type(model).__name__ == "LatentEBM"


@pytest.mark.parametrize("name", ["latent_ebm", "multistage_nce", "dual_mcmc", "joint_hierarchical_ebm"])
def test_a_checkpoint_of_lebm_0_1_loads_and_generates(name: str, tmp_path) -> None:
    path = FIXTURES / f"{name}.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert "lebm.models.nets." in yaml.safe_dump(stored["hyper_parameters"])  # the fixture keeps 0.1's paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = lebm.load(str(path))
    for key, value in stored["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key
    samples = model.generate(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 2) and torch.isfinite(samples).all()
    # saved again, it records the current paths
    trainer = quiet_trainer(accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "again.ckpt")
    again = torch.load(tmp_path / "again.ckpt", map_location="cpu", weights_only=True)
    assert "lebm.models.nets." not in yaml.safe_dump(again["hyper_parameters"])
    assert "lebm.nets." in yaml.safe_dump(again["hyper_parameters"])


class OldStyleDecoder(nn.Module, Configurable):
    """A decoder as lebm 0.1's docs taught: nll and decode only, no Decoder base."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def decode(self, z: Tensor) -> Tensor:
        return self.net(z)

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        return (x - self.net(z)).square().sum(1) / 0.18


def test_a_decoder_without_the_base_trains_with_the_bases_hooks() -> None:
    from lebm.models import LatentEBM, TiltedGaussianPrior
    from lebm.nets import EnergyMLP
    from lebm.samplers import Langevin

    with pytest.warns(DeprecationWarning, match="does not subclass lebm.nets.Decoder"):
        model = LatentEBM(
            OldStyleDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None)),
            TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(3, 0.3)),
            posterior_sampler=Langevin(3, 0.1),
        )
    assert model.evaluation_outputs == ("nll", "score", "score_reconstruction_term", "score_prior_term")
    assert model.decoder_contract.generator_net() is model.decoder.net
    x = torch.randn(4, 2)
    assert model.observations(x) is x and model.presented(x, raw=False) is x
    trainer = quiet_trainer(
        max_steps=4,
        accelerator="cpu",
        inference_mode=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8))
    assert trainer.global_step == 4  # two batches, two optimisers each
    (logged,) = trainer.validate(model, DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=8), verbose=False)
    assert torch.isfinite(torch.tensor(logged["val/nll"]))


def test_the_decoder_base_calls_a_subclass_hooks_and_refuses_a_missing_nll() -> None:
    class Counting(Decoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2)
            self.held = 0

        def decode(self, z: Tensor) -> Tensor:
            return self.net(z)

        def nll(self, x: Tensor, z: Tensor) -> Tensor:
            return (x - self.net(z)).square().sum(1)

        def hold_noise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
            self.held += 1

    from lebm.models import LatentEBM, TiltedGaussianPrior
    from lebm.nets import EnergyMLP
    from lebm.samplers import Langevin

    decoder = Counting()
    model = LatentEBM(decoder, TiltedGaussianPrior(3, EnergyMLP(3, hidden=8)), posterior_sampler=Langevin(2, 0.1))
    trainer = quiet_trainer(
        max_steps=4,
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8))
    assert decoder.held == 2
    with pytest.raises(NotImplementedError, match="must implement nll"):
        Decoder().nll(torch.zeros(1, 2), torch.zeros(1, 3))
