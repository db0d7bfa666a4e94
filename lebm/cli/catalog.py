"""The recipes that come with lebm: where they are, what each is, and finding one by name.

The repository's top-level ``recipes/`` folder is the one copy of every recipe. A clone (or an
editable install) reads it in place; a built wheel carries the same tree as package data in
``lebm/packaged_recipes/`` (``setup.py`` copies it there at build time). :func:`recipes_root`
returns whichever this lebm has.

A recipe is named by its path below that folder without ``.yaml``: ``quickstart``,
``latent_ebm/svhn``. ``lebm fit -c VALUE`` reads ``VALUE`` as a file when one exists there (a path
always wins); otherwise as the name of a packaged recipe, with or without a leading ``recipes/``
and a trailing ``.yaml``, so the commands a clone's README teaches (``-c recipes/quickstart.yaml``)
work from any folder. A name that matches nothing is refused with the nearest names.

Each recipe describes itself in its leading comment: the first line is a one-line description,
and a runnable recipe has a ``# Paper target: ...`` line naming the published result it aims at.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from lebm.cli.recipes import CONFIG_FLAGS, RecipeError

#: Folders below the recipe root that hold fragments only (given after a recipe, or included).
FRAGMENT_FOLDERS = ("data", "evaluation", "speed")
#: Where a wheel keeps the recipes, inside the ``lebm`` package.
PACKAGED_FOLDER = "packaged_recipes"
TARGET_PREFIX = "# Paper target:"


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe file of the catalog.

    Attributes:
        name: its path below the recipe root without ``.yaml`` (``latent_ebm/svhn``).
        path: the file.
        description: the first line of its leading comment.
        target: the ``# Paper target:`` line's text ("" for fragments).
        fragment: True for the parts recipes are built from (``_*.yaml``, ``base*.yaml`` and the
            ``data/``, ``evaluation/`` and ``speed/`` folders): given after a recipe or included.
    """

    name: str
    path: Path
    description: str
    target: str
    fragment: bool


def recipes_root() -> Path:
    """The folder holding this lebm's recipes: the wheel's packaged copy, else a clone's ``recipes/``."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / PACKAGED_FOLDER
    if packaged.is_dir():
        return packaged
    checkout = package.parent / "recipes"
    if checkout.is_dir() and (package.parent / "setup.cfg").is_file():
        return checkout
    raise RecipeError(
        f"this lebm ({package}) carries no recipes: neither {packaged} nor a clone's recipes/ folder exists. "
        "Reinstall lebm from a wheel or a clone of its repository"
    )


def is_fragment(name: str) -> bool:
    """Whether the recipe called ``name`` (``data/svhn``, ``_recovery``) is a fragment, not a run."""
    parts = name.split("/")
    return parts[0] in FRAGMENT_FOLDERS or parts[-1].startswith(("_", "base"))


def read_header(path: Path) -> tuple[str, str]:
    """``(description, target)`` from the leading comment lines of a recipe file."""
    description, target = "", ""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(TARGET_PREFIX):
            target = line[len(TARGET_PREFIX) :].strip()
        elif not description:
            description = line.lstrip("#").strip()
    return description, target


def catalog(root: Path | None = None) -> list[RecipeEntry]:
    """Every recipe file below ``root`` (default :func:`recipes_root`), runnable recipes first, each
    group sorted by name."""
    root = recipes_root() if root is None else root
    entries = []
    for path in root.rglob("*.yaml"):
        name = path.relative_to(root).with_suffix("").as_posix()
        description, target = read_header(path)
        entries.append(RecipeEntry(name, path, description, target, is_fragment(name)))
    return sorted(entries, key=lambda entry: (entry.fragment, entry.name))


def recipe_name(value: str) -> str:
    """``value`` as a catalog name: without a leading ``recipes/`` or ``./`` and a ``.yaml`` suffix."""
    name = value.replace("\\", "/")
    for prefix in ("./", "recipes/"):
        name = name.removeprefix(prefix)
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return name


def recipe_file(value: str) -> Path:
    """The recipe ``value`` names: the file at ``value`` when one exists (a path always wins), else
    the packaged recipe of that name (see :func:`recipe_name`); neither is a :class:`RecipeError`
    with the nearest names."""
    if Path(value).is_file():
        return Path(value)
    packaged = recipes_root() / f"{recipe_name(value)}.yaml"
    if not packaged.is_file():
        raise RecipeError(unknown_recipe_message(value))
    return packaged


def nearest_names(value: str, count: int = 4) -> list[str]:
    """The catalog names closest to ``value``: those with the same file name first (``svhn`` ->
    ``latent_ebm/svhn``, ...; runnable recipes before fragments), then the most similar ones."""
    names = [entry.name for entry in catalog()]
    wanted = recipe_name(value)
    same_file = [name for name in names if name.rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
    similar = difflib.get_close_matches(wanted, names, n=count, cutoff=0.5)
    return list(dict.fromkeys([*same_file, *similar]))[:count]


def unknown_recipe_message(value: str) -> str:
    """The one line for a ``-c`` value that is neither a file nor a packaged recipe."""
    close = nearest_names(value)
    hint = f"; the nearest: {', '.join(close)}" if close else ""
    return (
        f"no recipe {value!r}: it is neither a file here nor the name of a recipe that comes with lebm{hint}. "
        "lebm recipes lists them all"
    )


def _is_inline_yaml(value: str) -> bool:
    return "\n" in value or value.lstrip().startswith("{") or ": " in value


def locate_config_args(args: list[str]) -> list[str]:
    """``args`` with each ``-c VALUE`` that is not a file here but names a packaged recipe replaced by
    that recipe's path; a value naming neither is refused with the nearest names. Inline YAML
    (``-c "{trainer: ...}"``) and every other argument are left as they are."""
    located: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in CONFIG_FLAGS and index + 1 < len(args):
            flag, value, step = arg, args[index + 1], 2
        elif arg.startswith("--config="):
            flag, value, step = "--config", arg.split("=", 1)[1], 1
        else:
            located.append(arg)
            index += 1
            continue
        if not _is_inline_yaml(value):
            value = str(recipe_file(value))
        located += [flag, value]
        index += step
    return located
