"""The documentation site (mkdocs.yml) builds with ``--strict``, and its hook fails the build on a
public class or function without a docstring (device: CPU; skipped without the ``docs`` extra)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytest.importorskip("material")

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "docs" / "hooks" / "public_docstrings.py"
MARKUP = REPO / "docs" / "hooks" / "docstring_markup.py"


def load_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2 (not a warning)
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_package(root: Path) -> None:
    """``toypkg``: a documented class, function and constant, and one of each without a docstring
    (the function's is re-exported from a submodule, as lebm's packages do)."""
    (root / "toypkg").mkdir()
    (root / "toypkg" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            """A tiny package."""

            from toypkg.parts import bare_function

            #: Documented the Sphinx way.
            LIMIT = 3
            UNDOCUMENTED = 4

            __all__ = ["Documented", "Bare", "documented", "bare_function", "LIMIT", "UNDOCUMENTED"]


            class Documented:
                """Has a docstring."""


            class Bare:
                pass


            def documented() -> None:
                """Has a docstring."""
            '''
        )
    )
    (root / "toypkg" / "parts.py").write_text("def bare_function() -> None:\n    pass\n")


def test_the_hook_names_every_public_name_without_a_docstring(tmp_path: Path) -> None:
    hook = load_file(HOOK)
    write_package(tmp_path)
    problems = hook.missing_docstrings(["toypkg"], [tmp_path])
    assert len(problems) == 3, problems
    assert any("public class toypkg.Bare has no docstring" in line and "__init__.py" in line for line in problems)
    assert any(
        "public function toypkg.bare_function has no docstring" in line and "parts.py" in line for line in problems
    )
    assert any("public attribute toypkg.UNDOCUMENTED has no docstring" in line for line in problems)
    assert not any("Documented" in line or "documented " in line or "LIMIT" in line for line in problems)
    assert hook.missing_docstrings(["toypkg.nothere"], [tmp_path]) == [f"toypkg.nothere is not found under {tmp_path}"]


def test_the_public_packages_of_lebm_have_every_docstring() -> None:
    hook = load_file(HOOK)
    assert hook.missing_docstrings(hook.PUBLIC_PACKAGES, [REPO]) == []
    assert hook.reference_packages(REPO / "docs" / "reference") == set(hook.PUBLIC_PACKAGES)


def test_sphinx_markup_reads_as_markdown() -> None:
    markup = load_file(MARKUP)
    assert markup.sphinx_to_markdown("see :class:`~lebm.models.base.Method` and :func:`lebm.load`") == (
        "see `Method` and `lebm.load`"
    )
    assert markup.sphinx_to_markdown("In a recipe::\n\n    x: 1") == "In a recipe:\n\n    x: 1"
    assert markup.sphinx_to_markdown("Layout ::\n\n    x") == "Layout\n\n    x"
    assert markup.sphinx_to_markdown("a[::2]::b") == "a[::2]::b"


def test_strict_build_fails_on_a_public_class_without_a_docstring(tmp_path: Path) -> None:
    """The hook's warning reaches MkDocs' strict mode: a tiny site over ``toypkg`` fails to build."""
    write_package(tmp_path)
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# toypkg\n")
    (tmp_path / "docs" / "reference" / "toypkg.md").write_text("# toypkg\n\n::: toypkg\n")
    (tmp_path / "hook.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location("public_docstrings", {str(HOOK)!r})
            hook = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(hook)
            hook.PUBLIC_PACKAGES = ("toypkg",)
            on_pre_build = hook.on_pre_build
            """
        )
    )
    config = tmp_path / "mkdocs.yml"
    config.write_text("site_name: toy\nnav:\n  - index.md\n  - reference/toypkg.md\nhooks:\n  - hook.py\n")
    result = mkdocs_build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "WARNING -  public class toypkg.Bare has no docstring (toypkg/__init__.py:" in output
    assert "Aborted with 3 warnings in strict mode" in output


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` of the repository's site: every guide, the API reference, no
    warning (broken links and anchors, docstrings griffe cannot parse, missing docstrings)."""
    site = tmp_path / "site"
    result = mkdocs_build(REPO / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr[-5000:]
    assert (site / "index.html").is_file()
    reference = (site / "reference" / "lebm.samplers" / "index.html").read_text()
    assert 'id="lebm.samplers.Langevin"' in reference
    assert ":class:" not in reference  # the roles read as code
    assert not (site / "hooks").exists()  # the hooks are not pages or assets
    assert not list(site.glob("results/*.json"))  # the result records are not part of the site
