"""How far the cited split's overlap can inflate the anomaly AUPRC: does a trained model score its
own training digits differently from normal digits it has never seen?

    python experiments/anomaly_memorisation.py RUN_DIR [RUN_DIR ...] [--examples N]

Under ``split: cited`` about 80% of the test split's normal digits are training digits. That can
raise the AUPRC only as far as the model scores its training digits as more typical than unseen
normal digits. For each run of ``experiments/mnist_anomaly_offline.py`` (a ``disjoint`` run: its
test split holds no training digit), this loads the newest ``last*.ckpt``, scores ``N`` training
digits and ``N`` normal test digits with ``model.score(x)`` (``-log p(x, z)``, the anomaly score),
and prints one JSON object per run:

- ``seen_mean``, ``unseen_mean``: the mean score of each group (lower = more typical);
- ``auroc_unseen_vs_seen``: the AUROC of the score telling unseen from seen normal digits. 0.5:
  no memorisation, the overlap cannot move the AUPRC; 1.0: every training digit scores below
  every unseen one, the overlap makes the normal test digits look more typical than they are;
- ``held_out_mean``: the held-out digits' mean score, for scale.

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
from records import newest_last_checkpoint
from sklearn.metrics import roc_auc_score

import lebm
from lebm.config import build


def scores(model, images: torch.Tensor, batch: int = 200) -> np.ndarray:
    """``model.score`` of ``images`` (N, C, H, W) in [-1, 1], in batches: (N,) float64."""
    parts = [model.score(images[start : start + batch]).detach().double() for start in range(0, len(images), batch)]
    return torch.cat(parts).numpy()


def gap(run_dir: Path, examples: int, seed: int) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]
    data["init_args"]["val_fraction"] = 0.0
    module = build(data)
    module.setup("fit")
    if getattr(module, "split", "disjoint") != "disjoint":
        raise SystemExit(f"{run_dir}: a disjoint run is needed (its test split holds no training digit)")
    held_out = module.anomaly_classes
    generator = torch.Generator().manual_seed(seed)
    train = module.train_dataset
    seen = torch.stack([train[int(i)][0] for i in torch.randperm(len(train), generator=generator)[:examples]])
    test_labels = module.test_labels
    normal = [
        i for i in torch.randperm(len(test_labels), generator=generator).tolist() if test_labels[i] not in held_out
    ]
    anomalous = [i for i in range(len(test_labels)) if test_labels[i] in held_out][:examples]
    unseen = torch.stack([module.test_dataset[i][0] for i in normal[:examples]])
    odd = torch.stack([module.test_dataset[i][0] for i in anomalous])
    model = lebm.load(str(newest_last_checkpoint(run_dir)), map_location="cpu")
    torch.manual_seed(seed)
    seen_scores, unseen_scores, odd_scores = scores(model, seen), scores(model, unseen), scores(model, odd)
    targets = np.concatenate([np.zeros(len(seen_scores)), np.ones(len(unseen_scores))])
    return {
        "run": str(run_dir),
        "method": type(model).__name__,
        "held_out": held_out,
        "examples": examples,
        "seen_mean": round(float(seen_scores.mean()), 3),
        "unseen_mean": round(float(unseen_scores.mean()), 3),
        "held_out_mean": round(float(odd_scores.mean()), 3),
        "auroc_unseen_vs_seen": round(float(roc_auc_score(targets, np.concatenate([seen_scores, unseen_scores]))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    for run in args.runs:
        print(json.dumps(gap(run, args.examples, args.seed)), flush=True)


if __name__ == "__main__":
    main()
