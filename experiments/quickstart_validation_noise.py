"""Where the quickstart's validation curve gets its zigzag: the model's epoch-to-epoch change and the
evaluation's own chain noise, measured.

    python experiments/quickstart_validation_noise.py [--run runs/quickstart_every_epoch] [--streams 8]

Trains the LatentEBM quickstart once, validating after every epoch (``lebm fit -c quickstart
--trainer.check_val_every_n_epoch 1`` into ``--run``), unless that folder already holds its
``metrics.csv`` and ``checkpoints/last.ckpt``. Validation draws from its own evaluation stream
(``lebm.randomness``), so validating every epoch trains the same weights as the recipe's every 10th
epoch, and the recipe's readings are every 10th of this curve. Prints JSON:

- ``plateau``: ``val/nll`` over the epochs from ``--plateau-from`` on: its mean and standard
  deviation, the deviation of its epoch-to-epoch change, and its autocorrelation at lags 1, 2, 10
  and 20 epochs (a slow oscillation would show at 10 or 20);
- ``every_10th``: for each of the ten ways to read every 10th epoch (the recipe's is phase 9,
  epochs 9, 19, ...), the readings after the first and how many of their consecutive changes
  reverse direction (a zigzag reverses every time);
- ``evaluation_noise``: the last checkpoint's ``val/nll`` read ``--streams`` times, each from
  another evaluation stream (same weights, other posterior-chain draws): the readings and their
  standard deviation, the part of the curve's spread that is the evaluation's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from records import EPOCH_LINES  # noqa: E402
from script import ScriptError, positive_int, run_lebm, run_main  # noqa: E402

METRIC = "val/nll"


def epoch_readings(metrics_csv: Path, metric: str = METRIC) -> dict[int, float]:
    """``{epoch: value}`` of ``metric`` in a run's ``metrics.csv``."""
    readings = {}
    with metrics_csv.open() as file:
        for row in csv.DictReader(file):
            if row.get(metric):
                readings[int(row["epoch"])] = float(row[metric])
    return readings


def autocorrelation(values: list[float], lag: int) -> float:
    """The correlation of ``values`` with themselves ``lag`` places later."""
    series = np.asarray(values, dtype=float)
    return float(np.corrcoef(series[:-lag], series[lag:])[0, 1])


def reversals(values: list[float]) -> int:
    """How many consecutive changes of ``values`` reverse the direction of the one before."""
    signs = [np.sign(b - a) for a, b in pairwise(values)]
    return sum(1 for a, b in pairwise(signs) if a * b < 0)


def plateau_summary(readings: dict[int, float], start: int) -> dict:
    """Spread and autocorrelation of the readings from epoch ``start`` on (see the module docstring)."""
    values = [readings[epoch] for epoch in sorted(readings) if epoch >= start]
    if len(values) < 2 * 20:
        raise ScriptError(
            f"{len(values)} readings from epoch {start} on: a lag of 20 needs 40 or more, 20 pairs (train longer)"
        )
    changes = [b - a for a, b in pairwise(values)]
    return {
        "epochs": f"{start}-{max(readings)}",
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2),
        "std_of_epoch_to_epoch_change": round(statistics.stdev(changes), 2),
        "autocorrelation": {str(lag): round(autocorrelation(values, lag), 2) for lag in (1, 2, 10, 20)},
    }


def every_10th(readings: dict[int, float]) -> list[dict]:
    """For each phase 0-9, the readings of epochs phase, phase + 10, ... after the first (the
    warm-up), and their direction reversals."""
    phases = []
    for phase in range(10):
        values = [readings[epoch] for epoch in sorted(readings) if epoch % 10 == phase][1:]
        phases.append(
            {
                "phase": phase,
                "readings": [round(v, 1) for v in values],
                "reversals": reversals(values),
                "of": max(len(values) - 2, 0),
            }
        )
    return phases


def evaluation_noise(run: Path, streams: int) -> dict:
    """The last checkpoint's ``val/nll`` read from ``streams`` evaluation streams."""
    import lightning as L
    import torch
    import yaml

    import lebm
    from lebm.config import build

    torch.set_num_threads(1)  # as the quickstart's CPUThreads gives its run
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = lebm.load(str(run / "checkpoints" / "last.ckpt"), map_location="cpu")
    values = []
    for stream in range(streams):
        model.random_streams.seed = 1000 + stream  # the evaluation stream derives from it
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, inference_mode=False
        )
        (result,) = trainer.validate(model, build(config["data"]), verbose=False)
        values.append(float(result[METRIC]))
    return {"readings": [round(v, 2) for v in values], "std": round(statistics.stdev(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "quickstart_every_epoch")
    parser.add_argument("--streams", type=positive_int, default=8)
    parser.add_argument("--plateau-from", type=positive_int, default=20, help="first epoch of the plateau")
    args = parser.parse_args()
    run = args.run.resolve()
    config = run / "config.yaml"
    if config.is_file():
        method = (yaml.safe_load(config.read_text()).get("model") or {}).get("class_path", "")
        if not method.endswith(".LatentEBM"):
            parser.error(
                f"{run} is a run of {method or 'no method'}: this script measures the LatentEBM quickstart's curve; "
                "give --run a folder of `lebm fit -c quickstart` (or a new one, which it trains)"
            )
    if not ((run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()):
        command = ["lebm", "fit", "-c", "quickstart", "--trainer.default_root_dir", str(run)]
        run_lebm([*command, "--trainer.check_val_every_n_epoch", "1", *EPOCH_LINES])
    readings = epoch_readings(run / "metrics.csv")
    summary = {
        "run": str(run),
        "metric": METRIC,
        "plateau": plateau_summary(readings, args.plateau_from),
        "every_10th": every_10th(readings),
        "evaluation_noise": evaluation_noise(run, args.streams),
    }
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    run_main(main)
