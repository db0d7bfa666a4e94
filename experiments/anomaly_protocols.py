"""Score every saved checkpoint of an MNIST anomaly run under named evaluation protocols, on the
validation and the test split, and record each paper's selection beside the honest one.

    python experiments/anomaly_protocols.py RUN_DIR [--protocols recipe damc_official] [--output FILE]

``RUN_DIR`` is a ``lebm fit`` run folder of an MNIST anomaly recipe (its ``config.yaml``) whose
checkpoints were saved every few updates (``checkpoints/step=*.ckpt``, a ``ModelCheckpoint`` with
``every_n_train_steps``; ``last.ckpt`` alone otherwise), trained with a validation split disjoint from
the test split (the recipes' default; not ``validate_on: test``). For each checkpoint, each
protocol scores the validation and the test split once; each reading holds the split's size, its
anomaly rate (the AUPRC of a random score), the AUPRC (average precision) and AUROC of the score and
of each of its terms, AUPRC minus chance, and each term's mean and spread on normal and on held-out
digits, in the units the score adds them.

Protocols:

- ``recipe``: the run's own evaluation, ``model.infer(x)`` (DAMC: ``Q(x)`` and its
  ``evaluation_sampler``) and ``model.anomaly_terms``.
- ``damc_official``: DAMC's official re-scoring (yuPeiyu98/Diffusion-Amortized-MCMC,
  ``workspace/eval_anomaly_det.py`` with the README's "Anomaly Detection" command; in a recipe:
  ``-c damc/_eval_anomaly_det`` or ``_eval_anomaly_det_heldout1``): ``z = Q(x)`` of the online
  amortizer refined by 5 noise-free Langevin steps of size 0.1 whose likelihood uses sigma 0.1 for
  held-out 1 (1.0 otherwise), scored ``||G(z) - x||^2 + E(z) + ||z||^2 / 2``. The code keeps the
  checkpoint of the best AUPRC of its training-time evaluation (the ``recipe`` protocol: 10 steps at
  the trained sigma) and re-scores it, so with both protocols run its checkpoints are chosen by the
  ``recipe`` readings.

Selections, per protocol: ``best_of_test`` (the paper's way for DAMC: the highest *test* AUPRC of
all N checkpoints, labelled "best of N test readings"; not a reachable number), ``last`` (the last
checkpoint), ``last_mean`` (the mean test AUPRC of the last ``--last-k`` checkpoints, also read on the
test split; LEBM's own selection, its last 10 epochs, is the results page's mean of the last 10
readings) and ``validation_selected`` (the checkpoint of
the highest validation AUPRC, whose test reading is the honest number). Each split also gets its
no-model baseline once (:mod:`lebm.metrics.no_model`: the highest AUPRC of three squared distances
to a fixed image, named), and each reading says whether it was taken in the untrained regime
(before ``lebm.callbacks.metrics.UNTRAINED_BELOW`` updates). ``--max-examples N`` scores a seeded
draw of N examples of each split (the same draw at every checkpoint) where scoring all of it would
cost too much. The record goes to ``--output`` (default
``docs/results/<method folder>_<experiment>.json``), one per protocol, digit, pool and seed. Needs
``LEBM_DATA``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import yaml
from mnist_anomaly_offline import save_record
from records import this_device
from script import existing_folder, run_main

import lebm
from lebm.callbacks.metrics import UNTRAINED_BELOW, class_statistics
from lebm.config import build
from lebm.data.tasks.anomaly import subset_of
from lebm.metrics import ranking_metrics
from lebm.metrics.no_model import mean_image, no_model_baseline, no_model_scores
from lebm.models import LatentVariableModel
from lebm.samplers import Langevin

REPO = Path(__file__).resolve().parents[1]
TERMS = ("score", "score_reconstruction_term", "score_prior_term")


def damc_official_sigma(digit: int) -> float:
    """The chain's observation noise of DAMC's official evaluation: 0.1 for held-out 1 (the README's
    command for digit 1), 1.0 for the other digits (``g_llhd_sigma``'s default)."""
    return 0.1 if digit == 1 else 1.0


def recipe_latents(model: LatentVariableModel, x: torch.Tensor, digit: int, generator: torch.Generator) -> torch.Tensor:
    """The run's own posterior latents ``(B, latent_dim)``: ``model.infer(x)``."""
    return model.infer(x, generator=generator)


def damc_official_latents(
    model: LatentVariableModel, x: torch.Tensor, digit: int, generator: torch.Generator
) -> torch.Tensor:
    """DAMC's official evaluation latents ``(B, latent_dim)``: the online ``Q(x)`` refined by 5
    noise-free Langevin steps of size 0.1, the likelihood at :func:`damc_official_sigma`."""
    if not hasattr(model, "evaluation_sampler"):
        raise SystemExit(f"the damc_official protocol scores DAMC runs; this run is {type(model).__name__}")
    with model.decoder.observation_noise(damc_official_sigma(digit)):
        return model.infer(
            x, start="amortizer", sampler=Langevin(5, 0.1, noise_std=0.0, cuda_graph=False), generator=generator
        )


PROTOCOLS: dict[str, Callable] = {"recipe": recipe_latents, "damc_official": damc_official_latents}


def split_terms(
    model: LatentVariableModel, loader: Iterable, digit: int, latents: Callable, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every example's score and score terms ``{name: (N,)}`` and anomaly targets ``(N,)`` on ``loader``."""
    generator = torch.Generator(model.device).manual_seed(seed)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in TERMS}
    targets = []
    for x, labels in loader:
        x = x.to(model.device)
        z = latents(model, x, digit, generator)
        with torch.no_grad():
            terms = model.anomaly_terms(x, z, samples=0)
        for name in TERMS:
            collected[name].append(terms[name].double().cpu().numpy())
        targets.append((labels == digit).numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}, np.concatenate(targets)


def reading(values: dict[str, np.ndarray], targets: np.ndarray) -> dict:
    """One split's reading: its size, anomaly rate, and for the score and each term AUPRC, AUROC and
    the mean and spread on normal and on anomalous digits."""
    rate = float(targets.mean())
    result: dict = {"n": int(targets.size), "anomaly_rate": round(rate, 4)}
    for name, scores in values.items():
        auprc, auroc = ranking_metrics(scores, targets.astype(float))
        key = name.removeprefix("score_") if name != "score" else "score"
        spread = {statistic: round(value, 2) for statistic, value in class_statistics(scores, targets).items()}
        result[key] = {"auprc": round(auprc, 4), "auroc": round(auroc, 4), "auprc_minus_chance": round(auprc - rate, 4)}
        result[key].update(spread)
    return result


def split_loader(dataset: torch.utils.data.Dataset, args: argparse.Namespace) -> torch.utils.data.DataLoader:
    """The split's examples in order, or a seeded draw of ``--max-examples`` of them (the same at
    every checkpoint)."""
    if args.max_examples and len(dataset) > args.max_examples:
        dataset = torch.utils.data.Subset(
            dataset, subset_of(torch.arange(len(dataset)), args.max_examples / len(dataset), 0)
        )
    return torch.utils.data.DataLoader(dataset, batch_size=args.eval_batch_size, shuffle=False)


def baseline_reading(loader: Iterable, digit: int, mean: torch.Tensor | None) -> dict:
    """The split's no-model baseline: each no-model score's AUPRC and AUROC, and the best, named."""
    parts: dict[str, list[np.ndarray]] = {}
    targets = []
    for x, labels in loader:
        for name, values in no_model_scores(x, mean).items():
            parts.setdefault(name, []).append(values.numpy())
        targets.append((labels == digit).numpy())
    baseline = no_model_baseline(
        {n: np.concatenate(v) for n, v in parts.items()}, np.concatenate(targets).astype(float)
    )
    return {
        "best": baseline.name,
        "auprc": round(baseline.auprc, 4),
        "auroc": round(baseline.auroc, 4),
        "scores": {n: {"auprc": round(p, 4), "auroc": round(r, 4)} for n, (p, r) in baseline.readings.items()},
    }


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's step checkpoints ``(update, path)``, oldest first (``last.ckpt`` when there are none)."""
    found = []
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        match = re.search(r"step=(\d+)", path.name)
        if match and not path.name.startswith("epoch"):
            found.append((int(match.group(1)), path))
    if not found and (run_dir / "checkpoints" / "last.ckpt").exists():
        path = run_dir / "checkpoints" / "last.ckpt"
        found.append((int(torch.load(path, map_location="cpu", weights_only=False)["global_step"]), path))
    if not found:
        raise SystemExit(f"no checkpoint in {run_dir / 'checkpoints'}: fit the run first")
    return sorted(found)


def selections(readings: list[dict], selected_by: list[dict] | None = None, last_k: int = 3) -> dict:
    """The paper's best-of-N test reading, the last checkpoint's, and the validation-selected one's.
    ``selected_by``: the readings, checkpoint for checkpoint, whose AUPRC chooses the checkpoint
    (DAMC's code chooses by its training-time evaluation, then re-scores; default: ``readings``)."""
    chooser = selected_by or readings
    best_test = readings[max(range(len(chooser)), key=lambda i: chooser[i]["test"]["score"]["auprc"])]
    best_val = readings[max(range(len(chooser)), key=lambda i: chooser[i]["val"]["score"]["auprc"])]
    last = readings[-1]

    def summary(r: dict, how: str) -> dict:
        return {
            "how": how,
            "update": r["update"],
            "test_auprc": r["test"]["score"]["auprc"],
            "test_auroc": r["test"]["score"]["auroc"],
            "test_auprc_minus_chance": r["test"]["score"]["auprc_minus_chance"],
        }

    n = len(readings)
    recent = readings[-last_k:]
    last_mean = {
        "how": f"mean of the last {len(recent)} of {n} test readings (LEBM's own selection, the last 10, is "
        "computed from the readings by scripts/results_tables.py)",
        "updates": [r["update"] for r in recent],
        "test_auprc": round(float(np.mean([r["test"]["score"]["auprc"] for r in recent])), 4),
        "test_auprc_std": round(float(np.std([r["test"]["score"]["auprc"] for r in recent])), 4),
        "test_auroc": round(float(np.mean([r["test"]["score"]["auroc"] for r in recent])), 4),
    }
    by = "" if selected_by is None else ", the checkpoint chosen by the training-time evaluation's readings"
    return {
        "best_of_test": summary(best_test, f"best of {n} test readings (selected on the test split{by})"),
        "last": summary(last, "the last checkpoint"),
        "last_mean": last_mean,
        "validation_selected": summary(best_val, f"highest validation AUPRC of {n} checkpoints, test read there"),
    }


#: How each protocol is named in the records.
LABELS = {"recipe": "the recipe's evaluation", "damc_official": "DAMC's official evaluation"}


def describe_run(config: dict, data_config: dict, updates: int) -> str:
    """The run's budget as the results tables print it: updates, batch, generator size, pool."""
    net = config["model"]["init_args"]["decoder"]["init_args"]["net"]["init_args"]
    size = f"ngf {net['ngf']}" if "ngf" in net else "its generator"
    batch = config["data"]["init_args"]["batch_size"]
    return f"{updates} updates, batch {batch}, {size}, {data_config['init_args'].get('pool', 'full')} pool"


def protocol_record(
    config: dict,
    data_config: dict,
    name: str,
    rows: list[dict],
    args: argparse.Namespace,
    no_model: dict,
    selected_by: list[dict] | None = None,
) -> dict:
    """One protocol's record: ``value`` is the honest number (the test AUPRC at the checkpoint of
    the highest validation AUPRC), with its AUROC and chance; ``best_of_test`` the paper's way of
    selecting, ``last`` the last checkpoint, ``readings`` every checkpoint's readings on both splits."""
    chosen = selections(rows, selected_by, args.last_k)
    honest = rows[[r["update"] for r in rows].index(chosen["validation_selected"]["update"])]["test"]
    return {
        "method": config["model"]["class_path"].rsplit(".", 1)[-1],
        "experiment": args.experiment,
        "metric": "auprc",
        "digit": data_config["init_args"]["anomaly_classes"][0],
        "setting": LABELS[name],
        "protocol": name,
        "value": honest["score"]["auprc"],
        "auroc": honest["score"]["auroc"],
        "chance": honest["anomaly_rate"],
        "auprc_minus_chance": honest["score"]["auprc_minus_chance"],
        "no_model": no_model,
        "auprc_minus_no_model": round(honest["score"]["auprc"] - no_model["test"]["auprc"], 4),
        "seed": config.get("seed_everything"),
        "split": "test, at the checkpoint of the highest validation AUPRC",
        "pool": data_config["init_args"].get("pool", "full"),
        "val_fraction": data_config["init_args"]["val_fraction"],
        **chosen,
        "readings": rows,
        "budget": describe_run(config, data_config, rows[-1]["update"]),
        "command": shlex.join(
            [
                "python",
                "experiments/anomaly_protocols.py",
                str(args.run),
                "--protocols",
                name,
                *(["--max-examples", str(args.max_examples)] if args.max_examples else []),
                *(["--experiment", args.experiment] if args.experiment != "mnist_anomaly_protocols" else []),
            ]
        ),
        "device": this_device(),
        "date": datetime.date.today().isoformat(),
        **changed_settings(args.run),
    }


#: Fit arguments that change no number of a run (what it prints and logs).
QUIET = frozenset({"--trainer.logger", "--trainer.enable_progress_bar"})


def changed_settings(run: Path) -> dict:
    """``{"changed": ...}``: the settings the run's fit changed from its recipe, as its arguments
    after ``--`` of ``anomaly_selections.py`` (``fit_arguments.json`` in the run folder; quiet ones
    aside); "nothing (the recipe)" when none; ``{}`` for a run fitted otherwise (not known)."""
    path = Path(run) / "fit_arguments.json"
    if not path.is_file():
        return {}
    given = json.loads(path.read_text())["fit_args"]
    kept, skip = [], False
    for index, argument in enumerate(given):
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in QUIET:
            skip = "=" not in argument and index + 1 < len(given)
            continue
        kept.append(argument)
    return {"changed": shlex.join(kept) if kept else "nothing (the recipe)"}


def protocol_records(
    config: dict, data_config: dict, per_protocol: dict[str, list[dict]], args: argparse.Namespace, no_model: dict
) -> list[dict]:
    """Each protocol's record (:func:`protocol_record`); DAMC's official protocol at the checkpoints
    the recipe's readings choose, when they were scored too (DAMC's code chooses by its
    training-time evaluation, then re-scores)."""
    records = []
    for name, rows in per_protocol.items():
        chooser = per_protocol.get("recipe") if name == "damc_official" else None
        records.append(protocol_record(config, data_config, name, rows, args, no_model, chooser))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=existing_folder)
    parser.add_argument("--protocols", nargs="+", default=["recipe", "damc_official"], choices=sorted(PROTOCOLS))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--experiment", default="mnist_anomaly_protocols")
    parser.add_argument("--seed", type=int, default=0, help="the scoring chains' stream")
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--max-examples", type=int, default=None, help="score a seeded draw of N examples per split")
    parser.add_argument("--last-k", type=int, default=3, help="checkpoints averaged by the last_mean selection")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    run = args.run.resolve()
    if not (run / "config.yaml").exists():
        parser.error(f"{run} has no config.yaml: give the folder of a lebm fit run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    data_config = copy.deepcopy(config["data"])
    data_config["init_args"].update(root=os.path.join(os.environ["LEBM_DATA"], "mnist"), num_workers=0)
    data_config["init_args"]["eval_batch_size"] = args.eval_batch_size
    init = data_config["init_args"]
    if init.get("validate_on") == "test" or not init.get("val_fraction"):
        parser.error(f"{run} validated on the test split (validate_on: test): it has no validation split to select on")
    (digit,) = data_config["init_args"]["anomaly_classes"]
    data = build(data_config)
    data.setup("fit")
    data.setup("test")
    loaders = {"val": split_loader(data.val_dataset, args), "test": split_loader(data.test_dataset, args)}
    no_model = {
        split: baseline_reading(loader, digit, mean_image(data.train_dataset)) for split, loader in loaders.items()
    }
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_protocol: dict[str, list[dict]] = {name: [] for name in args.protocols}
    for update, path in checkpoints(run):
        model = lebm.load(str(path), map_location=device).eval()
        for name in args.protocols:
            row = {"update": update, "untrained": update < UNTRAINED_BELOW}
            for split, loader in loaders.items():
                values, targets = split_terms(model, loader, digit, PROTOCOLS[name], args.seed)
                row[split] = reading(values, targets)
            per_protocol[name].append(row)
            print(
                f"update {update} {name}: val AUPRC {row['val']['score']['auprc']} test AUPRC "
                f"{row['test']['score']['auprc']} AUROC {row['test']['score']['auroc']} "
                f"(chance {row['test']['anomaly_rate']})",
                flush=True,
            )
        del model
    parts = Path(config["trainer"]["default_root_dir"]).parts  # runs/<method folder>/..., relative or not
    after_runs = parts.index("runs") + 1 if "runs" in parts else len(parts)
    folder = parts[after_runs] if after_runs < len(parts) else config["model"]["class_path"].rsplit(".", 1)[-1].lower()
    output = args.output or REPO / "docs" / "results" / f"{folder}_{args.experiment}.json"
    for record in protocol_records(config, data_config, per_protocol, args, no_model):
        save_record(output, record, lambda r: (r["digit"], r["metric"], r.get("setting"), r.get("pool"), r.get("seed")))
    print(f"record: {output}")


if __name__ == "__main__":
    run_main(main)
