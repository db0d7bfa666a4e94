"""The alias table: where modules and names of earlier lebm versions live now.

Recipes, saved run configs (``config.yaml``) and checkpoints name their parts by class path, e.g.
``lebm.models.nets.GaussianDecoder`` before the nets moved to :mod:`lebm.nets`. Two mechanisms keep
them loading, both driven by the tables below:

- :data:`MOVED_MODULES`: importing an old module path, or a path below it, gives the new module
  (one object, so ``isinstance`` checks hold); ``lebm`` installs the finder that does this when it
  is imported, which serves ``import``, jsonargparse (the ``lebm`` CLI) and
  :func:`lebm.config.import_object`;
- :data:`MOVED_NAMES`: a name that left a module that still exists; that module's
  ``__getattr__ = moved_names(__name__)`` finds it (``from old import Name``, jsonargparse), and
  :func:`current_path` rewrites such a class path (checkpoints, ``build``).

Each use of an old path warns once (``FutureWarning``, shown by default) with the new one: write
new recipes with the new paths. Add a row whenever a public module or class moves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: old module path -> new module path (layout of issue 33, lebm 0.1.0 -> 0.2).
MOVED_MODULES: dict[str, str] = {
    "lebm.cli_app": "lebm.cli.app",
    "lebm.cli_errors": "lebm.cli.errors",
    "lebm.recipes": "lebm.cli.recipes",
    "lebm.numerics": "lebm.speed.numerics",
    "lebm.callbacks.chain_capture": "lebm.speed.chain_capture",
    "lebm.callbacks.fast_nets": "lebm.speed.fast_nets",
    "lebm.callbacks.threads": "lebm.speed.threads",
    "lebm.samplers.capture_keys": "lebm.samplers.capture.keys",
    "lebm.samplers.recorders": "lebm.samplers.capture.recorders",
    "lebm.samplers.host_sync": "lebm.samplers.capture.host_sync",
    "lebm.samplers.op_replay": "lebm.samplers.capture.op_replay",
    "lebm.models.nets": "lebm.nets",  # and every module below it: lebm.models.nets.encoders, ...
    "lebm.models.latents": "lebm.nets.latents",
    "lebm.data.catalog": "lebm.data.images.catalog",
    "lebm.data.download": "lebm.data.images.download",
    "lebm.data.folder": "lebm.data.images.folder",
    "lebm.data.folder_preprocess": "lebm.data.images.folder_preprocess",
    "lebm.data.idx": "lebm.data.images.idx",
    "lebm.data.readers": "lebm.data.images.readers",
    "lebm.data.registry": "lebm.data.images.registry",
    "lebm.data.synthetic": "lebm.data.toy",
    "lebm.data.text_batches": "lebm.data.text.batches",
    "lebm.data.text_files": "lebm.data.text.files",
    "lebm.data.text_synthetic": "lebm.data.text.grammar",
    "lebm.data.vocabulary": "lebm.data.text.vocabulary",
    "lebm.data.anomaly": "lebm.data.tasks.anomaly",
    "lebm.data.ood": "lebm.data.tasks.ood",
}

#: old ``module.Name`` -> new ``module.Name``, for names that left a module that still exists.
MOVED_NAMES: dict[str, str] = {
    "lebm.checkpoints.load_method": "lebm.models.loading.load_method",
    "lebm.checkpoints.stored_method_class": "lebm.models.loading.stored_method_class",
    "lebm.recipes.resolve_recipe": "lebm.cli.resolve.resolve_recipe",
    "lebm.models.priors.ProductOfRatiosPrior": "lebm.models.stages.ProductOfRatiosPrior",
    "lebm.cli.app.last_checkpoint": "lebm.cli.run_folder.last_checkpoint",
    "lebm.estimators.reconstruction.Decoder": "lebm.estimators.types.Decoder",
}

_warned: set[str] = set()


def _warn_once(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(
            f"{old} moved to {new} (lebm 0.2); the old path still works through lebm.moved, update it "
            "in your recipes and code",
            FutureWarning,
            stacklevel=3,
        )


def current_path(path: str) -> str:
    """``path`` (a dotted module or ``module.Name`` path) as it is called now: the longest moved
    module prefix replaced, or a moved name rewritten; other paths unchanged."""
    if path in MOVED_NAMES:
        _warn_once(path, MOVED_NAMES[path])
        return MOVED_NAMES[path]
    new = moved_module(path, warn=True)
    return path if new is None else new


def moved_module(name: str, warn: bool = False) -> str | None:
    """The path an old module path ``name`` (or a path below one) has now, or None; ``warn``: say
    once which moved module it goes through."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in MOVED_MODULES:
            if warn:
                _warn_once(prefix, MOVED_MODULES[prefix])
            return ".".join([MOVED_MODULES[prefix], *parts[cut:]])
    return None


def moved_names(module_name: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for a module some of whose names moved away (PEP 562): a
    name of :data:`MOVED_NAMES` under ``module_name`` (or under an old path of it) is imported from
    where it lives now, with a warning; any other missing name is an ``AttributeError``."""
    old_paths = [module_name, *(old for old, new in MOVED_MODULES.items() if new == module_name)]

    def __getattr__(name: str) -> Any:
        for path in old_paths:
            target = MOVED_NAMES.get(f"{path}.{name}")
            if target is not None:
                _warn_once(f"{path}.{name}", target)
                module, _, attribute = target.rpartition(".")
                return getattr(importlib.import_module(module), attribute)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (one of :data:`MOVED_MODULES`, or below one) as the module it
    moved to: the import system returns the real module, whose spec stays its own."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith("lebm.") and moved_module(fullname) is not None:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder, replaced in sys.modules by exec_module

    def exec_module(self, module: ModuleType) -> None:
        new = moved_module(module.__name__, warn=True)
        assert new is not None
        sys.modules[module.__name__] = importlib.import_module(new)  # what `import old` returns


def install() -> None:
    """Put :class:`MovedModuleFinder` on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())  # before the path finder: an old folder left behind must not win
