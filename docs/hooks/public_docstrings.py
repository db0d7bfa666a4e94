"""MkDocs hook: a public class, function or constant without a docstring fails the build.

mkdocstrings renders what it finds and says nothing about what is missing, so this hook reads the
public packages of the API reference statically with griffe (no torch or Lightning import), walks
each package's ``__all__`` and logs one warning per exported class, function or attribute
(constant, type alias) that has no docstring; ``mkdocs build --strict`` turns the warnings into
an error. Attributes count too because the reference leaves out what has no docstring
(``show_if_no_docstring: false``): an undocumented constant would vanish from it silently. An
attribute's docstring is the string literal on the line after its assignment or, as Sphinx reads
it, the ``#:`` comment above it (``docstring_markup.py``, loaded here as in mkdocs.yml).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import griffe

# The packages of docs/reference/, one page each (the hook checks that the two lists agree).
PUBLIC_PACKAGES = (
    "lebm",
    "lebm.models",
    "lebm.samplers",
    "lebm.nets",
    "lebm.estimators",
    "lebm.metrics",
    "lebm.callbacks",
    "lebm.data",
    "lebm.speed",
)

# The griffe extension mkdocstrings loads too (mkdocs.yml): "#:" comments document attributes.
MARKUP_EXTENSION = Path(__file__).with_name("docstring_markup.py")

# A child of the "mkdocs" logger: its warnings count for --strict.
log = logging.getLogger("mkdocs.hooks.public_docstrings")


def _where(obj: griffe.Object) -> str:
    path = obj.relative_filepath if obj.filepath else obj.path
    return f"{path}:{obj.lineno}" if obj.lineno else str(path)


def read_package(
    collection: griffe.ModulesCollection, package: str, search_paths: Sequence[str | Path]
) -> griffe.Module | None:
    """``package`` as griffe reads it from its source (never imported), loaded into ``collection``
    with lebm's docstring markup; None when it is not found under ``search_paths``."""
    top = package.split(".", 1)[0]
    try:
        if top not in collection:
            griffe.load(
                top,
                search_paths=list(map(str, search_paths)),
                modules_collection=collection,
                extensions=griffe.load_extensions(str(MARKUP_EXTENSION)),
                allow_inspection=False,  # read the source; never import it
            )
        return collection[package]
    except (ImportError, KeyError):
        return None


def missing_docstrings(packages: Iterable[str], search_paths: Sequence[str | Path]) -> list[str]:
    """One line per name in a package's ``__all__`` that has no docstring.

    Each line names the package, the exported name and the file and line of its definition. A name
    that ``__all__`` lists but the package does not define, or that cannot be followed to its
    definition, is reported too.
    """
    problems: list[str] = []
    collection = griffe.ModulesCollection()
    for package in packages:
        module = read_package(collection, package, search_paths)
        if module is None:
            problems.append(f"{package} is not found under {', '.join(map(str, search_paths))}")
            continue
        exports = module.exports
        if exports is None:
            problems.append(f"{package} has no __all__: its public API is not declared")
            continue
        for entry in exports:
            name = entry if isinstance(entry, str) else str(entry)
            if name not in module.members:
                problems.append(f"{package}.{name} is in __all__ but {package} does not define or import it")
                continue
            member = module.members[name]
            try:
                target = member.final_target if member.is_alias else member
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                problems.append(f"{package}.{name} cannot be followed to its definition ({member.target_path})")
                continue
            if target.is_module:
                continue  # a subpackage in __all__ has its own page or none
            if target.docstring is None or not target.docstring.value.strip():
                kind = target.kind.value.replace("_", " ")
                problems.append(f"public {kind} {package}.{name} has no docstring ({_where(target)})")
    return problems


def reference_packages(reference_dir: Path) -> set[str]:
    """The packages the reference pages render: every ``::: name`` line of ``reference_dir/*.md``."""
    return {
        match.group(1)
        for page in reference_dir.glob("*.md")
        for match in re.finditer(r"^::: *([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE)
    }


def on_pre_build(config: Any) -> None:
    """Warn (an error under ``--strict``) for every exported name without a docstring, and for a
    reference page whose package this hook does not check (or the reverse)."""
    root = Path(config.config_file_path).resolve().parent
    rendered = reference_packages(Path(config.docs_dir) / "reference")
    for package in sorted(rendered - set(PUBLIC_PACKAGES)):
        log.warning(f"docs/reference renders {package}, which PUBLIC_PACKAGES in {Path(__file__).name} does not check")
    for package in sorted(set(PUBLIC_PACKAGES) - rendered):
        log.warning(f"PUBLIC_PACKAGES names {package}, which has no page under docs/reference")
    for problem in missing_docstrings(PUBLIC_PACKAGES, [root]):
        log.warning(problem)
