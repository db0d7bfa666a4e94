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


OLD_MODULES = sorted({*MOVED_MODULES, "lebm.models.nets.encoders", "lebm.models.nets.resnets", "lebm.models.nets.text"})


@pytest.mark.parametrize("old", OLD_MODULES)
def test_an_old_module_path_imports_as_the_module_it_moved_to(old: str) -> None:
    assert not (REPO / (old.replace(".", "/") + ".py")).exists(), f"{old} exists again: drop its alias"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert importlib.import_module(old) is importlib.import_module(current_path(old))


@pytest.mark.parametrize("old", sorted(MOVED_NAMES))
def test_an_old_name_imports_from_its_old_module_as_the_object_it_moved_to(old: str) -> None:
    """``from old.module import Name`` (what jsonargparse does with a class path) and
    ``import_object`` both reach the object where it lives now."""
    module, _, name = old.rpartition(".")
    module_name, _, attribute = MOVED_NAMES[old].rpartition(".")
    moved_to = getattr(importlib.import_module(module_name), attribute)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert getattr(importlib.import_module(module), name) is moved_to
        assert import_object(old) is moved_to


def test_a_path_below_an_old_module_and_the_new_modules_spec() -> None:
    """A submodule below a moved package resolves to the one real module, whose spec, name and
    reload stay its own; a name a module never had is still an AttributeError."""
    import importlib.util

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = importlib.import_module("lebm.models.nets.latents")  # never a module of its own in 0.1
    import lebm.nets.latents as new

    assert old is new and new.__name__ == new.__spec__.name == "lebm.nets.latents"
    assert importlib.util.find_spec("lebm.nets").name == "lebm.nets"
    assert importlib.reload(new).__name__ == "lebm.nets.latents"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        importlib.import_module("lebm.models.priors").Nothing  # noqa: B018


def test_an_old_path_warns_once_with_the_new_one() -> None:
    import subprocess
    import sys

    code = (
        "import lebm.models.nets, lebm.models.nets.encoders\n"
        "from lebm.config import import_object\n"
        "import_object('lebm.models.nets.MLPGenerator')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("FutureWarning") == 1 and "lebm.models.nets moved to lebm.nets" in result.stderr


def test_current_path_rewrites_the_longest_moved_prefix_and_leaves_others() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
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
        warnings.simplefilter("ignore", FutureWarning)
        parsed = resolve_recipe(recipe)
        model = build(written["model"])
        assert yaml.safe_dump(to_config(parsed["model"])) == yaml.safe_dump(current["model"])
        classes = [import_object(c["class_path"]) for c in parsed["trainer"]["callbacks"]]
    assert classes == [import_object(c["class_path"]) for c in current["trainer"]["callbacks"]]
    assert type(model).__name__ == "LatentEBM"


def test_a_recipe_naming_a_class_that_left_its_module_parses(tmp_path) -> None:
    """``lebm.models.priors.ProductOfRatiosPrior`` (lebm 0.1's module of the class) in a recipe."""
    current = resolve_recipe(REPO / "recipes" / "multistage_nce" / "quickstart.yaml")
    assert current["model"]["init_args"]["prior"]["class_path"] == "lebm.models.ProductOfRatiosPrior"
    current["model"]["init_args"]["prior"]["class_path"] = "lebm.models.priors.ProductOfRatiosPrior"
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump(current))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        parsed = resolve_recipe(recipe)
        assert import_object(parsed["model"]["init_args"]["prior"]["class_path"]).__module__ == "lebm.models.stages"


@pytest.mark.parametrize("name", ["latent_ebm", "multistage_nce", "dual_mcmc", "joint_hierarchical_ebm"])
def test_a_checkpoint_of_lebm_0_1_loads_and_generates(name: str, tmp_path) -> None:
    path = FIXTURES / f"{name}.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert "lebm.models.nets." in yaml.safe_dump(stored["hyper_parameters"])  # the fixture keeps 0.1's paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
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

    with pytest.warns(FutureWarning, match="does not subclass lebm.nets.Decoder"):
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


def test_the_view_of_an_old_decoder_keeps_its_own_values_and_copies() -> None:
    import copy
    import pickle

    from lebm.nets.decoders import LegacyDecoder

    decoder = OldStyleDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None))
    decoder.vocabulary = None  # an attribute of the user's that is None
    view = LegacyDecoder(decoder)
    assert view.vocabulary is None and view.metric_names == () and view.bind_data(object()) is None
    with pytest.raises(AttributeError, match="no attribute 'not_a_hook'"):
        view.not_a_hook  # noqa: B018
    for twin in (copy.deepcopy(view), pickle.loads(pickle.dumps(view))):
        assert isinstance(twin.module, OldStyleDecoder) and twin.metric_names == ()
