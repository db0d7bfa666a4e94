"""The sizes of the methods a results section sets side by side, for ``docs/results.md``.

A section whose records come from more than one method compares them, so it names each method's
parameter count at the recipe its records ran (``docs/results/status/sizes.json``, written by
``scripts/recipe_sizes.py``) beside the budget every row gives. A record's recipe is the one its
command (or budget) names (``recipes/<name>.yaml``), its run folder's ``runs/<method>/<recipe>/``,
or the sampler study's protocol; the experiment runners whose run folders are named after the
experiment train the method's ``mnist_anomaly_offline`` recipe (:data:`RUN_FOLDER_RECIPES`). Only
lebm's methods (those ``sizes.json`` sizes) count: a baseline with no model is no method.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SIZES = Path(__file__).resolve().parents[1] / "docs" / "results" / "status" / "sizes.json"
#: Run folders named after an experiment, and the recipe (of the run's method) they train.
RUN_FOLDER_RECIPES = {
    "mnist_anomaly_selections": "mnist_anomaly_offline",
    "mnist_anomaly_gpu_budget": "mnist_anomaly_offline",
}
#: ``experiments/sampler_study.py``'s protocols and the recipe each trains, by method class.
SAMPLER_STUDY_RECIPES = {
    ("digits", "LatentEBM"): "quickstart",
    ("digits", "JointHierarchicalEBM"): "hierarchical/quickstart",
    ("mnist", "LatentEBM"): "latent_ebm/mnist_anomaly_offline",
}
SAMPLER_STUDY = re.compile(r"sampler_study\.py .*--protocol (\w+)")
COMMAND_RECIPE = re.compile(r"recipes/([\w/]+)\.yaml")
RUN_FOLDER = re.compile(r"runs/(\w+)/(\w+)/")


def load_sizes(path: Path = SIZES) -> dict[str, dict]:
    """The recipes' sizes, by recipe name (empty when the file is missing)."""
    return json.loads(path.read_text()) if path.exists() else {}


def base_method(record: dict) -> str:
    """The method's class of a record (``"LatentEBM, Gaussian prior"`` is ``LatentEBM``)."""
    return str(record["method"]).split(",")[0].strip()


def recipes_of(record: dict, sizes: dict[str, dict]) -> list[str]:
    """The sized recipes a record's command ran: named with ``recipes/`` (in its command or budget),
    by its run folder, or by the sampler study's protocol."""
    command = str(record.get("command", ""))
    found = COMMAND_RECIPE.findall(command + " " + str(record.get("budget", "")))
    study = SAMPLER_STUDY.search(command)
    if study and (study.group(1), base_method(record)) in SAMPLER_STUDY_RECIPES:
        found.append(SAMPLER_STUDY_RECIPES[(study.group(1), base_method(record))])
    for method, folder in RUN_FOLDER.findall(command):
        found.append(f"{method}/{RUN_FOLDER_RECIPES.get(folder, folder)}")
    return [recipe for recipe in dict.fromkeys(found) if recipe in sizes]


def millions(count: int) -> str:
    """A parameter count as the tables print it: ``0.82M``, ``24.9M``, ``130k``."""
    if count >= 10_000_000:
        return f"{count / 1e6:.1f}M"
    return f"{count / 1e6:.2f}M" if count >= 500_000 else f"{round(count / 1e3)}k"


def sizes_line(ours: list[dict], sizes: dict[str, dict]) -> list[str]:
    """One line naming each compared method's size at its records' recipes, then a blank line; nothing
    for a section of one method."""
    known = {size["method"] for size in sizes.values()}
    methods = list(dict.fromkeys(base_method(r) for r in ours if base_method(r) in known))
    if len(methods) < 2:
        return []
    cells = []
    for method in methods:
        recipes = list(
            dict.fromkeys(
                recipe
                for r in ours
                if base_method(r) == method
                for recipe in recipes_of(r, sizes)
                if sizes[recipe]["method"] == method
            )
        )
        sized = ", ".join(f"{millions(sizes[recipe]['parameters'])} (`{recipe}`)" for recipe in recipes)
        cells.append(f"{method} {sized or 'size not recorded'}")
    return [
        "**Methods compared here, by size**: parameters at the recipes their records ran (overrides such as "
        f"`ngf` are in each record's budget): {'; '.join(cells)}. Each row's budget is in its updates or "
        "budget column.",
        "",
    ]
