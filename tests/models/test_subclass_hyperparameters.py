"""A user's subclass of a method keeps its own arguments through a checkpoint (device: CPU). Its
explicit ``__init__`` arguments are stored beside the method's (``warmup`` in ``hyper_parameters``),
and ``lebm.load`` and the class's ``load_from_checkpoint`` rebuild the same class with them, whether
its ``__init__`` takes ``**kwargs`` (which must never receive the checkpoint's ``_class_path``) or
names every argument. The subclasses live in a module this file writes under the test's temporary
folder, on the import path as a user's ``PYTHONPATH`` puts it (docs/recipes.md, "A subclass of the
recipe's method")."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lebm
from lebm.data import MixtureDataModule
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

MODULE = "subclass_hyperparameter_methods"

SOURCE = '''
from torch import nn

from lebm.models import LatentEBM, Prior
from lebm.samplers import Sampler


class KwargsEBM(LatentEBM):
    """Its own argument, everything else passed on with **kwargs (what it receives is kept)."""

    def __init__(self, warmup: int = 0, **kwargs):
        self.received = sorted(kwargs)
        super().__init__(**kwargs)
        self.warmup = warmup


class WarmUpEBM(LatentEBM):
    """docs/recipes.md's subclass: the components by name, the rest with **kwargs."""

    def __init__(self, decoder: nn.Module, prior: Prior, warmup: int = 100, **kwargs):
        super().__init__(decoder, prior, **kwargs)
        self.warmup = warmup


class ExplicitEBM(LatentEBM):
    """Every argument it takes named, no **kwargs."""

    def __init__(
        self,
        decoder: nn.Module,
        prior: Prior,
        posterior_sampler: Sampler | None = None,
        warmup: int = 100,
        posterior_init_std: float = 1.0,
    ):
        super().__init__(decoder, prior, posterior_sampler, posterior_init_std=posterior_init_std)
        self.warmup = warmup


class Inherited(KwargsEBM):
    """No __init__ of its own: KwargsEBM's, with its **kwargs."""


class Deeper(KwargsEBM):
    """A subclass of a subclass: both classes' arguments are its own."""

    def __init__(self, cooldown: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.cooldown = cooldown


class Halved(LatentEBM):
    """Gives the method another value of one of its arguments than it was given."""

    def __init__(self, decoder: nn.Module, prior: Prior, decoder_lr: float = 1e-4, warmup: int = 100, **kwargs):
        super().__init__(decoder, prior, decoder_lr=decoder_lr / 2, **kwargs)
        self.warmup = warmup
'''

#: class name -> the arguments it is built with besides the method's components, each an attribute of the model
CASES = {
    "KwargsEBM": {"warmup": 5},
    "WarmUpEBM": {"warmup": 5},
    "ExplicitEBM": {"warmup": 5, "posterior_init_std": 0.5},
    "Inherited": {"warmup": 5},
    "Deeper": {"warmup": 5, "cooldown": 0.25},
}


@pytest.fixture
def methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The module of subclasses, written under ``tmp_path`` and put on the import path; forgotten
    afterwards, so no other test imports it."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)


def build(cls: type, **own: object) -> LatentEBM:
    torch.manual_seed(0)
    return cls(
        decoder=GaussianDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None), 0.3),
        prior=TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(2, 0.4)),
        posterior_sampler=Langevin(2, 0.1),
        **own,
    )


def fitted_checkpoint(model: LatentEBM, path: Path) -> dict:
    """Fit ``model`` one step on the toy mixture and save it to ``path``; the checkpoint's contents."""
    trainer = quiet_trainer(max_steps=1, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, datamodule=MixtureDataModule(n_train=16, n_val=8, n_test=8, batch_size=8))
    trainer.save_checkpoint(path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", list(CASES))
def test_a_subclass_is_stored_and_rebuilt_with_its_own_arguments(methods, tmp_path: Path, name: str) -> None:
    cls = getattr(methods, name)
    own = CASES[name]
    init_before = cls.__dict__.get("__init__")
    model = build(cls, **own)
    checkpoint = fitted_checkpoint(model, tmp_path / "model.ckpt")
    stored = checkpoint["hyper_parameters"]
    assert stored["_class_path"] == f"{MODULE}.{name}"
    assert {key: stored[key] for key in own} == own  # the subclass's own arguments, as it was given them
    for load in (lebm.load, cls.load_from_checkpoint):
        loaded = load(tmp_path / "model.ckpt")
        assert type(loaded) is cls, load
        assert {key: getattr(loaded, key) for key in own} == own, load
        assert dict(loaded.hparams) == dict(model.hparams), load
        assert "_class_path" not in getattr(loaded, "received", []), load  # never an __init__ argument
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value)
    assert cls.__dict__.get("__init__") is init_before  # the class is left as it was


def test_a_subclass_without_its_own_arguments_loads_a_checkpoint_of_its_method(methods, tmp_path: Path) -> None:
    """A **kwargs subclass given a LatentEBM checkpoint: its own argument takes its default."""
    fitted_checkpoint(build(LatentEBM), tmp_path / "method.ckpt")
    loaded = methods.KwargsEBM.load_from_checkpoint(tmp_path / "method.ckpt")
    assert type(loaded) is methods.KwargsEBM and loaded.warmup == 0
    assert "_class_path" not in loaded.received


def test_the_methods_own_hyperparameters_are_what_they_were(methods) -> None:
    """A method built directly stores its own arguments alone (its checkpoints are unchanged), and a
    subclass stores them too, in the same order, its own after them."""
    method = list(build(LatentEBM).hparams)
    assert method[-1] == "_class_path" and "warmup" not in method
    assert list(build(methods.Deeper, warmup=1).hparams) == [*method[:-1], "warmup", "cooldown", "_class_path"]


def test_a_name_the_method_takes_keeps_the_value_the_method_was_given(methods) -> None:
    """The method reads its settings from ``hparams``: a subclass that passes on another value of one
    of them (half its ``decoder_lr``) trains with that value, as before subclasses' arguments were
    stored; its own ``warmup`` is stored beside it."""
    hparams = build(methods.Halved, decoder_lr=1e-3, warmup=5).hparams
    assert hparams["decoder_lr"] == 5e-4 and hparams["warmup"] == 5
