"""The papers' selections against the honest one, measured: train an MNIST anomaly recipe on all
70,000 digits keeping a checkpoint every few updates, then score each checkpoint on the validation
and the test split.

    LEBM_DATA=../shared/data python experiments/anomaly_selections.py \\
        --recipe recipes/latent_ebm/mnist_anomaly_offline.yaml --digit 4 --seed 1 --max-steps 1200 --every 100

The fit: ``lebm fit -c RECIPE -c recipes/evaluation/checkpoints_every_<EVERY>.yaml`` on the full pool
(``--data.init_args.pool full``), held-out ``DIGIT``, ``seed_everything SEED``, ``MAX_STEPS`` updates,
validating on the recipe's validation split (20% of the evaluation pool, disjoint from the test
split), in ``runs/<method>/mnist_anomaly_selections/digit<D>-seed<S>`` (``--ckpt_path auto``: a
stopped run goes on). Then ``experiments/anomaly_protocols.py`` scores every kept checkpoint on a
seeded draw of ``--max-examples`` examples of each split and records, against chance and the
no-model baseline: the best of the N test readings (DAMC's code's selection), the mean of the last
test readings (LEBM's "last 10 epochs"), the last checkpoint and the validation-selected one, in
``docs/results/<method>_mnist_anomaly_selections.json`` (one record per digit and seed).
``EVERY`` is 50, 100, 500 or 1000 (the fragments there are). Needs ``LEBM_DATA``.

For a long budget in parts (a lent GPU's calls): ``--stage fit`` trains only (stopped by SIGTERM, it
keeps a resumable ``last.ckpt`` and the same command goes on), ``--stage score`` scores only;
``--experiment NAME`` names the run folders and the record (default ``mnist_anomaly_selections``),
and every argument after ``--`` is passed to ``lebm fit`` (``-- --trainer.logger false``); they are
kept in the run folder (``fit_arguments.json``) and the records name those that change a setting
(``changed``: a factor study's one change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from records import EPOCH_LINES, render_results_md
from script import existing_file, positive_int, run_lebm, run_main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "mnist_anomaly_selections"
#: The run folder's note of what its fit changed from the recipe: the arguments after ``--``, which
#: ``anomaly_protocols.py`` records as ``changed`` (the one setting a factor study changes).
FIT_ARGUMENTS = "fit_arguments.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=existing_file, default="recipes/latent_ebm/mnist_anomaly_offline.yaml")
    parser.add_argument("--digit", type=int, choices=range(10), default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-steps", type=positive_int, default=500)
    parser.add_argument(
        "--every", type=int, choices=(50, 100, 500, 1000), default=50, help="updates between kept checkpoints"
    )
    parser.add_argument("--max-examples", type=positive_int, default=2000, help="examples scored per split")
    parser.add_argument("--experiment", default=EXPERIMENT, help="names the run folders and the record")
    parser.add_argument("--stage", choices=("fit", "score", "both"), default="both")
    parser.add_argument("fit_args", nargs=argparse.REMAINDER, help="after --: more arguments for lebm fit")
    args = parser.parse_args()
    fit_args = args.fit_args[1:] if args.fit_args[:1] == ["--"] else args.fit_args
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    method = Path(args.recipe).parent.name
    run = REPO / "runs" / method / args.experiment / f"digit{args.digit}-seed{args.seed}"
    if args.stage in ("fit", "both"):
        fit(args, run, fit_args)
        run.mkdir(parents=True, exist_ok=True)
        (run / FIT_ARGUMENTS).write_text(json.dumps({"fit_args": fit_args, "recipe": str(args.recipe)}) + "\n")
    if args.stage in ("score", "both"):
        scoring = [sys.executable, str(REPO / "experiments" / "anomaly_protocols.py"), str(run.relative_to(REPO))]
        scoring += ["--protocols", "recipe", "--max-examples", str(args.max_examples)]
        run_lebm([*scoring, "--experiment", args.experiment], "anomaly_protocols.py")
        render_results_md()


def fit(args: argparse.Namespace, run: Path, fit_args: list[str]) -> None:
    """Train (or go on training) the run of ``args`` in ``run``: the full pool, a kept checkpoint
    every ``args.every`` updates, a glance of validation per epoch."""
    run_lebm(
        [
            "lebm",
            "fit",
            "-c",
            args.recipe,
            "-c",
            f"recipes/evaluation/checkpoints_every_{args.every}.yaml",
            "--data.init_args.pool",
            "full",
            "--data.init_args.anomaly_classes",
            f"[{args.digit}]",
            "--seed_everything",
            str(args.seed),
            "--trainer.max_steps",
            str(args.max_steps),
            "--trainer.max_epochs",
            "-1",
            "--trainer.limit_val_batches",
            "4",  # the training-time validation is a glance: every checkpoint is scored below
            "--trainer.default_root_dir",
            str(run),
            "--ckpt_path",
            "auto",
            *EPOCH_LINES,
            *fit_args,
        ]
    )


if __name__ == "__main__":
    run_main(main)
