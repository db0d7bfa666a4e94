"""The recipes that come with lebm: names for ``-c``, ``lebm recipes`` list/show/copy (CPU, no training).

The installed-wheel test (``test_installed_wheel.py``, slow) runs the same from a wheel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lebm.cli import catalog as catalog_module
from lebm.cli.catalog import catalog, locate_config_args, nearest_names, recipes_root
from lebm.cli.main import main as lebm_main
from lebm.cli.recipes import RecipeError, compose_recipe, merge_layer
from lebm.cli.recipes_command import copy_recipe, show_text
from tests.helpers.cli_runner import REPO, run_cli

RECIPES = REPO / "recipes"


def lebm_in(folder: Path, *args: str) -> None:
    """``lebm <args>`` in this process with ``folder`` as the working directory."""
    run_cli(*args, cwd=folder)


def printed_config(capsys: pytest.CaptureFixture, folder: Path, *args: str) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        lebm_in(folder, "fit", *args, "--print_config")
    assert done.value.code in (0, None), capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


# ------------------------------------------------------------------------- the catalog
def test_a_clone_reads_its_own_recipes_folder() -> None:
    assert recipes_root() == RECIPES


def test_the_catalog_holds_every_recipe_file_and_tells_runs_from_fragments() -> None:
    entries = {entry.name: entry for entry in catalog()}
    assert set(entries) == {p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml")}
    assert not entries["latent_ebm/svhn"].fragment and not entries["quickstart"].fragment
    for fragment in ("base", "_recovery", "data/svhn", "speed/eager_chains", "latent_ebm/_method"):
        assert entries[fragment].fragment, fragment


def test_every_recipe_describes_itself_and_names_its_paper_target() -> None:
    """Line 1: a one-line description; runnable recipes: a ``# Paper target:`` line (``lebm recipes``)."""
    for entry in catalog():
        assert entry.description.endswith("."), f"{entry.name}: line 1 is not a one-line description"
        assert len(entry.description) <= 100, f"{entry.name}: line 1 is longer than 100 characters"
        assert entry.fragment or entry.target, f"{entry.name}: no '# Paper target:' line"


def test_the_listing_shows_every_recipe_with_its_target(capsys: pytest.CaptureFixture) -> None:
    lebm_main(["recipes"])
    listing = capsys.readouterr().out
    for entry in catalog():
        assert f"  {entry.name} " in listing
        if not entry.fragment:
            assert f"paper target: {entry.target}" in listing


# ------------------------------------------------------------------- names for -c
@pytest.mark.parametrize("given", ["quickstart", "recipes/quickstart.yaml", "quickstart.yaml", "./recipes/quickstart"])
def test_a_name_finds_the_packaged_recipe_from_any_folder(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert locate_config_args(["fit", "-c", given]) == ["fit", "-c", str(RECIPES / "quickstart.yaml")]


def test_a_file_that_exists_wins_over_a_packaged_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "recipes" / "quickstart.yaml"
    mine.parent.mkdir()
    mine.write_text("trainer: {max_epochs: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert locate_config_args(["-c", "recipes/quickstart.yaml", "--config=quickstart"]) == [
        "-c",
        "recipes/quickstart.yaml",
        "--config",
        str(RECIPES / "quickstart.yaml"),
    ]


def test_inline_yaml_is_left_to_the_parser() -> None:
    assert locate_config_args(["-c", "{trainer: {max_epochs: 1}}"]) == ["-c", "{trainer: {max_epochs: 1}}"]


def test_a_name_that_matches_nothing_gets_the_nearest_names(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"no recipe 'latent_ebm/svhm'.*nearest: latent_ebm/svhn"):
        locate_config_args(["-c", "latent_ebm/svhm"])
    assert nearest_names("svhn")[:4] == ["damc/svhn", "hierarchical/svhn", "latent_ebm/svhn", "multistage_nce/svhn"]
    with pytest.raises(SystemExit):
        lebm_in(tmp_path, "fit", "-c", "dual_mcmc/cifar")
    error = capsys.readouterr().err
    assert error.startswith("lebm: error: no recipe 'dual_mcmc/cifar'") and "dual_mcmc/cifar10" in error
    assert "Traceback" not in error and len(error.splitlines()) == 1


def test_the_clone_command_runs_the_packaged_recipe_from_an_empty_folder(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """``lebm fit -c recipes/quickstart.yaml`` (the README's command) outside a clone: the same config."""
    from_clone = printed_config(capsys, REPO, "-c", "recipes/quickstart.yaml")
    elsewhere = printed_config(capsys, tmp_path, "-c", "recipes/quickstart.yaml")
    by_name = printed_config(capsys, tmp_path, "-c", "quickstart")
    assert from_clone == elsewhere == by_name
    assert from_clone["trainer"]["default_root_dir"] == "runs/quickstart"  # relative: the folder lebm runs in


# --------------------------------------------------------------------------- compose
def test_layers_merge_key_by_key_append_with_plus_and_reset_on_another_class() -> None:
    base = {
        "trainer": {"max_epochs": 5, "callbacks": [{"class_path": "A"}]},
        "model": {"class_path": "M", "init_args": {"lr": 1, "sampler": {"class_path": "S", "init_args": {"n": 2}}}},
    }
    layer = {
        "trainer": {"callbacks+": [{"class_path": "B"}], "devices": 2},
        "model": {"init_args": {"sampler": {"class_path": "T", "init_args": {"k": 3}}}},
    }
    merged = merge_layer(base, layer)
    callbacks = [{"class_path": "A"}, {"class_path": "B"}]
    assert merged["trainer"] == {"max_epochs": 5, "callbacks": callbacks, "devices": 2}
    sampler = {"class_path": "T", "init_args": {"k": 3}}  # another class: the earlier init_args go
    assert merged["model"] == {"class_path": "M", "init_args": {"lr": 1, "sampler": sampler}}
    assert base["trainer"]["callbacks"] == [{"class_path": "A"}]  # inputs untouched


@pytest.mark.parametrize(
    "recipe",
    ["quickstart", "hierarchical/mnist_anomaly_offline", "latent_ebm/text_quickstart", "dual_mcmc/quickstart"],
)
def test_the_shown_recipe_runs_the_same_config_as_the_recipe(
    recipe: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """``lebm recipes show`` is a recipe of its own: the parser reads the same config from it.
    (Every recipe: the slow test below.)"""
    shown = tmp_path / "shown.yaml"
    lebm_main(["recipes", "show", recipe])
    shown.write_text(capsys.readouterr().out)
    assert "${" in shown.read_text() or recipe == "dual_mcmc/quickstart"  # interpolations kept
    assert printed_config(capsys, tmp_path, "-c", str(shown)) == printed_config(capsys, REPO, "-c", recipe)


@pytest.mark.slow
def test_every_shown_recipe_runs_the_same_config_as_the_recipe(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    for entry in catalog():
        if entry.fragment:
            continue
        shown = tmp_path / "shown.yaml"
        shown.write_text(show_text(entry.path))
        composed = printed_config(capsys, tmp_path, "-c", str(shown))
        assert composed == printed_config(capsys, REPO, "-c", entry.name), entry.name


# ------------------------------------------------------------------------------ copy
def test_a_copy_keeps_its_fragments_in_place_and_composes_as_the_original(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lebm_in(tmp_path, "recipes", "copy", "hierarchical/svhn", "mine")
    assert "lebm fit -c mine/hierarchical/svhn.yaml" in capsys.readouterr().out
    written = sorted(p.relative_to(tmp_path / "mine").as_posix() for p in (tmp_path / "mine").rglob("*.yaml"))
    fragments = ["base", "data/svhn", "hierarchical/_evaluation", "hierarchical/_method", "hierarchical/svhn"]
    assert written == [f"{name}.yaml" for name in fragments]
    original = compose_recipe(RECIPES / "hierarchical/svhn.yaml")
    assert compose_recipe(tmp_path / "mine/hierarchical/svhn.yaml") == original


def test_an_edited_copy_runs_with_the_edit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lebm_in(tmp_path, "recipes", "copy", "quickstart")  # default folder: recipes/, as in a clone
    fragment = tmp_path / "recipes" / "_quickstart.yaml"
    fragment.write_text(fragment.read_text().replace("max_epochs: 100", "max_epochs: 7"))
    assert printed_config(capsys, tmp_path, "-c", "recipes/quickstart.yaml")["trainer"]["max_epochs"] == 7


def test_a_copy_refuses_to_overwrite_an_edit_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy_recipe(RECIPES / "quickstart.yaml", tmp_path)
    copy_recipe(RECIPES / "quickstart.yaml", tmp_path)  # the same files again: nothing to refuse
    (tmp_path / "base.yaml").write_text("seed_everything: 3\n")
    with pytest.raises(SystemExit):
        copy_recipe(RECIPES / "quickstart.yaml", tmp_path)
    assert "base.yaml already exist(s) with other content" in capsys.readouterr().err
    copy_recipe(RECIPES / "quickstart.yaml", tmp_path, force=True)
    assert (tmp_path / "base.yaml").read_text() == (RECIPES / "base.yaml").read_text()


def test_a_flat_copy_is_the_composed_recipe_alone(tmp_path: Path) -> None:
    written = copy_recipe(RECIPES / "multistage_nce" / "quickstart.yaml", tmp_path, flat=True)
    assert [p.name for p in tmp_path.rglob("*.yaml")] == ["quickstart.yaml"]
    assert yaml.safe_load(written.read_text()) == compose_recipe(RECIPES / "multistage_nce" / "quickstart.yaml")


def test_an_installed_lebm_without_recipes_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "lebm" / "cli"
    package.mkdir(parents=True)
    monkeypatch.setattr(catalog_module, "__file__", str(package / "catalog.py"))
    with pytest.raises(RecipeError, match="carries no recipes"):
        recipes_root()
    (package.parent / "packaged_recipes").mkdir()
    assert recipes_root() == package.parent / "packaged_recipes"
