"""The config lebm writes (``config.yaml``, ``from_recipe(...).config``) is the one jsonargparse's
checked dump writes (device: CPU).

``lebm.cli.app.dump_parsed`` writes a parsed config without jsonargparse checking every value again;
this compares it, after lebm's own edits of the parsed config (run folder, loggers' ``save_dir``,
batch limits), with the checked dump, for the W&B logger the recipes give and a CSV logger without a
``save_dir``, so that another jsonargparse that writes them differently fails here.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from lebm.cli.app import dump_parsed
from lebm.cli.catalog import locate_config_args
from lebm.cli.recipe_api import RecipeBuild
from lebm.cli.recipes import expand_includes


@pytest.mark.parametrize(
    "logger",
    [[], ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]],
    ids=["recipe's W&B logger", "CSVLogger without save_dir"],
)
def test_the_written_config_is_the_checked_dump(logger: list[str], tmp_path: Path) -> None:
    args = ["fit", "-c", "quickstart", "--trainer.default_root_dir", str(tmp_path)]
    with redirect_stderr(io.StringIO()):
        built = RecipeBuild(args=expand_includes(locate_config_args([*args, *logger]))[1:], run=False)
    for settings in ({}, {"skip_link_targets": False}):
        written = dump_parsed(built.parser, built.config, **settings)
        assert written == built.parser.dump(built.config, skip_unset=False, **settings)
        assert "save_dir:" in written  # the loggers as lebm placed them in the run folder
