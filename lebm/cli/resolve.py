"""The config a recipe runs with, as plain data: what ``lebm fit -c recipe --print_config`` prints."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import yaml

from lebm.cli.main import main
from lebm.cli.recipes import RecipeError


def resolve_recipe(recipe: str | Path, *overrides: str, subcommand: str = "fit") -> dict[str, Any]:
    """The config ``lebm <subcommand> -c recipe [overrides]`` runs with, as plain data: includes
    expanded, interpolations resolved, defaults filled in (what ``--print_config`` prints)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            main([subcommand, "-c", str(recipe), *overrides, "--print_config"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise RecipeError(
                    f"{recipe} does not parse (exit code {done.code}); run it with lebm to see why"
                ) from None
    return yaml.safe_load(printed.getvalue())
