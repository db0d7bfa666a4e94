"""Train a hierarchical model on the offline MNIST digits and record its per-layer probe accuracy.

    LEBM_DATA=../shared/data python experiments/probe_offline.py [--recipe R] [--max-epochs N]

Runs ``lebm fit -c R`` (default ``recipes/hierarchical/mnist_probe_offline.yaml``, whose
``LatentProbe`` callback writes ``probe.json`` in the run folder after training), then turns each
layer's test accuracy into a record ``metric: probe_acc_layer{i}`` (``i = 1`` the bottom layer) in
``docs/results/hierarchical_mnist_probe_offline.json`` and regenerates ``docs/results.md``. The
recipe ``mnist_probe_offline_vlae.yaml`` is the same model with the EBM switched off (a VLAE).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
from pathlib import Path

from records import EPOCH_LINES, render_results_md, this_device

from lebm.cli.resolve import resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/hierarchical/mnist_probe_offline.yaml")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--output", default=str(REPO / "docs/results/hierarchical_mnist_probe_offline.json"))
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    config = resolve_recipe(REPO / args.recipe)
    run_dir = REPO / "runs" / "hierarchical" / Path(args.recipe).stem
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    command = ["lebm", "fit", "-c", args.recipe, "--trainer.default_root_dir", str(run_dir), "--overwrite", "true"]
    command += [*EPOCH_LINES, *extra]
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    probe = json.loads((run_dir / "probe.json").read_text())
    prior = config["model"]["init_args"]["prior"]["class_path"].rsplit(".", 1)[-1]
    method = "JointHierarchicalEBM" if prior != "GaussianPrior" else "JointHierarchicalEBM, EBM off (VLAE)"
    epochs = args.max_epochs or config["trainer"]["max_epochs"]
    output = Path(args.output)
    records = [r for r in (json.loads(output.read_text()) if output.exists() else []) if r["method"] != method]
    for i, (layer, accuracy) in enumerate(probe["accuracy"].items(), start=1):
        records.append(
            {
                "method": method,
                "experiment": "mnist_probe_offline",
                "metric": f"probe_acc_layer{i}",
                "layer": layer,
                "value": round(float(accuracy), 4),
                "budget": f"{epochs} epochs on {probe['n_train']} digits, probe tested on {probe['n_test']}",
                "command": "LEBM_DATA=../shared/data "
                + shlex.join(["python", "experiments/probe_offline.py", "--recipe", args.recipe, *extra]),
                "device": this_device(),
                "date": datetime.date.today().isoformat(),
            }
        )
    records.sort(key=lambda r: (r["method"], r["metric"]))
    output.write_text(json.dumps(records, indent=2) + "\n")
    render_results_md()
    print(json.dumps(probe["accuracy"]), flush=True)


if __name__ == "__main__":
    main()
