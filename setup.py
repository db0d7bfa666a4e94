"""Build hook: the wheel carries the repository's ``recipes/`` as ``lebm/packaged_recipes/``.

``recipes/`` stays at the top of the repository, the one copy (a clone reads it in place; see
``lebm.cli.catalog``). Everything else about the package is declared in ``setup.cfg``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RECIPES = Path(__file__).resolve().parent / "recipes"
PACKAGED = Path("lebm") / "packaged_recipes"


class BuildPyWithRecipes(build_py):
    """``build_py`` that also copies every ``recipes/**/*.yaml`` into the built ``lebm`` package.

    An editable install (``pip install -e``) needs no copy: lebm finds the clone's ``recipes/``.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not RECIPES.is_dir():
            return
        target = Path(self.build_lib) / PACKAGED
        shutil.rmtree(target, ignore_errors=True)
        for source in sorted(RECIPES.rglob("*.yaml")):
            destination = target / source.relative_to(RECIPES)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


setup(cmdclass={"build_py": BuildPyWithRecipes})
