"""The observation noise at scoring time, model fixed: a trained anomaly run read with other sigmas.

    python experiments/anomaly_sigma.py RUN_DIR --sigmas 0.1 1.0 [--setting NAME] [--output FILE]

``RUN_DIR`` is a run folder of ``experiments/mnist_anomaly_offline.py`` (its ``config.yaml`` and
newest ``last*.ckpt``). No training: for each ``sigma`` the model's decoder is given that
observation noise (``decoder.sigma``: the posterior chain's likelihood term ``||x - g(z)||^2 /
(2 sigma^2)`` and, for LatentEBM and the hierarchical model, the score's reconstruction term;
DAMC's score reads the unweighted ``||x - g(z)||^2``), and the run's evaluation is read once on its
validation split and once on its test split (the same split when the run validated on test). The
official DAMC evaluation scores held-out 1 this way with sigma 0.1 after training with 1.0 (its
README's ``eval_anomaly_det.py`` command). Each reading becomes one record (``experiment:
mnist_anomaly_sigma``, ``metric: auprc``, setting ``<setting>, scored with sigma <s>``) in
``--output`` (default ``docs/results/<method folder>_mnist_anomaly_sigma.json``). Needs ``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from mnist_anomaly_offline import save_record
from records import anomaly_trainer, newest_last_checkpoint, render_results_md, this_device
from script import existing_folder, positive_float, run_main

import lebm
from lebm.config import build

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "mnist_anomaly_sigma"


def read_split(model, data_config: dict, digit: int, stage: str) -> dict[str, float]:
    """AUPRC and AUROC (and each score term's) of ``model`` on the run's ``stage`` split ("val" or "test")."""
    trainer = anomaly_trainer(digit)
    run = trainer.validate if stage == "val" else trainer.test
    (results,) = run(model, build(copy.deepcopy(data_config)), verbose=False)
    wanted = {name: value for name, value in results.items() if "/au" in name and "last_k" not in name}
    return {name.split("/", 1)[1]: round(float(value), 4) for name, value in wanted.items() if "best" not in name}


Reading = dict[str, float]


def read_with_sigma(
    checkpoint: str, sigma: float, read: Callable[[object, str], Reading], validates_on_test: bool
) -> tuple[Reading, Reading]:
    """``(validation, test)`` readings of the model in ``checkpoint`` scored with observation noise
    ``sigma`` (set on its decoder; the weights are the trained ones). ``read(model, stage)`` reads
    one split ("val" or "test"); a run that validated on test reads it once, for both."""
    model = lebm.load(checkpoint, map_location="cpu")
    model.decoder.sigma = sigma
    torch.manual_seed(0)
    validation = read(model, "val")
    return validation, validation if validates_on_test else read(model, "test")


def sigma_fields(
    setting: str, trained_sigma: float, sigma: float, validation: Reading, tested: Reading, validates_on_test: bool
) -> dict:
    """A sigma record's own fields: its setting, both sigmas, ``value`` (the validation AUPRC, the
    split settings are chosen on), the other validation figures as ``val_*`` and the test split's
    as ``test_*``."""
    return {
        "setting": f"{setting}, scored with sigma {sigma:g}",
        "trained_sigma": trained_sigma,
        "scored_sigma": sigma,
        "value": validation["auprc"],
        "split": "test (the protocol)" if validates_on_test else "validation (disjoint from test)",
        **{f"val_{key}": value for key, value in validation.items() if key != "auprc"},
        **{f"test_{key}": value for key, value in tested.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=existing_folder)
    parser.add_argument("--sigmas", type=positive_float, nargs="+", required=True)
    parser.add_argument("--setting", default=None, help="the run's name in the records (default: its folder)")
    parser.add_argument("--output", default=None, help="default: docs/results/<method folder>_mnist_anomaly_sigma.json")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    run = args.run.resolve()
    if not (run / "config.yaml").exists():
        parser.error(f"{run} has no config.yaml: give the folder of a lebm fit run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = config["data"]
    if not (data.get("init_args") or {}).get("anomaly_classes"):
        parser.error(
            f"{run} is not an MNIST anomaly run (its data, {data.get('class_path')}, holds no anomaly_classes): give "
            "the folder of a run of an mnist_anomaly recipe"
        )
    if not run.is_relative_to(REPO / "runs") and not (args.output and args.setting):
        parser.error(f"{run} is not a run folder under {REPO / 'runs'}: give --output and --setting to record it")
    data["init_args"]["root"] = os.path.join(os.environ["LEBM_DATA"], "mnist")
    digit = int(data["init_args"]["anomaly_classes"][0])
    checkpoint = newest_last_checkpoint(run)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trained_sigma = config["model"]["init_args"]["decoder"]["init_args"]["sigma"]
    validates_on = data["init_args"].get("validate_on")  # absent in runs before it: val_fraction 0 read the test split
    validates_on_test = validates_on == "test" or (validates_on is None and not data["init_args"].get("val_fraction"))
    method_folder = run.relative_to(REPO / "runs").parts[0] if run.is_relative_to(REPO / "runs") else ""
    output = Path(args.output or REPO / "docs" / "results" / f"{method_folder}_{EXPERIMENT}.json")
    setting = args.setting or str(run.relative_to(REPO / "runs"))
    for sigma in args.sigmas:
        validation, tested = read_with_sigma(
            str(checkpoint), sigma, lambda model, stage: read_split(model, data, digit, stage), validates_on_test
        )
        record = {
            "method": config["model"]["class_path"].rpartition(".")[2],
            "experiment": EXPERIMENT,
            "metric": "auprc",
            "digit": digit,
            **sigma_fields(setting, trained_sigma, sigma, validation, tested, validates_on_test),
            "pool": data["init_args"].get("pool", "full"),
            "updates": int(state["global_step"]),
            "budget": f"no training: {checkpoint.relative_to(REPO)} ({state['global_step']} updates)",
            "command": "LEBM_DATA=../shared/data "
            + shlex.join(["python", "experiments/anomaly_sigma.py", *sys.argv[1:]]),
            "device": this_device(),
            "date": datetime.date.today().isoformat(),
        }
        save_record(output, record, lambda r: (r["digit"], r["metric"], r.get("setting")))
        print(f"sigma {sigma:g}: val AUPRC {validation['auprc']}, test AUPRC {tested['auprc']}", flush=True)
    render_results_md()


if __name__ == "__main__":
    run_main(main)
