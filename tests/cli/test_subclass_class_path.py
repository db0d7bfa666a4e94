"""A subclass of a method named by ``class_path`` keeps the recipe's arguments (device: CPU; the lebm
command in this process). ``lebm fit -c quickstart --model.class_path my.Sub``, a recipe that includes
the quickstart and sets ``model: class_path: my.Sub``, and a ``-c`` fragment that does build ``my.Sub``
from every ``model.init_args`` of the quickstart, its decoder included (whose generator reads the
prior's latent size through an interpolation, which the parser, seeing the class change, dropped);
an argument the subclass does not take is refused in one line that names it, before the run folder
is made. The subclasses live in a module this file writes under the test's temporary folder, on the
import path as PYTHONPATH puts it (docs/recipes.md, "A subclass of the recipe's method")."""

from __future__ import annotations

import functools
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from lebm.cli.resolve import resolve_recipe
from tests.helpers.cli_runner import QUIET, REPO, run_cli

MODULE = "subclass_path_methods"

SOURCE = '''
from torch import nn

from lebm.models import LatentEBM, Prior


class NoInit(LatentEBM):
    """A subclass without an __init__: it takes LatentEBM's arguments."""


class WithWarmUp(LatentEBM):
    """A subclass adding an argument with a default, naming LatentEBM's (with their types)."""

    def __init__(self, decoder: nn.Module, prior: Prior, warmup: int = 3, **kwargs):
        super().__init__(decoder, prior, **kwargs)
        self.warmup = warmup


class PassesKwargs(LatentEBM):
    """A subclass that passes whatever it is given on."""

    def __init__(self, *args, scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = scale


class Untyped(LatentEBM):
    """A subclass naming LatentEBM's components without their types."""

    def __init__(self, decoder, prior, **kwargs):
        super().__init__(decoder, prior, **kwargs)


class Narrow(LatentEBM):
    """A subclass that takes only some of LatentEBM's arguments."""

    def __init__(self, decoder, prior, decoder_lr: float = 1e-3, prior_lr: float = 1e-3):
        super().__init__(decoder, prior, decoder_lr=decoder_lr, prior_lr=prior_lr)
'''

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")
DOC = REPO / "docs" / "recipes.md"


def doc_methods() -> str:
    """The page's ``# my_methods.py`` block (its ``WarmUpEBM``), which the fit below trains."""
    (block,) = re.findall(r"^```python\n(# my_methods\.py\n.*?)^```", DOC.read_text(), re.S | re.M)
    return block


@pytest.fixture
def methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module of subclasses, written under ``tmp_path`` and put on the import path (a user's
    ``PYTHONPATH=folder``); forgotten afterwards, so no other test imports it."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE) + "\n\n" + doc_methods())
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield folder
    sys.modules.pop(MODULE, None)


@functools.cache
def quickstart_model() -> dict:
    """The quickstart's model as ``--print_config`` shows it, parsed once for this file's tests
    (which only read it)."""
    return resolve_recipe(QUICKSTART)["model"]


def check_kept(model: dict, class_name: str, quickstart: dict, **added: object) -> None:
    """``model`` is the quickstart's model with ``class_name`` for its class: every argument the same
    (the decoder with its generator included), and ``added`` besides."""
    assert model["class_path"] == f"{MODULE}.{class_name}"
    assert model["init_args"]["decoder"]["class_path"] == "lebm.nets.GaussianDecoder"
    assert model["init_args"]["decoder"]["init_args"]["net"]["init_args"]["latent_dim"] == 16
    assert model["init_args"] == {**quickstart["init_args"], **added}


@pytest.mark.parametrize(
    ("class_name", "added"),
    [("NoInit", {}), ("WithWarmUp", {"warmup": 3}), ("PassesKwargs", {"scale": 1.0})],
)
def test_the_class_path_on_the_command_line_keeps_the_recipes_arguments(methods, class_name, added) -> None:
    model = resolve_recipe(QUICKSTART, "--model.class_path", f"{MODULE}.{class_name}")["model"]
    check_kept(model, class_name, quickstart_model(), **added)


def test_a_recipe_file_and_a_fragment_setting_the_class_path_keep_the_recipes_arguments(methods, tmp_path) -> None:
    quickstart = quickstart_model()
    recipe = tmp_path / "my_method.yaml"
    recipe.write_text(
        yaml.safe_dump({"include": [QUICKSTART], "model": {"class_path": f"{MODULE}.NoInit"}}, sort_keys=False)
    )
    check_kept(resolve_recipe(recipe)["model"], "NoInit", quickstart)
    fragment = tmp_path / "_warm_up.yaml"
    fragment.write_text(yaml.safe_dump({"model": {"class_path": f"{MODULE}.WithWarmUp", "init_args": {"warmup": 7}}}))
    check_kept(resolve_recipe(QUICKSTART, "-c", str(fragment))["model"], "WithWarmUp", quickstart, warmup=7)


def test_an_argument_the_subclass_does_not_take_is_refused_in_one_line(methods, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_cli(
            *("fit", "-c", QUICKSTART, "--model.class_path", f"{MODULE}.Narrow"),
            *("--trainer.default_root_dir", f"{run}"),
            *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"),
            *QUIET,
        )
    message = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(message.splitlines()) == 1, message
    assert message.startswith(f"lebm: error: {MODULE}.Narrow does not take posterior_sampler, betas,"), message
    assert "add them to Narrow.__init__" in message and "**kwargs" in message, message
    assert message.replace(MODULE, "my_methods") in DOC.read_text()  # the line the page quotes
    assert not run.exists()  # refused before the run folder is made


def test_a_component_the_subclass_names_without_its_type_is_refused_in_one_line(methods, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli("fit", "-c", QUICKSTART, "--model.class_path", f"{MODULE}.Untyped", "--print_config")
    message = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(message.splitlines()) == 1, message
    assert f"{MODULE}.Untyped.__init__ names decoder, prior without a type" in message, message
    assert "(decoder: nn.Module, prior: Prior)" in message, message
    assert message.replace(MODULE, "my_methods") in DOC.read_text()  # the line the page quotes


def test_a_subclass_by_class_path_trains_with_the_recipes_arguments(methods, tmp_path) -> None:
    run = tmp_path / "run"
    run_cli(
        *("fit", "-c", QUICKSTART, "--model.class_path", f"{MODULE}.WarmUpEBM", "--model.init_args.warmup", "5"),
        *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0"),
        *("--trainer.default_root_dir", str(run), *QUIET),
    )
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    check_kept(recorded, "WarmUpEBM", quickstart_model(), warmup=5)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    assert checkpoint["global_step"] == 2 and hparams["_class_path"] == f"{MODULE}.WarmUpEBM"
    assert hparams["prior_lr"] == 2e-4  # LatentEBM's arguments, as its __init__ records them
    assert hparams["decoder"] == recorded["init_args"]["decoder"]
