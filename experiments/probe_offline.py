"""Train a hierarchical model on MNIST digits and record its per-layer probe accuracy.

    LEBM_DATA=../shared/data python experiments/probe_offline.py [--recipe R] [--max-epochs N]
        [--set KEY=VALUE ...]

Runs ``lebm fit -c R`` (default ``recipes/hierarchical/mnist_probe_offline.yaml``: the 5,000
offline digits; ``mnist_probe.yaml``: MNIST's 60,000 training digits; each ``--set`` is one
``--KEY VALUE`` of ``lebm fit``), whose ``LatentProbe`` callback writes ``probe.json`` in the run
folder after training, then turns each layer's test accuracy into a record ``metric:
probe_acc_layer{i}`` (``i = 1`` the bottom layer) of experiment ``<recipe name>`` (a ``_vlae``
suffix dropped) in ``docs/results/hierarchical_<experiment>.json``, with the epochs, the updates
and the digits the model and the probe saw, and regenerates ``docs/results.md``. The recipes
``*_vlae.yaml`` are the same model with the EBM switched off (a VLAE).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
from pathlib import Path

import torch
from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device
from script import ScriptError, existing_file, positive_int, run_lebm, run_main

from lebm.cli.resolve import resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=existing_file, default="recipes/hierarchical/mnist_probe_offline.yaml")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--output", default=None, help="default: docs/results/hierarchical_<experiment>.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a lebm fit option")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    config = resolve_recipe(REPO / args.recipe)
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    probes = [c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).endswith("LatentProbe")]
    if not probes and not any("LatentProbe" in item for item in args.set):
        raise ScriptError(
            f"{args.recipe} has no lebm.callbacks.LatentProbe among its trainer.callbacks, so its run would write no "
            "probe.json (after training, replacing a run there): give a probe recipe, e.g. "
            "recipes/hierarchical/mnist_probe_offline.yaml, or add the callback with --set trainer.callbacks+=..."
        )
    run_dir = REPO / "runs" / "hierarchical" / Path(args.recipe).stem
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    for item in args.set:
        key, _, value = item.partition("=")
        extra += [f"--{key.removeprefix('--')}", value]
    experiment = Path(args.recipe).stem.removesuffix("_vlae")
    command = ["lebm", "fit", "-c", args.recipe, "--trainer.default_root_dir", str(run_dir), "--overwrite", "true"]
    command += [*EPOCH_LINES, *extra]
    print("+", shlex.join(command), flush=True)
    run_lebm(command)
    probe = json.loads((run_dir / "probe.json").read_text())
    prior = config["model"]["init_args"]["prior"]["class_path"].rsplit(".", 1)[-1]
    method = "JointHierarchicalEBM" if prior != "GaussianPrior" else "JointHierarchicalEBM, EBM off (VLAE)"
    epochs = args.max_epochs or config["trainer"]["max_epochs"]
    updates = int(torch.load(newest_last_checkpoint(run_dir), map_location="cpu", weights_only=False)["global_step"])
    options = "".join(f", {item}" for item in args.set)
    output = Path(args.output or REPO / "docs" / "results" / f"hierarchical_{experiment}.json")
    records = [r for r in (json.loads(output.read_text()) if output.exists() else []) if r["method"] != method]
    for i, (layer, accuracy) in enumerate(probe["accuracy"].items(), start=1):
        records.append(
            {
                "method": method,
                "experiment": experiment,
                "metric": f"probe_acc_layer{i}",
                "layer": layer,
                "value": round(float(accuracy), 4),
                "budget": f"{epochs} epochs ({updates} updates) on {probe['n_train']} digits, probe tested on "
                f"{probe['n_test']}{options}",
                "updates": updates,
                "command": "LEBM_DATA=../shared/data "
                + shlex.join(
                    [
                        "python",
                        "experiments/probe_offline.py",
                        "--recipe",
                        args.recipe,
                        *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
                        *[f"--set={item}" for item in args.set],
                    ]
                ),
                "device": this_device(),
                "date": datetime.date.today().isoformat(),
            }
        )
    records.sort(key=lambda r: (r["method"], r["metric"]))
    output.write_text(json.dumps([stamped(r) for r in records], indent=2) + "\n")
    render_results_md()
    print(json.dumps(probe["accuracy"]), flush=True)


if __name__ == "__main__":
    run_main(main)
