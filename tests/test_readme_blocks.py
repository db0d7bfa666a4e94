"""The Python blocks of README.md and docs/index.md run as pasted (device: CPU), in a folder that
holds what they name: the quickstart's run (and the text quickstart's), trained for one batch by
the lebm command. The README names every method the recipes train and cites every paper they
follow, and its first two commands stay what a newcomer types."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import lebm.models
from tests.helpers.cli_runner import REPO, run_cli

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHORT = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user")
    for recipe, run in [
        ("recipes/quickstart.yaml", "runs/quickstart"),
        ("recipes/latent_ebm/text_quickstart.yaml", "runs/latent_ebm/text_quickstart"),
    ]:
        run_cli("fit", "-c", str(REPO / recipe), "--trainer.default_root_dir", str(folder / run), *SHORT, cwd=folder)
    return folder


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_python_blocks_run_as_pasted(runs: Path, page: str) -> None:
    blocks = FENCE.findall((REPO / page).read_text())
    assert blocks, f"no Python block in {page}"
    cwd = os.getcwd()
    os.chdir(runs)
    try:
        for block in blocks:
            exec(compile(block, page, "exec"), {"__name__": "__main__"})
    finally:
        os.chdir(cwd)


NUMBER_WORDS = {4: "four", 5: "five", 6: "six", 7: "seven"}


def test_the_readme_names_every_method_and_cites_every_paper_the_recipes_follow() -> None:
    readme = (REPO / "README.md").read_text()
    recipes = "\n".join(path.read_text() for path in sorted((REPO / "recipes").rglob("*.yaml")))
    classes = set(re.findall(r"class_path: lebm\.models\.(\w+)", recipes))
    methods = sorted(name for name in classes if issubclass(getattr(lebm.models, name), lebm.models.Method))
    assert len(methods) >= 5, methods
    table = readme.split("## The five methods", 1)[1].split("\n## ", 1)[0]
    assert [name for name in methods if f"| `{name}` |" not in table] == []
    assert f"{NUMBER_WORDS[len(methods)]} published methods" in readme
    citing = readme.split("## Licence and citing", 1)[1]
    papers = set(re.findall(r"arXiv[: ](\d{4}\.\d{5})", recipes))
    assert "2310.03218" in papers  # DAMC (Yu et al., NeurIPS 2023)
    assert sorted(paper for paper in papers if f"arXiv:{paper}" not in citing) == []


def test_the_readme_opens_with_the_two_commands_a_newcomer_types() -> None:
    first_block = (REPO / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert commands == ['pip install -c constraints.txt -e ".[test]" && lebm fit -c quickstart', "python -m pytest -q"]
