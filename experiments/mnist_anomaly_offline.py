"""Run the offline MNIST anomaly protocol for several held-out digits and record the AUPRC.

    python experiments/mnist_anomaly_offline.py [--digits 1 4 5 7 9] [--recipe R] [--max-epochs N]

For each digit: ``lebm fit -c R --data.init_args.anomaly_classes [d] --ckpt_path auto`` in its own
run folder (``runs/<recipe name>/digit<d>``; a run stopped before its last epoch resumes exactly),
then the AUPRC of the last ``last_k`` validation evaluations (kept in the checkpoint by the
``AnomalyDetection`` callback) becomes one record in ``docs/results/<method>_<experiment>.json``,
and ``docs/results.md`` is regenerated.
Needs ``LEBM_DATA`` (the folder holding ``mnist/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
from pathlib import Path

import torch
from records import render_results_md, this_device

from lebm.recipes import resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def run_digit(recipe: str, digit: int, run_dir: Path, extra: list[str]) -> None:
    command = [
        "lebm",
        "fit",
        "-c",
        recipe,
        "--data.init_args.anomaly_classes",
        f"[{digit}]",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
        "--ckpt_path",
        "auto",  # a digit whose run was stopped (or trained for fewer epochs) goes on from its last checkpoint
        *extra,
    ]
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def auprc_history(run_dir: Path) -> list[float]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return list(checkpoint["callbacks"]["AnomalyDetection"]["history"])


def load_recipe(recipe: str) -> dict:
    """The recipe as ``lebm fit`` runs it (includes expanded, interpolations resolved)."""
    return resolve_recipe(REPO / recipe)


def last_k(config: dict, recipe: str) -> int:
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("AnomalyDetection"):
            return int(callback.get("init_args", {}).get("last_k", 10))
    raise ValueError(f"{recipe} has no AnomalyDetection callback")


def describe_budget(config: dict, max_epochs: int | None, k: int) -> str:
    net = config["model"]["init_args"]["decoder"]["init_args"]["net"]["init_args"]
    epochs = max_epochs or config["trainer"]["max_epochs"]
    batch = config["data"]["init_args"]["batch_size"]
    stages = config["model"]["init_args"]["prior"]["init_args"].get("n_stages")
    staged = f", {stages} stages" if stages else ""
    width = f"ngf {net['ngf']}" if "ngf" in net else f"widths {'-'.join(str(w) for w in net.get('widths', []))}"
    return f"{epochs} epochs{staged}, batch {batch}, {width}, mean of last {k} evaluations"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, nargs="+", default=[1, 9, 4, 5, 7])
    parser.add_argument("--recipe", default="recipes/latent_ebm/mnist_anomaly_offline.yaml")
    parser.add_argument("--experiment", default="mnist_anomaly_offline")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--output", default=None, help="default: docs/results/<method>_<experiment>.json")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    config = load_recipe(args.recipe)
    k = last_k(config, args.recipe)
    budget = describe_budget(config, args.max_epochs, k)
    name = Path(args.recipe).stem
    method = config["model"]["class_path"].rsplit(".", 1)[-1]
    output = Path(args.output or REPO / "docs" / "results" / f"{Path(args.recipe).parent.name}_{args.experiment}.json")
    for digit in args.digits:
        run_dir = REPO / "runs" / Path(args.recipe).parent.name / name / f"digit{digit}"
        run_digit(args.recipe, digit, run_dir, extra)
        recent = auprc_history(run_dir)[-k:]
        # read the records again now: several runners (different digits) may share the file
        records = json.loads(output.read_text()) if output.exists() else []
        records = [r for r in records if not (r["digit"] == digit and r["metric"] == "auprc")]
        records.append(
            {
                "method": method,
                "experiment": args.experiment,
                "metric": "auprc",
                "digit": digit,
                "value": round(statistics.fmean(recent), 4),
                "std": round(statistics.pstdev(recent), 4),
                "n_evaluations": len(recent),
                "auprc_by_epoch": [round(v, 4) for v in auprc_history(run_dir)],
                "budget": budget,
                "command": "LEBM_DATA=../shared/data "
                + shlex.join(
                    [
                        "python",
                        "experiments/mnist_anomaly_offline.py",
                        "--digits",
                        str(digit),
                        "--recipe",
                        args.recipe,
                        *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
                    ]
                ),
                "device": this_device(),
                "date": datetime.date.today().isoformat(),
            }
        )
        records.sort(key=lambda r: (r["metric"], r["digit"]))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(records, indent=2) + "\n")
        render_results_md()
        print(f"digit {digit}: AUPRC {statistics.fmean(recent):.4f} over {len(recent)} evaluations", flush=True)


if __name__ == "__main__":
    main()
