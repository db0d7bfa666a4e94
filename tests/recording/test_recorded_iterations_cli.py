"""Recorded iterations through ``lebm fit`` (device: CPU, the strict replay emulator, the command
run in this process): a user's own method named by ``class_path`` in a recipe is never recorded.

The user's code lives in a module of its own folder (a researcher's ``my_methods.py``). With
recorded iterations switched on, its iterations run eagerly with one line naming the class (chains
still captured): every iteration's Python runs, and a module-level number a callback anneals
trains the weights the eager command trains.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lebm.cli.resolve import resolve_recipe
from lebm.recording import iteration_capture
from lebm.testing.capture import emulate_on_cpu
from tests.helpers.cli_runner import REPO, run_cli

#: The user's module: two LatentEBM subclasses and the callbacks the run names.
USER_METHODS = '''
"""A researcher's methods and callbacks, named by class_path in a recipe."""
import lightning as L
import torch

from lebm.models import LatentEBM

WEIGHT = 1.0   # annealed by Anneal at step 4
SEEN = []      # a host side effect the replay would not repeat
ENDS = {}      # what the run ended with, for the test


class Annealed(LatentEBM):

    def training_iteration(self, batch, batch_idx):
        return LatentEBM.training_iteration(self, [batch[0] * WEIGHT, *batch[1:]], batch_idx)


class KeepsAList(LatentEBM):

    def training_iteration(self, batch, batch_idx):
        SEEN.append(batch_idx)
        return LatentEBM.training_iteration(self, batch, batch_idx)


class Anneal(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        global WEIGHT
        WEIGHT = 2.0 if trainer.global_step >= 4 else 1.0


class KeepEnd(L.Callback):
    def on_train_end(self, trainer, module):
        ENDS["weights"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        ENDS["stats"] = module.iteration_recorder.stats.as_dict()
'''

STEPS = 10
#: Short chains and a small batch: what is under test is the iteration's Python, not its length.
SHORT_CHAINS = [
    "--model.init_args.prior.init_args.sampler.init_args.n_steps",
    "4",
    "--model.init_args.posterior_sampler.init_args.n_steps",
    "4",
]


@pytest.fixture
def user_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The user's module, imported from its own folder (a fresh copy for each test)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_methods.py").write_text(textwrap.dedent(USER_METHODS))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_methods", raising=False)
    return importlib.import_module("my_methods")


@functools.cache
def quickstart_model() -> dict[str, Any]:
    """The quickstart's model as ``--print_config`` shows it (a user's subclass takes its
    ``init_args`` whole: a new ``class_path`` starts from no arguments)."""
    return resolve_recipe(REPO / "recipes" / "quickstart.yaml")["model"]


def fit(user_methods: Any, method: str, recorded: bool, run: Path) -> tuple[dict[str, Any], list[str]]:
    """``lebm fit`` of the quickstart with the user's ``method`` for :data:`STEPS` updates, recorded
    or eager: the run's end (weights and recorder counts) and the lines that say why iterations
    ran eagerly."""
    recipe = run.parent / f"{run.name}.yaml"
    model = {"class_path": f"my_methods.{method}", "init_args": quickstart_model()["init_args"]}
    recipe.write_text(
        f"include: [{REPO / 'recipes' / 'quickstart.yaml'}]\n"
        f"model: {json.dumps(model)}\n"
        "trainer:\n"
        "  callbacks+: [{class_path: my_methods.Anneal}, {class_path: my_methods.KeepEnd}]\n"
    )
    user_methods.WEIGHT = 1.0
    user_methods.SEEN.clear()
    user_methods.ENDS.clear()
    settings = ["--seed_everything", "0", "--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0"]
    settings += ["--data.init_args.batch_size", "16", *SHORT_CHAINS]
    settings += ["--trainer.default_root_dir", str(run), "--trainer.logger", "false"]
    settings += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    with emulate_on_cpu(), iteration_capture(recorded), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("fit", "-c", str(recipe), *settings)
    lines = [str(w.message) for w in caught if "training iterations run eagerly" in str(w.message)]
    return dict(user_methods.ENDS), lines


def assert_same_weights(eager: dict[str, torch.Tensor], recorded: dict[str, torch.Tensor]) -> None:
    assert eager.keys() == recorded.keys()
    for name in eager:
        assert torch.equal(eager[name], recorded[name]), name


@pytest.mark.slow  # two fits through the command (about 20 s on a busy 2-core machine): the slow tier
def test_a_global_a_callback_anneals_trains_the_eager_weights_with_the_switch_on(user_methods, tmp_path) -> None:
    eager, _ = fit(user_methods, "Annealed", False, tmp_path / "eager")
    recorded, lines = fit(user_methods, "Annealed", True, tmp_path / "recorded")
    assert user_methods.WEIGHT == 2.0  # the callback annealed it mid-run
    assert len(lines) == 1 and "Annealed is a subclass of lebm's LatentEBM" in lines[0], lines
    assert recorded["stats"]["replays"] == 0 and recorded["stats"]["recordings"] == 0, recorded["stats"]
    assert_same_weights(eager["weights"], recorded["weights"])


def test_a_users_method_by_class_path_runs_eagerly_with_one_line(user_methods, tmp_path) -> None:
    """Recorded iterations switched on: the user's class is named in one line before any warm-up,
    nothing is recorded, and every iteration's Python runs."""
    recorded, lines = fit(user_methods, "KeepsAList", True, tmp_path / "recorded")
    assert len(lines) == 1 and "KeepsAList is a subclass of lebm's LatentEBM" in lines[0] and "\n" not in lines[0]
    stats = recorded["stats"]
    assert stats["replays"] == 0 and stats["recordings"] == 0 and stats["warmups"] == 0, stats
    assert len(user_methods.SEEN) == STEPS  # every iteration's Python ran
