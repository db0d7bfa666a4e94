"""Every test file passes alone and in any order: what a test needs from a module built on the fly
(``my_parts``, written from ``docs/extending.md``) it sets up itself. Device: CPU.

``scripts/check_test_files_alone.py`` runs each file that builds modules in a fresh process (CI
runs it after the default tier); this fast test checks the case that once failed alone:
``test_exact_resume_through_the_cli[MixturePriorModel-docs]`` runs the page's recipe, which names
``my_parts.MixturePriorModel``, without building the page's method first.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.page_parts import FOLDER, MODULE, page_recipe
from tests.helpers.scripts import load_script


def test_a_page_recipe_imports_the_module_it_names_in_a_fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a session where no test has built the page's parts: the folder off ``sys.path``, the
    module not imported. Asking for the recipe is enough for its class path to import."""
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if Path(entry) != FOLDER])
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    recipe = yaml.safe_load(Path(page_recipe("my_method.yaml")).read_text())
    module_name, class_name = recipe["model"]["class_path"].rsplit(".", 1)
    assert module_name == MODULE
    assert hasattr(importlib.import_module(module_name), class_name)


def test_the_check_script_runs_the_files_that_build_modules() -> None:
    script = load_script("scripts/check_test_files_alone.py")
    chosen = {path.relative_to(script.REPO).as_posix() for path in script.test_files() if script.builds_modules(path)}
    assert {"tests/models/test_method_contract.py", "tests/test_docs_extending.py"} <= chosen
    assert "tests/test_rank_streams.py" not in chosen  # builds nothing
