"""Train a text model on the offline PTB files, test it, and record FPPL, RPPL and NLL.

    LEBM_DATA=../shared/data python experiments/ptb_offline.py [--recipe R] [--max-epochs N]

Runs ``lebm fit -c R`` (default ``recipes/latent_ebm/ptb_offline.yaml``: trains on ptb.valid.txt)
and then ``lebm test`` on ptb.test.txt with a CSV logger; the test metrics of the recipe's
callbacks (``TextGenerationMetrics``: ``test/fppl``, ``test/rppl``; ``MarginalLikelihood``:
``test/nll_is`` and its standard error) become records ``fppl``, ``rppl``, ``nll`` in
``docs/results/latent_ebm_ptb_offline.json`` (method ``LatentEBM``, or ``LatentEBM, Gaussian
prior`` for ``ptb_offline_gaussian.yaml``), and ``docs/results.md`` is regenerated.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
from pathlib import Path

import torch
from records import EPOCH_LINES, render_results_md, stamped, this_device
from script import existing_file, positive_int, run_lebm, run_main

from lebm.cli.resolve import resolve_recipe

REPO = Path(__file__).resolve().parents[1]
METRICS = {"fppl": "test/fppl", "rppl": "test/rppl", "nll": "test/nll_is"}


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger ``metrics.csv``."""
    values: dict[str, float] = {}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            values.update({key: float(value) for key, value in row.items() if value not in ("", None)})
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=existing_file, default="recipes/latent_ebm/ptb_offline.yaml")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--output", default=str(REPO / "docs/results/latent_ebm_ptb_offline.json"))
    parser.add_argument(
        "--skip-fit", action="store_true", help="test the run's last end-of-epoch checkpoint without training"
    )
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds ptb/ (e.g. LEBM_DATA=../shared/data)")
    config = resolve_recipe(REPO / args.recipe)
    run_dir = REPO / "runs" / "latent_ebm" / Path(args.recipe).stem
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    progress = EPOCH_LINES
    fit = ["lebm", "fit", "-c", args.recipe, "--trainer.default_root_dir", str(run_dir), "--overwrite", "true"]
    csv_logger = json.dumps(
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir / "test")}}
    )
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    if args.skip_fit:  # the last completed epoch (a stopped fit may have saved last.ckpt inside an epoch)
        checkpoint = str(max((run_dir / "checkpoints").glob("epoch=*.ckpt"), key=lambda path: path.stat().st_mtime))
    test = ["lebm", "test", "-c", args.recipe, "--trainer.default_root_dir", str(run_dir), "--ckpt_path", checkpoint]
    test += ["--trainer.logger", csv_logger]
    for command in ([] if args.skip_fit else [fit + progress + extra]) + [test + progress]:
        print("+", shlex.join(command), flush=True)
        run_lebm(command)
    logged = last_values(max((run_dir / "test").rglob("metrics.csv"), key=lambda path: path.stat().st_mtime))
    prior = config["model"]["init_args"]["prior"]["class_path"].rsplit(".", 1)[-1]
    method = "LatentEBM" if prior != "GaussianPrior" else "LatentEBM, Gaussian prior"
    epochs = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] + 1  # epochs trained
    net = config["model"]["init_args"]["decoder"]["init_args"]["net"]["init_args"]
    budget = (
        f"{epochs} epochs on ptb.valid.txt, LSTM {net['embed_dim']}/{net['hidden_dim']}, "
        f"batch {config['data']['init_args']['batch_size']}"
    )
    output = Path(args.output)
    records = [r for r in (json.loads(output.read_text()) if output.exists() else []) if r["method"] != method]
    for metric, key in METRICS.items():
        record = {
            "method": method,
            "experiment": "ptb_offline",
            "metric": metric,
            "value": round(logged[key], 2),
            "budget": budget,
            "command": "LEBM_DATA=../shared/data "
            + shlex.join(["python", "experiments/ptb_offline.py", "--recipe", args.recipe, *extra]),
            "device": this_device(),
            "date": datetime.date.today().isoformat(),
        }
        if metric in ("fppl", "rppl"):  # a tiny fraction flags a collapsed (repeated) sample set
            record["distinct_sentences"] = round(logged["test/distinct_sentences"], 4)
        if metric == "nll":
            record["std"] = round(logged["test/nll_is_stderr"], 2)
            record["nll_per_word"] = round(logged["test/nll_is_per_word"], 4)
            record["ppl"] = round(logged["test/ppl_is"], 2)
        records.append(record)
    output.write_text(json.dumps([stamped(r) for r in records], indent=1) + "\n")
    render_results_md()
    print(json.dumps([r for r in records if r["method"] == method], indent=1))


if __name__ == "__main__":
    run_main(main)
