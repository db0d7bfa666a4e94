"""The parameter count of each recipe at which the results compare methods.

    python scripts/recipe_sizes.py          # writes docs/results/status/sizes.json
    python scripts/recipe_sizes.py --check  # writes nothing; exit 1 if a count is not what the recipe builds

Each recipe of :data:`SIZED` is built as ``lebm fit -c RECIPE`` would build it (no data read, no
training) and its method's parameters counted. ``scripts/make_results_md.py`` reads the file, so a
results section that sets methods side by side names each one's size beside the budgets its rows
give (``results_sizes.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = REPO / "docs" / "results" / "status" / "sizes.json"
#: The recipes whose runs the results compare across methods (the MNIST anomaly recipes and the
#: quickstarts), by their names in ``recipes/``.
SIZED = (
    "quickstart",
    "multistage_nce/quickstart",
    "hierarchical/quickstart",
    "latent_ebm/mnist_anomaly",
    "latent_ebm/mnist_anomaly_offline",
    "multistage_nce/mnist_anomaly_offline",
    "hierarchical/mnist_anomaly",
    "hierarchical/mnist_anomaly_offline",
    "damc/mnist_anomaly",
    "damc/mnist_anomaly_offline",
)


def size_of(recipe: str, data: Path) -> dict:
    """``{"method", "parameters"}`` of the method ``recipe`` builds: its class name and parameter count.
    ``data`` holds the datasets (``mnist/``); the build runs in a temporary folder, which takes the
    run folder it makes."""
    from lebm.cli.recipe_api import from_recipe

    dataset = "mnist" if "mnist" in recipe else None
    overrides = {"data.init_args.root": str(data / dataset)} if dataset else {}
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        model = from_recipe(str(REPO / "recipes" / f"{recipe}.yaml"), overrides).model
    return {"method": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}


def sizes(data: Path) -> dict[str, dict]:
    """:func:`size_of` each recipe of :data:`SIZED`, by recipe name."""
    return {recipe: size_of(recipe, data) for recipe in SIZED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the file; write nothing")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    counted = sizes(Path(os.environ["LEBM_DATA"]))
    if args.check:
        kept = json.loads(SIZES.read_text()) if SIZES.exists() else {}
        if kept != counted:
            differ = sorted(r for r in {*kept, *counted} if kept.get(r) != counted.get(r))
            sys.exit(f"{SIZES.relative_to(REPO)} is out of date for {differ}: run python scripts/recipe_sizes.py")
        return
    SIZES.write_text(json.dumps(counted, indent=1) + "\n")
    print(f"wrote {SIZES.relative_to(REPO)}")


if __name__ == "__main__":
    main()
