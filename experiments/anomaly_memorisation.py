"""How far the cited split's overlap can inflate the anomaly AUPRC: does a trained model score its
own training digits differently from normal digits it has never seen?

    python experiments/anomaly_memorisation.py RUN_DIR [RUN_DIR ...] [--examples N]
        [--checkpoints GLOB ...] [--overlap 0.8] [--draws 20] [--record SETTING [--output FILE]]

Under ``split: cited`` about 80% of the test split's normal digits are training digits. That can
raise the AUPRC only as far as the model scores its training digits as more typical than unseen
normal digits. For each run of ``experiments/mnist_anomaly_offline.py`` (either split), this loads
the newest ``last*.ckpt`` (or, with ``--checkpoints 'kept-*.ckpt' ...``, every checkpoint of the
run's ``checkpoints/`` folder that matches one of the globs, oldest first), scores with
``model.score(x)`` (``-log p(x, z)``, the anomaly score) up to ``N`` training digits, the normal
digits it never trained on, and its test split, and prints one JSON object per run and checkpoint:

- ``checkpoint``, ``epochs``, ``updates``: the checkpoint read, the epochs it completed and its
  optimiser updates (Lightning's ``global_step``);
- ``seen_mean``, ``unseen_mean``: the mean score of ``N`` training and ``N`` unseen normal digits,
  seeded draws of each (lower = more typical);
- ``auroc_unseen_vs_seen``: the AUROC of the score telling unseen from seen normal digits. 0.5:
  no memorisation, the overlap cannot move the AUPRC; 1.0: every training digit scores below
  every unseen one;
- ``test_in_training``: the share of the test split that is training digits;
- ``auprc_test_split``: the AUPRC on the test split the run was scored on (one evaluation, the
  final model; the records average several);
- ``auprc_unseen_split``: the same model's AUPRC on normal digits it never saw (as many as the
  test split has normal digits, those of the test split first) plus every held-out digit. For a
  ``cited`` run this is the disjoint test split of its own training draw: the difference to
  ``auprc_test_split`` is the overlap's inflation, with the model held fixed. For a ``disjoint``
  run the two splits are the same digits;
- ``inflation_at_overlap`` (with ``inflation_at_overlap_std`` over ``--draws`` seeded draws): the
  inflation the cited overlap would give this model, for either split. Each draw builds a test
  split whose normal digits are ``--overlap`` (0.8, the cited loader's) training digits and the
  rest unseen, in the test split's proportions (as many normal and held-out digits as it has; a
  pool with fewer training digits than that scales every count down alike), and the same split
  with unseen digits in place of the training digits; the field is the mean AUPRC difference
  (``auprc_overlap_draw`` minus ``auprc_unseen_draw``). ``overlap_draw_counts`` gives the counts.

``--record SETTING`` also writes each object as a record (``metric: auprc_overlap_inflation``,
``cause: protocol``, value: ``inflation_at_overlap``) into ``--output`` (default
``docs/results/<method folder>_mnist_anomaly_gap.json``) and regenerates ``docs/results.md``.
Needs ``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from mnist_anomaly_offline import save_record
from records import newest_last_checkpoint, render_results_md, this_device, with_progress
from script import existing_folder, run_main
from sklearn.metrics import roc_auc_score

import lebm
from lebm.config import build
from lebm.data.datasets import ScaledImageSubset
from lebm.metrics.ranking import ranking_metrics

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "mnist_anomaly_gap"


def scores(model, images: torch.Tensor, batch: int = 200) -> np.ndarray:
    """``model.score`` of ``images`` (N, C, H, W) in [-1, 1], in batches: (N,) float64."""
    parts = [model.score(images[start : start + batch]).detach().double() for start in range(0, len(images), batch)]
    return torch.cat(parts).numpy()


def images(pool, indices: list[int]) -> torch.Tensor:
    """The pool's images at ``indices`` as float32 (N, C, H, W) in [-1, 1]."""
    subset = ScaledImageSubset(pool, indices)
    return torch.stack([subset[i][0] for i in range(len(indices))])


@dataclass
class Digits:
    """A run's digits, as indices into its pool: what it trained on and what it never saw."""

    pool: object
    labels: torch.Tensor
    held_out: list[int]
    split: str
    train: list[int]  # sorted
    test: list[int]
    anomalous: list[int]
    unseen_normal: list[int]  # as many as the test split's normal digits, those of the test split first
    test_normal: int  # how many normal digits the test split has


def run_digits(run_dir: Path) -> Digits:
    """The digits of the run in ``run_dir``, from its ``config.yaml``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]
    data["init_args"].update(validate_on="test", val_fraction=0)  # the whole test split, as the protocol reads it
    module = build(data)
    module.setup("fit")
    held_out = module.anomaly_classes
    labels = module.test_dataset.source.labels  # InMemoryImages: every digit of the pool
    train = sorted(module.train_dataset.indices.tolist())
    seen, test = set(train), module.test_dataset.indices.tolist()
    test_normal = [i for i in test if int(labels[i]) not in held_out]
    unseen_in_test = [i for i in test_normal if i not in seen]
    taken = set(unseen_in_test)
    others = [i for i in range(len(labels)) if int(labels[i]) not in held_out and i not in seen and i not in taken]
    generator = torch.Generator().manual_seed(0)
    others = [others[i] for i in torch.randperm(len(others), generator=generator).tolist()]
    unseen = sorted(unseen_in_test + others[: max(0, len(test_normal) - len(unseen_in_test))])
    return Digits(
        pool=module.test_dataset.source,
        labels=labels,
        held_out=held_out,
        split=getattr(module, "split", "disjoint"),
        train=train,
        test=test,
        anomalous=[i for i in range(len(labels)) if int(labels[i]) in held_out],
        unseen_normal=unseen,
        test_normal=len(test_normal),
    )


def draw_counts(digits: Digits, overlap: float) -> dict[str, int]:
    """Seen, unseen and held-out digits of one overlap draw: the test split's counts, with
    ``overlap`` of its normal digits training digits, scaled down alike when the run has fewer
    training digits than that."""
    seen = round(overlap * digits.test_normal)
    scale = min(1.0, len(digits.train) / seen) if seen else 1.0
    return {
        "seen": round(seen * scale),
        "unseen": round((digits.test_normal - seen) * scale),
        "anomalous": round(len(digits.anomalous) * scale),
    }


def gap(digits: Digits, checkpoint: Path, examples: int, seed: int, overlap: float, draws: int) -> dict:
    """The memorisation gap of the model in ``checkpoint`` and, for the whole evaluation, its AUPRC
    on the test split it was scored on against the AUPRC on unseen digits (see the module docstring)."""
    labels, held_out, train = digits.labels, digits.held_out, digits.train
    counts = draw_counts(digits, overlap)
    generator = torch.Generator().manual_seed(seed)
    seen_pool = [train[i] for i in torch.randperm(len(train), generator=generator)[: max(examples, counts["seen"])]]
    seen_sample = seen_pool[:examples]
    model = lebm.load(str(checkpoint), map_location="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.manual_seed(seed)
    every = sorted(set(digits.test) | set(digits.unseen_normal) | set(seen_pool))
    score_of = dict(zip(every, scores(model, images(digits.pool, every)).tolist(), strict=True))
    # a seeded draw, not the first N by index: the pool lists MNIST's test digits before its training digits
    order = torch.randperm(len(digits.unseen_normal), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    seen = np.array([score_of[i] for i in seen_sample])
    unseen = np.array([score_of[digits.unseen_normal[i]] for i in order[:examples]])
    targets = np.concatenate([np.zeros(len(seen)), np.ones(len(unseen))])

    def auprc(indices: list[int]) -> float:
        values = np.array([score_of[i] for i in indices])
        truth = np.array([int(labels[i]) in held_out for i in indices], dtype=float)
        return ranking_metrics(values, truth)[0]

    overlapping, unseen_only = [], []
    for _ in range(draws):
        pick_seen = torch.randperm(len(seen_pool), generator=generator)[: counts["seen"]].tolist()
        pick_unseen = torch.randperm(len(digits.unseen_normal), generator=generator).tolist()
        pick_anomalous = torch.randperm(len(digits.anomalous), generator=generator)[: counts["anomalous"]].tolist()
        anomalous = [digits.anomalous[i] for i in pick_anomalous]
        unseen_order = [digits.unseen_normal[i] for i in pick_unseen]
        overlapping.append(auprc([seen_pool[i] for i in pick_seen] + unseen_order[: counts["unseen"]] + anomalous))
        unseen_only.append(auprc(unseen_order[: counts["seen"] + counts["unseen"]] + anomalous))
    inflation = np.array(overlapping) - np.array(unseen_only)
    return {
        "checkpoint": str(checkpoint),
        "epochs": int(state["epoch"]) + 1,
        "updates": int(state["global_step"]),
        "method": type(model).__name__,
        "split": digits.split,
        "held_out": held_out,
        "training_digits": len(train),
        "seen_mean": round(float(seen.mean()), 3),
        "unseen_mean": round(float(unseen.mean()), 3),
        "auroc_unseen_vs_seen": round(float(roc_auc_score(targets, np.concatenate([seen, unseen]))), 4),
        "test_in_training": round(len(set(digits.test) & set(train)) / len(digits.test), 4),
        "auprc_test_split": round(auprc(digits.test), 4),
        "auprc_unseen_split": round(auprc(digits.unseen_normal + digits.anomalous), 4),
        "overlap": overlap,
        "overlap_draw_counts": counts,
        "draws": draws,
        "auprc_overlap_draw": round(float(np.mean(overlapping)), 4),
        "auprc_unseen_draw": round(float(np.mean(unseen_only)), 4),
        "inflation_at_overlap": round(float(inflation.mean()), 4),
        "inflation_at_overlap_std": round(float(inflation.std()), 4),
    }


def checkpoints_of(run_dir: Path, patterns: list[str] | None) -> list[Path]:
    """The run's checkpoints to read: those matching any of ``patterns`` in ``checkpoints/`` (by
    their modification time, oldest first), or its newest ``last*.ckpt``."""
    if not patterns:
        return [newest_last_checkpoint(run_dir)]
    found = {path for pattern in patterns for path in (run_dir / "checkpoints").glob(pattern)}
    if not found:
        raise SystemExit(f"no checkpoint matches {' '.join(patterns)} in {run_dir / 'checkpoints'}")
    return sorted(found, key=lambda path: path.stat().st_mtime)


def count(result: dict) -> str:
    """The training a checkpoint holds: its epochs, or its updates when it stopped inside an epoch
    (a run with ``max_steps``, whose epoch count would round up)."""
    config = yaml.safe_load((Path(result["checkpoint"]).parents[1] / "config.yaml").read_text())
    if (config["trainer"].get("max_steps") or -1) > 0:
        return f"{result['updates']} updates"
    return f"{result['epochs']} epochs"


def record_of(result: dict, setting: str) -> dict:
    """The record of one ``gap`` result (a run's checkpoint) under ``setting``."""
    return {
        "method": result["method"],
        "experiment": EXPERIMENT,
        "metric": "auprc_overlap_inflation",
        "digit": result["held_out"][0],
        "setting": f"{setting}, {count(result)}",
        "cause": "protocol",
        "value": result["inflation_at_overlap"],
        "std": result["inflation_at_overlap_std"],
        "auprc_overlap_split": result["auprc_overlap_draw"],
        "auprc_unseen_split": result["auprc_unseen_draw"],
        "memorisation_auroc": result["auroc_unseen_vs_seen"],
        "overlap": result["overlap"],
        "overlap_draw_counts": result["overlap_draw_counts"],
        "draws": result["draws"],
        "training_digits": result["training_digits"],
        "epochs": result["epochs"],
        "updates": result["updates"],
        "split": f"{result['overlap']:g} of the normal test digits training digits against none, model fixed",
        "data_split": result["split"],
        "budget": f"no training: {Path(result['checkpoint']).relative_to(REPO)} "
        f"({result['epochs']} epochs, {result['updates']} updates)",
        "command": "LEBM_DATA=../shared/data "
        + shlex.join(["python", "experiments/anomaly_memorisation.py", *sys.argv[1:]]),
        "device": this_device(),
        "date": datetime.date.today().isoformat(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=existing_folder)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", nargs="+", default=None, help="globs in checkpoints/, e.g. 'kept-*.ckpt'")
    parser.add_argument("--overlap", type=float, default=0.8, help="share of normal test digits seen in training")
    parser.add_argument("--draws", type=int, default=20, help="seeded draws of the overlap's test split")
    parser.add_argument("--record", metavar="SETTING", default=None, help="write records under this setting name")
    parser.add_argument("--output", default=None, help="default: docs/results/<method folder>_mnist_anomaly_gap.json")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    work = [(run.resolve(), ckpt) for run in args.runs for ckpt in checkpoints_of(run.resolve(), args.checkpoints)]
    digits: dict[Path, Digits] = {}
    for run, checkpoint in with_progress(work, "checkpoint"):
        if run not in digits:
            digits[run] = run_digits(run)
        result = gap(digits[run], checkpoint, args.examples, args.seed, args.overlap, args.draws)
        print(json.dumps(result), flush=True)
        if args.record is not None:
            folder = run.relative_to(REPO / "runs").parts[0]
            output = Path(args.output or REPO / "docs" / "results" / f"{folder}_{EXPERIMENT}.json")
            record = record_of(result, args.record)
            save_record(output, record, lambda r: (r["digit"], r["metric"], r.get("setting"), r.get("data_split")))
    if args.record is not None:
        render_results_md()


if __name__ == "__main__":
    run_main(main)
