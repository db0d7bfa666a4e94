"""``lebm recipes``: list, show and copy the recipes that come with lebm (no Lightning import).

- ``lebm recipes``: every recipe with its one-line description and the paper result it targets,
  then the fragments recipes are built from;
- ``lebm recipes show NAME``: the recipe composed into one YAML mapping (its fragments merged in
  the order ``lebm fit`` reads them, interpolations kept);
- ``lebm recipes copy NAME [DIR]``: the recipe and every fragment it includes, written below ``DIR``
  (default ``recipes``) at their places in the catalog, so the copy's relative ``include:`` paths
  work and ``lebm fit -c DIR/NAME.yaml`` runs it; ``--flat`` writes the composed recipe alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from lebm.cli.catalog import RecipeEntry, catalog, recipe_file, recipes_root
from lebm.cli.errors import fail
from lebm.cli.recipes import RecipeError, compose_recipe, included_files

DESCRIPTION_WIDTH = 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lebm recipes", description="The recipes that come with lebm: list them, show one composed, copy one."
    )
    actions = parser.add_subparsers(dest="action")
    actions.add_parser("list", help="every recipe, its description and paper target (the default)")
    show = actions.add_parser("show", help="print a recipe composed into one YAML mapping")
    show.add_argument("name", help="a recipe name (latent_ebm/svhn) or path")
    copy = actions.add_parser("copy", help="write a recipe (with its fragments) where you can edit it")
    copy.add_argument("name", help="a recipe name (latent_ebm/svhn) or path")
    copy.add_argument("dir", nargs="?", default="recipes", help="where to write it (default: recipes)")
    copy.add_argument("--flat", action="store_true", help="write the composed recipe as one file, no fragments")
    copy.add_argument("--force", action="store_true", help="overwrite files that differ")
    return parser


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def format_catalog(entries: list[RecipeEntry], root: Path) -> str:
    """The listing ``lebm recipes`` prints."""
    runnable = [entry for entry in entries if not entry.fragment]
    fragments = [entry for entry in entries if entry.fragment]
    width = max(len(entry.name) for entry in entries) + 2
    lines = [f"Recipes (lebm fit -c NAME; the files are in {root}):", ""]
    for entry in runnable:
        lines.append(f"  {entry.name:<{width}}{_shorten(entry.description, DESCRIPTION_WIDTH)}")
        lines.append(f"  {'':<{width}}paper target: {entry.target or 'not stated'}")
    lines += ["", "Fragments (included by recipes, or given after one: lebm fit -c RECIPE -c FRAGMENT):", ""]
    lines += [f"  {entry.name:<{width}}{_shorten(entry.description, DESCRIPTION_WIDTH)}" for entry in fragments]
    lines += ["", "lebm recipes show NAME: the composed recipe; lebm recipes copy NAME [DIR]: an editable copy."]
    return "\n".join(lines) + "\n"


def show_text(path: Path) -> str:
    """The composed recipe as YAML, headed by the files it was composed from."""
    layers = [*included_files(path), path.resolve()]
    header = [f"# {path.name} composed from, in order: " + ", ".join(layer.name for layer in layers)]
    header.append("# (lebm fit -c THIS_FILE runs the same; --print_config adds every default)")
    return "\n".join(header) + "\n" + yaml.safe_dump(compose_recipe(path), sort_keys=False)


def copy_recipe(path: Path, destination: Path, flat: bool = False, force: bool = False) -> Path:
    """Write the recipe at ``path`` below ``destination``; returns the file ``lebm fit -c`` takes.

    Without ``flat`` the recipe and its fragments keep their places relative to the recipe root
    (a recipe outside the root is written with its fragments relative to its own folder); with
    ``flat`` the composed recipe is one file. Files already there with the same content are left;
    different ones are refused unless ``force``."""
    if destination.exists() and not destination.is_dir():
        fail(
            f"{destination} exists and is a file, but lebm recipes copy writes the recipe (and its fragments) into a "
            f"folder: give another name, a folder (default: recipes), or remove {destination}"
        )
    sources = [*included_files(path), path.resolve()]
    root = recipes_root().resolve()
    anchor = (
        root
        if all(source.is_relative_to(root) for source in sources)
        else Path(os.path.commonpath([s.parent for s in sources]))
    )
    relative = path.resolve().relative_to(anchor)
    if flat:
        plan = {destination / relative: show_text(path)}
    else:
        plan = {destination / source.relative_to(anchor): source.read_text() for source in sources}
    clashes = [str(target) for target, text in plan.items() if target.is_file() and target.read_text() != text]
    if clashes and not force:
        fail(f"{', '.join(clashes)} already exist(s) with other content; give another folder, or --force to overwrite")
    for target, text in plan.items():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".yaml.partial")
            partial.write_text(text)
            os.replace(partial, target)
        except OSError as error:
            fail(f"cannot write {target}: {error.strerror or error}; give another folder")
    return destination / relative


def main(args: list[str]) -> None:
    """``lebm recipes [list|show NAME|copy NAME [DIR]]``."""
    options = _parser().parse_args(args)
    try:
        if options.action in (None, "list"):
            sys.stdout.write(format_catalog(catalog(), recipes_root()))
        elif options.action == "show":
            sys.stdout.write(show_text(recipe_file(options.name)))
        else:
            written = copy_recipe(recipe_file(options.name), Path(options.dir), options.flat, options.force)
            sys.stdout.write(f"wrote {written}; run it with: lebm fit -c {written}\n")
    except RecipeError as error:
        fail(str(error))
