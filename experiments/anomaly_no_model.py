"""The no-model baseline of every MNIST anomaly split a result was read on: what a score with no
model reads, to read each model's AUPRC against.

    LEBM_DATA=../shared/data python experiments/anomaly_no_model.py [--digits 1 4 5 7 9] [--pools full offline]

For each pool and held-out digit, the protocol's splits are drawn as the recipes draw them
(``MNISTAnomalyDataModule``, seed 1, disjoint): the whole evaluation pool (what the papers test on,
and what runs with ``validate_on: test`` validated on), and the default validation and test splits
(20% of the evaluation pool for validation). Each split is scored by the three no-model scores of
:mod:`lebm.metrics.no_model` (the squared distance to mid-grey, 0, standing for the untrained
generator's level; to the background, -1; to the mean training image); the record's ``value`` is
the highest AUPRC,
``best`` names its score, and every score's AUPRC and AUROC are kept. No model is trained: the
numbers depend on the split alone. A run's own reading uses its generator's measured level instead
(lebm's generators start between -0.1 and 0.2); on held-out 1 the reading holds from 0.98 at 0
to 0.93 at 0.5 and falls off below 0 (0.88 at -0.05, 0.54 at -0.1, offline pool).
Records go to ``docs/results/no_model_mnist_anomaly_no_model.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
from pathlib import Path

import numpy as np
import torch
from mnist_anomaly_offline import save_record
from records import render_results_md, this_device
from script import run_main

from lebm.data import MNISTAnomalyDataModule
from lebm.metrics.no_model import mean_image, no_model_baseline, no_model_scores

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "mnist_anomaly_no_model"
#: The splits read: the whole evaluation pool (the papers' test split) and the default two.
SPLITS = {
    "evaluation pool (the papers' test split)": ("test", "test"),
    "validation split (20% of the evaluation pool)": ("val", "val"),
    "test split (the other 80%)": ("val", "test"),
}


def split_reading(module: MNISTAnomalyDataModule, which: str, mean: torch.Tensor) -> dict:
    """The no-model baseline of ``module``'s ``which`` split (``val`` or ``test``)."""
    dataset = module.val_dataset if which == "val" else module.test_dataset
    labels = module.val_labels if which == "val" else module.test_labels
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    scores = {name: values.numpy() for name, values in no_model_scores(images, mean).items()}
    targets = np.isin(labels.numpy(), module.anomaly_classes).astype(float)
    baseline = no_model_baseline(scores, targets)
    return {
        "value": round(baseline.auprc, 4),
        "auroc": round(baseline.auroc, 4),
        "chance": round(float(targets.mean()), 4),
        "best": baseline.name,
        "scores": {n: {"auprc": round(p, 4), "auroc": round(r, 4)} for n, (p, r) in baseline.readings.items()},
        "n_examples": int(targets.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, nargs="+", default=[1, 4, 5, 7, 9])
    parser.add_argument("--pools", nargs="+", choices=("full", "offline"), default=["full", "offline"])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "results" / f"no_model_{EXPERIMENT}.json")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    root = os.path.join(os.environ["LEBM_DATA"], "mnist")
    for pool in args.pools:
        for digit in args.digits:
            for name, (validate_on, which) in SPLITS.items():
                module = MNISTAnomalyDataModule(root, anomaly_classes=[digit], pool=pool, validate_on=validate_on)
                module.setup("fit")
                reading = split_reading(module, which, mean_image(module.train_dataset))
                record = {
                    "method": "no model",
                    "experiment": EXPERIMENT,
                    "metric": "auprc",
                    "digit": digit,
                    "setting": name,
                    "pool": pool,
                    **reading,
                    "budget": f"no training: {pool} pool, seed 1, the split alone",
                    "command": "LEBM_DATA=../shared/data "
                    + shlex.join(
                        ["python", "experiments/anomaly_no_model.py", "--digits", str(digit), "--pools", pool]
                    ),
                    "device": this_device(),
                    "date": datetime.date.today().isoformat(),
                }
                print(
                    f"{pool} held-out {digit}, {name}: {reading['value']} ({reading['best']}), "
                    f"chance {reading['chance']}",
                    flush=True,
                )
                save_record(args.output, record, lambda r: (r["digit"], r["pool"], r["setting"]))
    render_results_md()


if __name__ == "__main__":
    run_main(main)
