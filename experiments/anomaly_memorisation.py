"""How far the cited split's overlap can inflate the anomaly AUPRC: does a trained model score its
own training digits differently from normal digits it has never seen?

    python experiments/anomaly_memorisation.py RUN_DIR [RUN_DIR ...] [--examples N]

Under ``split: cited`` about 80% of the test split's normal digits are training digits. That can
raise the AUPRC only as far as the model scores its training digits as more typical than unseen
normal digits. For each run of ``experiments/mnist_anomaly_offline.py`` (either split), this loads
the newest ``last*.ckpt``, scores with ``model.score(x)`` (``-log p(x, z)``, the anomaly score)
``N`` training digits, the normal digits it never trained on, and its test split, and prints one
JSON object per run:

- ``seen_mean``, ``unseen_mean``: the mean score of ``N`` training and ``N`` unseen normal digits
  (lower = more typical);
- ``auroc_unseen_vs_seen``: the AUROC of the score telling unseen from seen normal digits. 0.5:
  no memorisation, the overlap cannot move the AUPRC; 1.0: every training digit scores below
  every unseen one;
- ``test_in_training``: the share of the test split that is training digits;
- ``auprc_test_split``: the AUPRC on the test split the run was scored on (one evaluation, the
  final model; the records average several);
- ``auprc_unseen_split``: the same model's AUPRC on every normal digit it never saw plus every
  held-out digit. For a ``cited`` run this is the disjoint test split of its own training draw: the
  difference to ``auprc_test_split`` is the overlap's inflation, with the model held fixed. For a
  ``disjoint`` run the two splits are the same digits.

Needs ``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from records import newest_last_checkpoint, with_progress
from sklearn.metrics import roc_auc_score

import lebm
from lebm.config import build
from lebm.data.datasets import ScaledImageSubset
from lebm.metrics.ranking import ranking_metrics


def scores(model, images: torch.Tensor, batch: int = 200) -> np.ndarray:
    """``model.score`` of ``images`` (N, C, H, W) in [-1, 1], in batches: (N,) float64."""
    parts = [model.score(images[start : start + batch]).detach().double() for start in range(0, len(images), batch)]
    return torch.cat(parts).numpy()


def images(pool, indices: list[int]) -> torch.Tensor:
    """The pool's images at ``indices`` as float32 (N, C, H, W) in [-1, 1]."""
    subset = ScaledImageSubset(pool, indices)
    return torch.stack([subset[i][0] for i in range(len(indices))])


def gap(run_dir: Path, examples: int, seed: int) -> dict:
    """The run's memorisation gap and, for the whole evaluation, its AUPRC on the test split it was
    scored on against the AUPRC on the unseen split (see the module docstring)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]
    data["init_args"]["val_fraction"] = 0.0
    module = build(data)
    module.setup("fit")
    held_out = module.anomaly_classes
    pool = module.test_dataset.source
    labels = pool.labels  # InMemoryImages: every digit of the pool
    train = set(module.train_dataset.indices.tolist())
    test = module.test_dataset.indices.tolist()
    anomalous = [i for i in range(len(labels)) if int(labels[i]) in held_out]
    unseen_normal = [i for i in range(len(labels)) if int(labels[i]) not in held_out and i not in train]
    generator = torch.Generator().manual_seed(seed)
    seen_sample = [sorted(train)[i] for i in torch.randperm(len(train), generator=generator)[:examples].tolist()]
    model = lebm.load(str(newest_last_checkpoint(run_dir)), map_location="cpu")
    torch.manual_seed(seed)
    every = sorted(set(test) | set(unseen_normal) | set(seen_sample))
    score_of = dict(zip(every, scores(model, images(pool, every)).tolist(), strict=True))
    seen = np.array([score_of[i] for i in seen_sample])
    unseen = np.array([score_of[i] for i in unseen_normal[:examples]])
    targets = np.concatenate([np.zeros(len(seen)), np.ones(len(unseen))])

    def auprc(indices: list[int]) -> float:
        values = np.array([score_of[i] for i in indices])
        truth = np.array([int(labels[i]) in held_out for i in indices], dtype=float)
        return round(ranking_metrics(values, truth)[0], 4)

    return {
        "run": str(run_dir),
        "method": type(model).__name__,
        "split": getattr(module, "split", "disjoint"),
        "held_out": held_out,
        "seen_mean": round(float(seen.mean()), 3),
        "unseen_mean": round(float(unseen.mean()), 3),
        "auroc_unseen_vs_seen": round(float(roc_auc_score(targets, np.concatenate([seen, unseen]))), 4),
        "test_in_training": round(sum(i in train for i in test) / len(test), 4),
        "auprc_test_split": auprc(test),
        "auprc_unseen_split": auprc(unseen_normal + anomalous),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    for run in with_progress(args.runs, "run"):
        print(json.dumps(gap(run, args.examples, args.seed)), flush=True)


if __name__ == "__main__":
    main()
