"""Run the digits quickstart of each method and record what it achieves.

    python experiments/quickstart_digits.py [--recipes recipes/quickstart.yaml recipes/multistage_nce/quickstart.yaml]

For each recipe: ``lebm fit -c R`` in ``runs/<recipe parent>/quickstart_record``, timed, then from its
last checkpoint three numbers become records in ``docs/results/<recipe parent>_quickstart_digits.json``
(the recipe's parent folder is ``recipes`` for the LatentEBM quickstart, named ``latent_ebm``), and
``docs/results.md`` is regenerated:

- ``test_mse``: per-pixel MSE of posterior reconstructions of the held-out test digits;
- ``pixel_fd``: Fréchet distance between 1,437 prior samples and the 1,437 training digits in
  raw 64-pixel space (lower is better; a cheap sample-quality proxy for 8x8 images);
- ``fit_minutes``: wall-clock minutes of ``lebm fit`` on this machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy import linalg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from records import EPOCH_LINES, render_results_md, stamped, this_device  # noqa: E402
from script import run_lebm, run_main  # noqa: E402

from lebm.callbacks import ReconstructionMSE  # noqa: E402
from lebm.cli.resolve import resolve_recipe  # noqa: E402
from lebm.config import build, import_object  # noqa: E402
from lebm.models.base import batch_observations  # noqa: E402

EXPERIMENT = "quickstart_digits"


def method_folder(recipe: str) -> str:
    parent = Path(recipe).parent.name
    return "latent_ebm" if parent == "recipes" else parent


def fit(recipe: str, run_dir: Path) -> float:
    command = [
        "lebm",
        "fit",
        "-c",
        recipe,
        "--trainer.default_root_dir",
        str(run_dir),
        *EPOCH_LINES,
    ]
    print("+", shlex.join(command), flush=True)
    start = time.perf_counter()
    run_lebm(command)
    return (time.perf_counter() - start) / 60


def pixel_stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    flat = images.flatten(1).double().numpy()
    return flat.mean(0), np.cov(flat, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between two Gaussian fits (here of pixel vectors, not Inception features)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))


def evaluate(recipe: str, run_dir: Path) -> dict[str, float]:
    config = resolve_recipe(REPO / recipe)
    method = import_object(config["model"]["class_path"])
    model = method.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    data = build(config["data"])
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[ReconstructionMSE()],
    )
    (metrics,) = trainer.test(model, data, verbose=False)
    data.setup("fit")
    training_digits = torch.cat([batch_observations(b) for b in data.train_dataloader()])
    samples = model.generate(len(training_digits)).cpu()
    return {
        "test_mse": float(metrics["test/mse"]),
        "pixel_fd": frechet_distance(*pixel_stats(samples), *pixel_stats(training_digits)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipes", nargs="+", default=["recipes/quickstart.yaml", "recipes/multistage_nce/quickstart.yaml"]
    )
    args = parser.parse_args()
    for recipe in args.recipes:
        folder = method_folder(recipe)
        run_dir = REPO / "runs" / folder / "quickstart_record"
        minutes = fit(recipe, run_dir)
        values = {**evaluate(recipe, run_dir), "fit_minutes": minutes}
        config = resolve_recipe(REPO / recipe)
        method = config["model"]["class_path"].rsplit(".", 1)[-1]
        budget = f"{config['trainer']['max_epochs']} epochs, batch {config['data']['init_args']['batch_size']}"
        records = [
            {
                "method": method,
                "experiment": EXPERIMENT,
                "metric": metric,
                "value": round(value, 4),
                "budget": budget,
                "command": shlex.join(["python", "experiments/quickstart_digits.py", "--recipes", recipe]),
                "device": this_device(),
                "date": datetime.date.today().isoformat(),
            }
            for metric, value in values.items()
        ]
        output = REPO / "docs" / "results" / f"{folder}_{EXPERIMENT}.json"
        output.write_text(json.dumps([stamped(r) for r in records], indent=2) + "\n")
        print(f"{recipe}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
    render_results_md()


if __name__ == "__main__":
    run_main(main)
