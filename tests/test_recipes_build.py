"""Every recipe builds, on a few files of its dataset written in that dataset's standard layout (CPU).

``lebm fit -c RECIPE`` reads a recipe through the command's parser, which gives each value the type
the class's argument names: a count read as a float (CelebA's ``test_size: 10000`` as the fraction
10000.0) stopped every CelebA recipe at build, and no test built a recipe of a dataset that is not
offline here. The files are fakes, a few of each in the layout the DataModules locate: CelebA
(``img_align_celeba/*.jpg``), SVHN (train, test and extra ``.mat``), CIFAR-10 (python pickles),
PTB, SNLI and Yahoo (text files), Fashion-MNIST and MNIST (IDX files, MNIST's CSV).

* ``test_every_recipe_builds_on_files_of_its_dataset``: each runnable recipe resolved as the
  command resolves it (``--print_config``), its data root pointed at the fakes; the integers it
  gives its data stay integers, and the DataModule built from that config reads a training batch
  of the shape its arguments state. The first recipe of each kind of data section (class, dataset,
  keys, data fragment: ``tests.test_recipes.one_per_data_kind``) runs in the default tier, every
  other recipe in the slow tier.
* ``test_each_recipe_of_a_dataset_not_here_takes_a_training_step`` (slow: paper-size nets, seconds
  a step): each recipe whose data root is left to the user, built by ``lebm.from_recipe`` (the
  model checked against the data as ``lebm fit`` checks it) and trained one step on the fakes.
  The built chains are checked to run the recipe's step counts, then cut to one step each
  (:func:`shorten_chains`): the nets at paper size are the point, not tens of chain steps a step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from lebm.cli.recipes import compose_recipe
from lebm.config import build
from lebm.recording.cache import samplers_of
from tests.helpers.cli_runner import run_cli
from tests.helpers.dataset_files import (
    write_celeba,
    write_cifar10,
    write_idx_splits,
    write_mnist_csv,
    write_svhn,
    write_text_splits,
)
from tests.helpers.trainers import quiet_trainer
from tests.test_recipes import one_per_data_kind, runnable_recipes

REPO = Path(__file__).resolve().parents[1]
#: The fake folder each dataset's ``root`` points at (the key of :func:`dataset_roots`).
FOLDER_OF = {
    "celeba": "celeba",
    "cifar10": "cifar10",
    "svhn": "svhn",
    "mnist": "mnist",
    "mnist_csv": "mnist",
    "fashion_mnist": "fashion_mnist",
    "ptb": "text",
    "snli": "text",
    "yahoo": "text",
}
BATCH = 2
#: Image folders train on the first ``limit`` files and test on the ``test_size`` after them.
FOLDER_SPLITS = {"limit": 4, "test_size": 2}
TEXT_FILES = tuple(f"{name}.{split}.txt" for name in ("ptb", "snli", "yahoo") for split in ("train", "valid", "test"))


def data_section(recipe: str) -> tuple[str, dict[str, Any]]:
    """The class name and ``init_args`` of the recipe's ``data`` as the recipe gives them."""
    data = compose_recipe(REPO / recipe)["data"]
    return data["class_path"].rsplit(".", 1)[-1], dict(data.get("init_args") or {})


def left_to_the_user(recipe: str) -> bool:
    """Whether the recipe's data root is ``null``: the files are the user's, not offline here."""
    _, given = data_section(recipe)
    return "root" in given and given["root"] is None


@pytest.fixture(scope="session")
def dataset_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fake files of every dataset a recipe reads, written once: ``{folder name: root}``."""
    base = tmp_path_factory.mktemp("datasets")
    write_celeba(base / "celeba", sum(FOLDER_SPLITS.values()))
    write_cifar10(base / "cifar10" / "cifar-10-batches-py", per_batch=2)
    write_svhn(base / "svhn", {"train": 4, "test": 4, "extra": 4})
    arrays = write_idx_splits(base / "mnist", n_train=40, n_test=20, compress=True, seed=0)
    write_mnist_csv(base / "mnist" / "mnist_5k.csv.gz", *arrays["train"], header=False)
    write_idx_splits(base / "fashion_mnist", n_train=20, n_test=10, compress=True, seed=1)
    write_text_splits(base / "text", TEXT_FILES, sentences=2 * BATCH)
    return {folder.name: folder for folder in base.iterdir()}


def data_overrides(recipe: str, roots: dict[str, Path]) -> dict[str, Any]:
    """``data.init_args`` values that point the recipe at the fake files, with batches of ``BATCH``
    and no worker processes (the folders' ``limit`` and ``test_size`` fit the few files)."""
    kind, given = data_section(recipe)
    settings: dict[str, Any] = {"batch_size": BATCH, "num_workers": 0}
    if kind == "MNISTAnomalyDataModule":
        settings["root"] = roots["mnist"]
    elif kind == "OutOfDistributionDataModule":
        settings["root"], settings["out_root"] = roots[given["in_dataset"]], roots[given["out_dataset"]]
    elif given.get("dataset") in FOLDER_OF:
        settings["root"] = roots[FOLDER_OF[given["dataset"]]]
    if given.get("dataset") == "celeba":
        settings.update(FOLDER_SPLITS)
    return {f"data.init_args.{key}": str(v) if isinstance(v, Path) else v for key, v in settings.items()}


def as_args(overrides: dict[str, Any]) -> list[str]:
    return [f"--{key}={value}" for key, value in overrides.items()]


def printed_config(recipe: str, args: list[str], capsys: pytest.CaptureFixture) -> dict[str, Any]:
    """The config ``lebm fit -c recipe [args]`` runs with, as ``--print_config`` prints it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli("fit", "-c", recipe, *args, "--print_config")
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The step counts of a chain: a sampler's transitions (``n_steps``), a learned sampler's ancestral
#: steps (``sampling_steps``, DAMC's diffusion amortizer); each with the fewest steps it allows.
STEP_COUNTS = {"n_steps": 1, "sampling_steps": 2}


def chain_steps(model: nn.Module) -> set[tuple[str, str, int]]:
    """``(class name, count name, count)`` of every chain step count the built ``model`` holds."""
    return {
        (type(held).__name__, name, getattr(held, name))
        for held in samplers_of(model)
        for name in STEP_COUNTS
        if isinstance(getattr(held, name, None), int)
    }


def configured_steps(section: Any) -> set[tuple[str, str, Any]]:
    """``(class name, count name, value)`` of every step count in a parsed config ``section``."""
    found: set[tuple[str, str, Any]] = set()
    if isinstance(section, dict):
        given = section.get("init_args")
        if isinstance(section.get("class_path"), str) and isinstance(given, dict):
            kind = section["class_path"].rsplit(".", 1)[-1]
            found |= {(kind, name, given[name]) for name in STEP_COUNTS if given.get(name) is not None}
        for value in section.values():
            found |= configured_steps(value)
    elif isinstance(section, list):
        for value in section:
            found |= configured_steps(value)
    return found


def shorten_chains(model: nn.Module) -> None:
    """Cut every chain of ``model`` to the fewest steps its class allows (:data:`STEP_COUNTS`)."""
    for held in samplers_of(model):
        for name, fewest in STEP_COUNTS.items():
            if isinstance(getattr(held, name, None), int):
                setattr(held, name, min(getattr(held, name), fewest))


def first_training_batch(datamodule: Any) -> torch.Tensor:
    """The inputs of the first training batch: images (B, C, H, W) or token ids (B, T)."""
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@pytest.mark.parametrize("recipe", one_per_data_kind(runnable_recipes()))
def test_every_recipe_builds_on_files_of_its_dataset(
    recipe: str, dataset_roots: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    overrides = data_overrides(recipe, dataset_roots)
    config = printed_config(recipe, as_args(overrides), capsys)
    assert config["model"]["class_path"].startswith("lebm.models.")
    assert "include" not in config  # expanded: the printed (and saved) config stands on its own
    _, given = data_section(recipe)
    given |= {key.rsplit(".", 1)[-1]: value for key, value in overrides.items()}
    parsed = config["data"]["init_args"]
    for key in [key for key, value in given.items() if is_int(value)]:  # a count stays a count
        read = parsed[key]
        assert is_int(read) and read == given[key], f"{recipe}: data.init_args.{key} is read as {read!r}"
    datamodule = build(config["data"])
    stated = datamodule.sample_shape  # what the arguments make of an image, before any file is read
    inputs = first_training_batch(datamodule)
    assert inputs.shape[0] == BATCH
    if inputs.is_floating_point():  # images, cropped and resized as stated
        assert stated is not None and tuple(inputs.shape[1:]) == tuple(stated)
    else:  # sentences: word ids of the vocabulary built on the training file
        assert inputs.dtype == torch.int64 and inputs.max() < len(datamodule.vocabulary)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [recipe for recipe in runnable_recipes() if left_to_the_user(recipe)])
def test_each_recipe_of_a_dataset_not_here_takes_a_training_step(
    recipe: str, dataset_roots: dict[str, Path], tmp_path: Path
) -> None:
    """The recipe as ``lebm fit`` builds it (``lebm.from_recipe``: its nets, chains and learning rates)
    on the fake files, batches of ``BATCH``: its chains run the step counts its config gives (whole
    numbers); cut to one step each, one training step (Multi-stage NCE: one a stage) changes the
    model's weights."""
    import lebm

    overrides = {**data_overrides(recipe, dataset_roots), "trainer.logger": False}
    built = lebm.from_recipe(recipe, {**overrides, "trainer.default_root_dir": str(tmp_path)})
    configured = configured_steps(built.config["model"])
    assert configured, f"{recipe}: no chain step count in its config"
    assert all(is_int(count) and count > 0 for _, _, count in configured), f"{recipe}: step counts {configured}"
    assert configured <= chain_steps(built.model), f"{recipe}: the built chains differ from {configured}"
    shorten_chains(built.model)
    assert all(count <= STEP_COUNTS[name] for _, name, count in chain_steps(built.model))
    before = {name: value.detach().clone() for name, value in built.model.named_parameters()}
    prior = (built.config["model"]["init_args"].get("prior") or {}).get("init_args") or {}
    steps = prior.get("n_stages", 1)  # Multi-stage NCE trains each of its stages at least one step
    trainer = quiet_trainer(
        max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, inference_mode=False, default_root_dir=tmp_path
    )
    trainer.fit(built.model, datamodule=built.datamodule)
    assert trainer.global_step >= steps
    after = dict(built.model.named_parameters())
    assert any(not torch.equal(before[name], after[name]) for name in before), f"{recipe}: no weight moved"
