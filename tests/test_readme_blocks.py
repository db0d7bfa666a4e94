"""The Python blocks of README.md and docs/index.md run as pasted (device: CPU), in a folder that
holds what they name: the quickstart's run (and the text quickstart's), trained for one batch by
the lebm command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

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
