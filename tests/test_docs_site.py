"""The documentation site (mkdocs.yml) builds with ``--strict``; its hooks fail the build on a
public class or function without a docstring and on a citation of a file the repository does not
have; the API reference shows each summary whole and once, and no Lightning hook (device: CPU;
skipped without the ``docs`` extra)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.subprocesses import HANG_SECONDS

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytest.importorskip("material")

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "docs" / "hooks" / "public_docstrings.py"
MARKUP = REPO / "docs" / "hooks" / "docstring_markup.py"
CITED = REPO / "docs" / "hooks" / "cited_files.py"


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
        timeout=HANG_SECONDS,
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


def toy_site(folder: Path, hook_file: Path, patch: str, nav: list[str]) -> Path:
    """``folder/mkdocs.yml`` of a tiny site whose one hook is ``hook_file`` with ``patch`` applied
    (a line of Python on its module ``hook``), listing the pages ``nav``; returns the config's path."""
    (folder / "hook.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location({hook_file.stem!r}, {str(hook_file)!r})
            hook = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(hook)
            {patch}
            on_pre_build = hook.on_pre_build
            """
        )
    )
    config = folder / "mkdocs.yml"
    config.write_text("site_name: toy\nnav:\n" + "".join(f"  - {page}\n" for page in nav) + "hooks:\n  - hook.py\n")
    return config


def test_strict_build_fails_on_a_public_class_without_a_docstring(tmp_path: Path) -> None:
    """The hook's warning reaches MkDocs' strict mode: a tiny site over ``toypkg`` fails to build."""
    write_package(tmp_path)
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# toypkg\n")
    (tmp_path / "docs" / "reference" / "toypkg.md").write_text("# toypkg\n\n::: toypkg\n")
    config = toy_site(tmp_path, HOOK, 'hook.PUBLIC_PACKAGES = ("toypkg",)', ["index.md", "reference/toypkg.md"])
    result = mkdocs_build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "WARNING -  public class toypkg.Bare has no docstring (toypkg/__init__.py:" in output
    assert "Aborted with 3 warnings in strict mode" in output


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
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
    assert not (site / "templates").exists()
    assert not list(site.glob("results/*.json"))  # the result records are not part of the site
    for page in sorted((site / "reference").glob("*/index.html")):
        html = page.read_text()
        # the page's introduction is the package's summary: its docstring is not shown under it too
        assert re.search(r'<div class="doc doc-contents first">\s*<p><span class="doc-section-title">', html), page
        # Lightning's hooks are not listed beside the user API
        assert not re.search(r'id="lebm[\w.]*\.(on_\w+|setup|configure_optimizers|training_step|\w+_dataloader)"', html)
    models = (site / "reference" / "lebm.models" / "index.html").read_text()
    assert 'id="lebm.models.Method.step_optimizers"' in models  # the user API stays


def test_summaries_take_the_first_sentence_of_the_first_paragraph() -> None:
    """The reference's summary tables show a docstring's first line: it holds the first sentence,
    whole, however the source wraps it; the rest of the paragraph follows on the next line."""
    markup = load_file(MARKUP)
    wrapped = "A generator p(x | z) with an EBM prior on z,\np(z), e.g. (B, d). More\nhere.\n\nArgs:\n    x: y"
    assert markup.summary_on_one_line(wrapped) == (
        "A generator p(x | z) with an EBM prior on z, p(z), e.g. (B, d).\nMore here.\n\nArgs:\n    x: y"
    )
    assert markup.summary_on_one_line("Call ``a.b``. Then\nthis.") == "Call ``a.b``.\nThen this."
    assert markup.summary_on_one_line("What it gives:\n\n- a") == "What it gives:\n\n- a"
    assert markup.summary_on_one_line("Pang et al. NeurIPS 2020.") == "Pang et al. NeurIPS 2020."


# ------------------------------------------------------------------ citations of missing files
def test_a_citation_of_a_file_not_in_the_repository_is_found(tmp_path: Path) -> None:
    """Design-note names and paths out of the repository are citations; run files, the authors'
    code, web addresses, wildcards and data folders are not."""
    cited = load_file(CITED)
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("# Guide\n")
    (root / "README.md").write_text("# toy\n")
    (tmp_path / "OUTSIDE.md").write_text("a file next to the repository, not in it\n")

    def missing(text: str) -> list[str]:
        return cited.missing_files(text, root, root / "docs")

    assert missing("Spec: METHODS.md §1.3; see `DESIGN.md`.") == ["METHODS.md", "DESIGN.md"]
    assert missing("the notes (`notes.txt` §2) and ../OUTSIDE.md") == ["notes.txt", "../OUTSIDE.md"]
    assert missing("[Guide](guide.md#a), docs/guide.md, README.md, ../README.md") == []
    assert missing("runs/svhn/config.yaml, last.ckpt, metrics.csv, the official train_svhn.py") == []
    assert missing("https://github.com/o/r/blob/main/NOTES.md, github.com/o/r/NOTES.md") == []
    assert missing("recipes/*/NOTES.md, LEBM_DATA=../shared/data, {name}.md, <page>.md") == []


def test_a_planted_citation_in_a_page_a_docstring_or_a_recipe_is_reported(tmp_path: Path) -> None:
    cited = load_file(CITED)
    write_package(tmp_path)
    init = tmp_path / "toypkg" / "__init__.py"
    init.write_text(init.read_text().replace('"""Has a docstring."""', '"""As METHODS.md §1 says."""', 1))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# toy\n\nSpec: `METHODS.md` §2.\n")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "run.yaml").write_text("# A run (DESIGN.md §3).\nseed_everything: 1  # GPU.md\n")
    problems = cited.citation_problems(tmp_path, tmp_path / "docs", ["toypkg"])
    assert problems == [
        "docs/index.md cites METHODS.md, which is not in the repository",
        "the docstring of toypkg.Documented (toypkg/__init__.py:14) cites METHODS.md, which is not in the repository",
        "a comment of recipes/run.yaml cites DESIGN.md, which is not in the repository",
        "a comment of recipes/run.yaml cites GPU.md, which is not in the repository",
    ]


def test_the_repository_cites_only_files_it_has() -> None:
    """The guides, the reference's docstrings and the recipes' comments of this checkout."""
    cited = load_file(CITED)
    assert cited.citation_problems(REPO, REPO / "docs", cited.public_packages()) == []


def test_strict_build_fails_on_a_citation_of_a_missing_file(tmp_path: Path) -> None:
    """The hook's warning reaches MkDocs' strict mode: a page citing ``METHODS.md §1`` fails the
    build of a tiny site, and the same site builds once the citation names the paper instead."""
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "index.md"
    page.write_text("# toy\n\nThe defaults follow METHODS.md §1.\n")
    config = toy_site(tmp_path, CITED, "hook.public_packages = lambda: ()", ["index.md"])
    result = mkdocs_build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "WARNING -  docs/index.md cites METHODS.md, which is not in the repository" in output
    page.write_text("# toy\n\nThe defaults follow Pang et al., NeurIPS 2020 (arXiv 2006.08205).\n")
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
