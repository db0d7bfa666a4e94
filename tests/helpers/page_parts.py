"""The code of ``docs/extending.md`` as a user's module: its ``# my_parts.py`` blocks written to
``my_parts.py`` in a temporary folder on ``sys.path`` (importable by name, as recipes and
checkpoints name it), once per test session; and its recipe snippets with their ``include``
pointing at the repository's recipes. ``tests/test_docs_extending.py`` checks the page with it, and
``tests/models/cases.py`` builds the page's method for the method contract suite."""

from __future__ import annotations

import atexit
import importlib
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "extending.md"
MODULE = "my_parts"
MODULE_MARK = f"# {MODULE}.py\n"
EXAMPLE_MARK = "# example:"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FOLDER = Path(tempfile.mkdtemp(prefix="lebm_page_parts_"))
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)


def page() -> str:
    return DOC.read_text()


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page()) if lang == language]


def module_source() -> str:
    return "\n".join(block for block in blocks("python") if block.startswith(MODULE_MARK))


def recipe_snippets() -> dict[str, str]:
    snippets = {}
    for block in blocks("yaml"):
        match = re.match(r"# recipes/(\S+\.yaml)\n", block)
        if match:
            snippets[match.group(1)] = block
    return snippets


def install_module() -> Path:
    """Write ``my_parts.py`` from the page (once) and put its folder on ``sys.path``, so that
    ``import my_parts`` (a recipe's or a checkpoint's class path) works from here on, whatever test
    ran before; returns the file."""
    path = FOLDER / f"{MODULE}.py"
    if not path.exists():
        path.write_text(module_source())
        importlib.invalidate_caches()  # an import that failed before the file existed is not remembered
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    return path


def page_parts() -> types.ModuleType:
    """``my_parts``, written from the page (once) and imported by name."""
    path = install_module()
    module = sys.modules.get(MODULE)
    if module is not None and Path(getattr(module, "__file__", "")) == path:
        return module
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


def write_recipe(snippet: str, folder: Path, name: str) -> Path:
    """The page's recipe with its ``include`` pointing at the repository's recipes."""
    data = yaml.safe_load(snippet)
    data["include"] = [str(REPO / "recipes" / entry) for entry in data["include"]]
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def page_recipe(name: str) -> str:
    """The page's recipe ``name`` as a file (in the session's folder); its path. The module its
    class paths name is installed first (:func:`install_module`), so the recipe runs in a test
    that never built the page's parts itself (run alone, or first)."""
    install_module()
    return str(write_recipe(recipe_snippets()[name], FOLDER, name))
