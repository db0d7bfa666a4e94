"""MkDocs hook: a citation of a file the repository does not have fails the build.

The docs must stand on their own: a reader has the repository, its site and the papers, nothing
else. A page, a docstring the API reference shows or a recipe's comment (``lebm recipes`` prints
them) that cites a file the reader cannot open, such as a private design note (``NOTES.md §2``)
or a path out of the checkout (``../elsewhere/PLAN.md``), is a dead end. This hook logs one
warning per such citation; ``mkdocs build --strict`` turns the warnings into an error.

What counts as a citation of a file (URLs are left out first, ``https://...``):

- a Markdown file name, bare (``NOTES.md``, ``recipes.md``) or as a path (``docs/results.md``,
  ``../samplers.md``): a bare name must be the name of some file in the repository, a path must
  lead to a file inside it (from the repository's root or from the citing file's folder);
- any file name followed by a section sign (``notes.txt §3``): cited by section, it must exist
  as a Markdown name must.

Other files are not read as citations: ``config.yaml``, ``last.ckpt`` or ``metrics.csv`` (files of
a run folder), the authors' ``train_svhn.py`` (cited with its repository), a recipe the reader is
told to write (``recipes/my_sampler.yaml``), ``runs/...`` paths; nor are paths with wildcards or
placeholders (``recipes/*/svhn.yaml``), folders (``LEBM_DATA=../data``) and web addresses
(``github.com/owner/repo/README.md``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import griffe

# Folders that hold no cited file: version control, caches, build and run outputs.
SKIPPED_FOLDERS = {".git", "__pycache__", "site", "build", "dist", "runs", "wandb", "lightning_logs", "logs"}

URL = re.compile(r"\b(?:https?|ftp)://\S+")
# A file name, bare or as a path; not part of a longer path, a wildcard or a placeholder.
_NAME_START = r"(?<![\w./*{}<>$~@:-])"
FILE_NAME = re.compile(_NAME_START + r"((?:\.{1,2}/|[\w-][\w.-]*/)*[\w-][\w.-]*\.[A-Za-z][A-Za-z0-9]*)(?![\w/*{}<>-])")
# A section sign after the name, perhaps after the code span or quotes around it: "`notes.txt` §3".
SECTION_SIGN = re.compile(r"[`'\"]*\s*(?:§|&sect;)")

# A child of the "mkdocs" logger: its warnings count for --strict.
log = logging.getLogger("mkdocs.hooks.cited_files")


def repository_files(root: Path) -> set[str]:
    """The names (not paths) of the files under ``root``, leaving out caches and run outputs."""
    names: set[str] = set()
    for _folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS and not name.endswith(".egg-info")]
        names.update(files)
    return names


def _is_path(name: str) -> bool:
    return "/" in name


def _is_web_address(name: str) -> bool:
    """``github.com/owner/repo/README.md``: a path whose first part is a host name, not a folder."""
    first = name.split("/", 1)[0]
    return _is_path(name) and "." in first and first not in (".", "..")


def _cites(text: str, match: re.Match[str]) -> bool:
    """Whether the file name ``match`` found in ``text`` is presented as a citation."""
    name = match.group(1)
    if _is_web_address(name):
        return False
    return name.lower().endswith(".md") or SECTION_SIGN.match(text, match.end(1)) is not None


def _exists(name: str, root: Path, base: Path, names: set[str]) -> bool:
    """Whether the cited ``name`` is a file of the repository at ``root`` (seen from ``base``)."""
    if not _is_path(name):
        return name in names
    inside = root.resolve()
    for start in (root, base):
        target = (start / name).resolve()
        if target.is_file() and target.is_relative_to(inside):
            return True
    return False


def missing_files(text: str, root: Path, base: Path, names: set[str] | None = None) -> list[str]:
    """The files ``text`` cites that the repository at ``root`` does not have, in order of citation.

    Args:
        text: a page, a docstring or a comment.
        root: the repository's root.
        base: the folder of the file ``text`` comes from (relative paths start there or at ``root``).
        names: :func:`repository_files` of ``root``, when the caller has it already.
    """
    names = repository_files(root) if names is None else names
    text = URL.sub(" ", text)
    cited = (match.group(1) for match in FILE_NAME.finditer(text) if _cites(text, match))
    return list(dict.fromkeys(name for name in cited if not _exists(name, root, base, names)))


def _problems(where: str, text: str, root: Path, base: Path, names: set[str]) -> list[str]:
    return [f"{where} cites {name}, which is not in the repository" for name in missing_files(text, root, base, names)]


def page_problems(docs_dir: Path, root: Path, names: set[str] | None = None) -> list[str]:
    """One line per missing file cited by a Markdown page under ``docs_dir``."""
    names = repository_files(root) if names is None else names
    problems: list[str] = []
    for page in sorted(docs_dir.rglob("*.md")):
        problems += _problems(_shown(page, root), page.read_text(encoding="utf-8"), root, page.parent, names)
    return problems


def _documented(obj: griffe.Object | griffe.Alias) -> Iterator[griffe.Object]:
    """``obj`` and, for a class, its members (recursively), followed to their definitions."""
    try:
        target = obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return
    if target.is_module:
        return  # a subpackage in __all__ has its own page or none
    yield target
    if target.is_class:
        for member in target.members.values():
            if not member.is_alias:
                yield from _documented(member)


def docstring_problems(packages: Iterable[str], root: Path, names: set[str] | None = None) -> list[str]:
    """One line per missing file cited by a docstring the API reference shows: each package's
    own docstring, and the exported names of its ``__all__`` with their members."""
    names = repository_files(root) if names is None else names
    read_package = _sibling("public_docstrings.py").read_package
    collection = griffe.ModulesCollection()
    problems: list[str] = []
    for package in packages:
        module = read_package(collection, package, [root])
        if module is None:
            continue  # public_docstrings.py reports a package it cannot find
        exported = (module.members.get(str(name)) for name in module.exports or ())
        shown = [module, *(obj for member in exported if member is not None for obj in _documented(member))]
        for obj in shown:
            if obj.docstring is not None and obj.filepath is not None:
                where = f"the docstring of {obj.path} ({_shown(Path(obj.filepath), root)}:{obj.docstring.lineno})"
                problems += _problems(where, obj.docstring.value, root, Path(obj.filepath).parent, names)
    return list(dict.fromkeys(problems))


def _shown(path: Path, root: Path) -> str:
    """``path`` as a warning names it: relative to the repository's root when inside it."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


COMMENT = re.compile(r"(?:^|\s)#(.*)$")


def comments(text: str) -> str:
    """The comments of a YAML file, one line each: whole-line comments and those after a value."""
    return "\n".join(match.group(1) for line in text.splitlines() if (match := COMMENT.search(line)))


def recipe_problems(recipes_dir: Path, root: Path, names: set[str] | None = None) -> list[str]:
    """One line per missing file cited by a comment of a recipe under ``recipes_dir``."""
    names = repository_files(root) if names is None else names
    problems: list[str] = []
    for recipe in sorted(recipes_dir.rglob("*.yaml")):
        text = comments(recipe.read_text(encoding="utf-8"))
        problems += _problems(f"a comment of {_shown(recipe, root)}", text, root, recipe.parent, names)
    return problems


def citation_problems(root: Path, docs_dir: Path, packages: Sequence[str]) -> list[str]:
    """Every citation of a missing file: in the pages, the shown docstrings and the recipes."""
    names = repository_files(root)
    problems = page_problems(docs_dir, root, names) + docstring_problems(packages, root, names)
    recipes = root / "recipes"
    return problems + (recipe_problems(recipes, root, names) if recipes.is_dir() else [])


def _sibling(filename: str) -> ModuleType:
    """Another hook of this folder, loaded by path as MkDocs loads hooks (the folder is no package)."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_packages() -> tuple[str, ...]:
    """The packages the API reference renders (``PUBLIC_PACKAGES`` of ``public_docstrings.py``)."""
    return tuple(_sibling("public_docstrings.py").PUBLIC_PACKAGES)


def on_pre_build(config: Any) -> None:
    """Warn (an error under ``--strict``) for every citation of a file the repository lacks."""
    root = Path(config.config_file_path).resolve().parent
    for problem in citation_problems(root, Path(config.docs_dir).resolve(), public_packages()):
        log.warning(problem)
