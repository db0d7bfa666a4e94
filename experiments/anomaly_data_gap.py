"""The data part of the MNIST anomaly gap: the full 70,000-digit pool against the 15,000-digit offline
pool, same recipe, seed and number of updates.

    python experiments/anomaly_data_gap.py --method-folder latent_ebm --digit 1

Reads two records of ``experiments/mnist_anomaly_offline.py`` on the disjoint split: the offline
pool's (``docs/results/<folder>_mnist_anomaly_offline.json``, evaluated after every epoch) and the
full pool's (``docs/results/<folder>_mnist_anomaly_full.json``, run with ``--pool full --max-steps
U --val-every-steps V``, whose ``evaluation_updates`` say when it evaluated). An offline epoch is
``training digits // batch`` updates (read from the offline datamodule), so the two runs'
evaluations meet at the updates both evaluated at; each pair is one point of the comparison. The
record (``experiment: mnist_anomaly_gap``, ``cause: data``, ``value``: the full pool's AUPRC
averaged over the common evaluations, ``offline_value`` the offline pool's, ``gap`` their
difference) goes to ``docs/results/<folder>_mnist_anomaly_gap.json``, and ``docs/results.md`` is
regenerated. Needs ``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

from mnist_anomaly_offline import load_recipe, save_record
from records import render_results_md
from script import ScriptError, run_main

from lebm.config import build

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


def disjoint_record(path: Path, digit: int) -> dict:
    """The record of ``digit`` on the disjoint split, without a setting, in ``path``."""
    for record in json.loads(path.read_text()):
        if (
            record["digit"] == digit
            and not record.get("setting")
            and record.get("data_split", "disjoint") == "disjoint"
        ):
            return record
    raise ScriptError(f"no disjoint-split record of digit {digit} in {path}: run experiments/mnist_anomaly_offline.py")


def run_identity(record: dict, default_recipe: str) -> tuple[str, str]:
    """``(recipe, seed)`` of the run a record read, from its command: ``--recipe`` (else the
    runner's default) and any seed given on it (else the recipe's own)."""
    words = shlex.split(record.get("command", ""))
    recipe, seed = default_recipe, "the recipe's"
    for index, word in enumerate(words[:-1]):
        if word == "--recipe":
            recipe = words[index + 1]
        elif word in ("--seed", "--seed_everything", "--set") and "seed" in (word + words[index + 1]):
            seed = words[index + 1].rpartition("=")[2]
    return recipe, seed


def check_same_run_settings(full: dict, offline: dict, default_recipe: str) -> str:
    """The recipe both records ran; a ``ScriptError`` naming the difference when the two records
    are not of the same recipe and seed (a pair of another seed or recipe is no data gap)."""
    full_run, offline_run = run_identity(full, default_recipe), run_identity(offline, default_recipe)
    if full_run != offline_run:
        raise ScriptError(
            f"the full pool's record ran recipe {full_run[0]} with seed {full_run[1]}, the offline pool's "
            f"{offline_run[0]} with seed {offline_run[1]}: the data gap needs the same recipe and seed on both "
            "pools; run experiments/mnist_anomaly_offline.py again for one of them"
        )
    return full_run[0]


def updates_per_epoch(recipe: str, digit: int, pool: str) -> tuple[int, int]:
    """Updates per epoch of ``recipe`` on ``pool`` with ``digit`` held out, and its training digits."""
    print(f"reading the {pool} pool's split for held-out {digit}", flush=True)
    data = copy.deepcopy(load_recipe(recipe)["data"])
    data["init_args"].update(anomaly_classes=[digit], pool=pool)
    module = build(data)
    module.setup("fit")
    return len(module.train_dataset) // module.batch_size, len(module.train_dataset)


def common_points(
    full: dict, every: int, offline: dict, per_epoch: int
) -> list[tuple[int, float, float, float, float]]:
    """``(updates, full AUPRC, offline AUPRC, full prior-term AUPRC, offline prior-term AUPRC)`` at
    each update count where both runs evaluated (the ``full`` record's run every ``every`` updates,
    the ``offline`` record's after every epoch of ``per_epoch`` updates)."""
    points = []
    full_prior, offline_prior = (r["term_auprc_by_epoch"]["prior_term"] for r in (full, offline))
    for i, full_value in enumerate(full["auprc_by_epoch"]):
        updates = every * (i + 1)
        epoch = updates // per_epoch
        if updates % per_epoch == 0 and epoch <= len(offline["auprc_by_epoch"]):
            points.append(
                (updates, full_value, offline["auprc_by_epoch"][epoch - 1], full_prior[i], offline_prior[epoch - 1])
            )
    return points


def pool_means(points: list[tuple[int, float, float, float, float]]) -> dict[str, float]:
    """The record's figures from ``common_points``: ``value`` (the full pool's AUPRC averaged over
    the common evaluations), ``offline_value`` (the offline pool's) and ``gap`` = value -
    offline_value, positive where the full pool's data helps."""
    full_value = round(statistics.fmean(p[1] for p in points), 4)
    offline_value = round(statistics.fmean(p[2] for p in points), 4)
    return {"value": full_value, "offline_value": offline_value, "gap": round(full_value - offline_value, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method-folder", required=True, help="latent_ebm, hierarchical or damc")
    parser.add_argument("--digit", type=int, default=1)
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    folder = args.method_folder
    full = disjoint_record(RESULTS / f"{folder}_mnist_anomaly_full.json", args.digit)
    offline = disjoint_record(RESULTS / f"{folder}_mnist_anomaly_offline.json", args.digit)
    recipe = check_same_run_settings(full, offline, f"recipes/{folder}/mnist_anomaly_offline.yaml")
    per_epoch, offline_digits = updates_per_epoch(recipe, args.digit, "offline")
    _, full_digits = updates_per_epoch(recipe, args.digit, "full")
    every = full["evaluation_updates"][0]
    points = common_points(full, every, offline, per_epoch)
    if not points:
        raise SystemExit(
            f"the runs evaluated at no common update count (full: every {every}, offline: every {per_epoch})"
        )
    means = pool_means(points)
    record = {
        "method": full["method"],
        "experiment": "mnist_anomaly_gap",
        "metric": "auprc",
        "digit": args.digit,
        "setting": f"data gap: full pool (70k) against offline pool (15k), {points[-1][0]} updates",
        "cause": "data",
        **means,
        "pools": {"full": "all 70,000 MNIST digits", "offline": "15,000 digits (10k test IDX + 5k CSV)"},
        "training_digits": {"full": full_digits, "offline": offline_digits},
        "updates": [p[0] for p in points],
        "auprc_full_by_update": [p[1] for p in points],
        "auprc_offline_by_update": [p[2] for p in points],
        "auprc_prior_term_full_by_update": [p[3] for p in points],
        "auprc_prior_term_offline_by_update": [p[4] for p in points],
        "split": "test (the protocol)",
        "data_split": "disjoint",
        "budget": f"{points[-1][0]} updates on each pool, {recipe}, the same seed; mean of the evaluations "
        f"at {', '.join(str(p[0]) for p in points)} updates",
        "copied_from": f"docs/results/{folder}_mnist_anomaly_full.json and {folder}_mnist_anomaly_offline.json "
        f"(digit {args.digit}, disjoint split)",
        "command": "LEBM_DATA=../shared/data "
        + shlex.join(["python", "experiments/anomaly_data_gap.py", *sys.argv[1:]]),
        "device": full["device"],
        "date": datetime.date.today().isoformat(),
    }
    save_record(
        RESULTS / f"{folder}_mnist_anomaly_gap.json", record, lambda r: (r["digit"], r["metric"], r.get("setting"))
    )
    render_results_md()
    print(json.dumps({k: record[k] for k in ("method", "value", "offline_value", "gap", "updates")}), flush=True)


if __name__ == "__main__":
    run_main(main)
