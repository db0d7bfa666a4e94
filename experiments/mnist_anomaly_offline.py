"""Run the offline MNIST anomaly protocol for several held-out digits and record the AUPRC.

    python experiments/mnist_anomaly_offline.py [--digits 1 4 5 7 9] [--recipe R] [--max-epochs N]
        [--setting NAME --with FRAGMENT --set KEY=VALUE ...] [--val-fraction F] [--split cited]
        [--pool full --max-steps U --val-every-steps V]

For each digit: ``lebm fit -c R --data.init_args.anomaly_classes [d] --ckpt_path auto`` in its own
run folder (``runs/<method>/<recipe name>/[<experiment>/][cited/][<setting>/]digit<d>``, the
experiment named only when it is not ``mnist_anomaly_offline``; a run stopped before its last epoch
resumes exactly), then the AUPRC of the last ``last_k`` validation evaluations (kept in
the checkpoint by the ``AnomalyDetection`` callback), with the AUPRC of each of the score's terms
(``auprc_reconstruction_term``, ``auprc_prior_term``), becomes one record in
``docs/results/<method>_<experiment>.json``, and ``docs/results.md`` is regenerated.

Choosing settings without the test split: ``--setting NAME --set model.init_args.prior_lr=2e-6 ...``
trains a named variant (each ``--set`` is one ``--KEY VALUE`` of ``lebm fit``, each ``--with`` one
more ``-c FRAGMENT`` after the recipe). Runs validate on a split disjoint from the test split (the
recipes' 20% of the evaluation pool, normal and held-out digits alike; ``--val-fraction 0.5`` another
share: ``MNISTAnomalyDataModule(val_fraction=...)``), and ``--validate-on-test`` validates on the
test split as the papers did (``validate_on="test"``). With a validation split the record also
holds the test split's AUPRC and term AUPRCs, read once after training (``test_*``; for a method
with an inference network also averaged over ``--score-samples`` latent draws, ``test_*_sampled``).
``--split cited`` draws the splits as the loader the papers cite does (its test split overlaps
training: ``MNISTAnomalyDataModule(split="cited")``), in run folders of their own; the record names
the split and the overlap. Every record holds both readings of AUPRC (average precision, ``value``;
the trapezoid rule, ``auprc_trapezoid``) over the recipe's last ``last_k`` evaluations, and the
papers' reading (``papers_reading``: the mean and spread of both over the last 10 evaluations).
A run that evaluates every n epochs (``--set trainer.check_val_every_n_epoch=n``) also records the
epochs of its evaluations (``evaluation_epochs``; ``auprc_by_epoch`` then holds one value each).
``--pool full`` runs the recipe on all 70,000 digits (``MNISTAnomalyDataModule(pool="full")``, in
run folders ``.../full_pool/...`` for an offline recipe), ``--max-steps U`` stops after U updates and
``--val-every-steps V`` evaluates every V updates instead of every epoch (the record then holds
``evaluation_updates``); every record names its ``pool`` and the ``updates`` its checkpoint holds.
Needs ``LEBM_DATA`` (the folder holding ``mnist/``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import fcntl
import json
import os
import shlex
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from records import EPOCH_LINES, anomaly_trainer, newest_last_checkpoint, render_results_md, stamped, this_device
from script import existing_file, positive_int, run_lebm, run_main

from lebm.cli.resolve import resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def run_digit(recipe: str, digit: int, run_dir: Path, extra: list[str], fragments: list[str] = ()) -> None:
    command = [
        "lebm",
        "fit",
        "-c",
        recipe,
        *[part for fragment in fragments for part in ("-c", fragment)],
        "--data.init_args.anomaly_classes",
        f"[{digit}]",
        "--trainer.default_root_dir",
        str(run_dir),
        *EPOCH_LINES,
        "--ckpt_path",
        "auto",  # a digit whose run was stopped (or trained for fewer epochs) goes on from its last checkpoint
        *extra,
    ]
    print("+", shlex.join(command), flush=True)
    run_lebm(command)


def detection_state(run_dir: Path) -> tuple[dict, int]:
    """The ``AnomalyDetection`` callback's state in the run's last checkpoint: ``history`` (the
    validation AUPRC of every evaluation) and ``term_history`` (the same for each score term); and
    the updates (training iterations, ``global_step``) the checkpoint holds."""
    checkpoint = torch.load(newest_last_checkpoint(run_dir), map_location="cpu", weights_only=False)
    return checkpoint["callbacks"]["AnomalyDetection"], int(checkpoint["global_step"])


#: The hierarchical paper averages the AUPRC of its last 10 epochs.
PAPERS_LAST = 10


def readings(state: dict, k: int) -> dict:
    """Both readings of the AUPRC from the callback's ``state``: average precision (``value``,
    ``std``) and trapezoid (``auprc_trapezoid``, ``auprc_trapezoid_std``) over the last ``k``
    evaluations, and the papers' reading over the last 10 (``papers_reading``)."""

    def mean_std(history: list[float], n: int) -> tuple[float, float]:
        recent = history[-n:]
        return round(statistics.fmean(recent), 4), round(statistics.pstdev(recent), 4)

    history, trapezoid = state["history"], state.get("trapezoid_history", [])
    summary: dict = dict(zip(("value", "std"), mean_std(history, k), strict=True))
    summary["n_evaluations"] = len(history[-k:])
    papers = {"n_evaluations": len(history[-PAPERS_LAST:])}
    papers.update(zip(("auprc", "auprc_std"), mean_std(history, PAPERS_LAST), strict=True))
    if trapezoid:
        summary.update(zip(("auprc_trapezoid", "auprc_trapezoid_std"), mean_std(trapezoid, k), strict=True))
        papers.update(zip(("auprc_trapezoid", "auprc_trapezoid_std"), mean_std(trapezoid, PAPERS_LAST), strict=True))
        summary["auprc_trapezoid_by_epoch"] = [round(v, 4) for v in trapezoid]
    summary["papers_reading"] = papers
    return summary


def chance_readings(state: dict, k: int, value: float) -> dict:
    """What the callback's ``readings`` add to a record (runs since it keeps them): the AUROC (mean
    of the last ``k`` evaluations, and after each), the chance AUPRC (the evaluated split's anomaly
    share), the record's ``value`` minus it, the number of examples, each term's AUROC and its mean
    and spread on normal and on held-out digits at the last evaluation (in the units the score adds
    them: nats for ``-log p``), and the best of the N readings with its update (DAMC's selection)."""
    readings = state.get("readings") or []
    if not readings:
        return {}
    last, recent = readings[-1], readings[-k:]
    best = max(readings, key=lambda r: r["score"]["auprc"])
    fields = ("auroc", "normal_mean", "normal_std", "anomaly_mean", "anomaly_std")
    baseline = last.get("no_model")  # the split's no-model baseline (runs since it is kept)
    return {
        **({"no_model": {"val": {k: baseline[k] for k in ("best", "auprc", "auroc")}}} if baseline else {}),
        "auroc": round(statistics.fmean([r["score"]["auroc"] for r in recent]), 4),
        "chance": round(last["chance"], 4),
        "auprc_above_chance": round(value - last["chance"], 4),
        "n_examples": last["n_examples"],
        "auroc_by_epoch": [round(r["score"]["auroc"], 4) for r in readings],
        "terms_last_evaluation": {
            name: {key: round(last[name][key], 4) for key in fields}
            for name in ("score", "reconstruction_term", "prior_term")
            if name in last
        },
        "best_of_n": {
            "auprc": round(best["score"]["auprc"], 4),
            "n": len(readings),
            "update": best["update"],
            "how": f"best of {len(readings)} readings of the split the run validated on (DAMC's code's selection)",
        },
    }


def test_overlap(config: dict, digit: int, split: str) -> float:
    """The share of the test split (the whole evaluation pool, before any validation share is set
    aside) that is training digits, for ``digit`` held out under ``split``; 0 for ``disjoint``."""
    if split == "disjoint":
        return 0.0
    from lebm.config import build

    data = copy.deepcopy(config["data"])
    data["init_args"].update(anomaly_classes=[digit], split=split)
    module = build(data)
    module.setup("fit")
    return round(module.test_overlap, 4)


def term_summaries(state: dict, k: int) -> dict:
    """Each score term's AUPRC from the callback's ``state``: the mean of its last ``k`` evaluations
    (``auprc_<term>``, as the whole score's ``value``) and its value after every epoch
    (``term_auprc_by_epoch``, as the whole score's ``auprc_by_epoch``)."""
    histories = state.get("term_history", {})
    summaries: dict = {f"auprc_{term}": round(statistics.fmean(h[-k:]), 4) for term, h in histories.items() if h}
    if histories:
        summaries["term_auprc_by_epoch"] = {term: [round(v, 4) for v in h] for term, h in histories.items()}
    return summaries


def test_metrics(config: dict, run_dir: Path, digit: int, score_samples: int | None) -> dict[str, float]:
    """AUPRC and AUROC of the score and its terms on the test split, read once from the run's last
    checkpoint (``score_samples``: latent draws of the inference network to average over; None:
    the model's own setting)."""
    import lebm
    from lebm.config import build

    data = copy.deepcopy(config["data"])
    data["init_args"]["anomaly_classes"] = [digit]
    model = lebm.load(str(newest_last_checkpoint(run_dir)), map_location="cpu")
    if score_samples is not None:
        model.score_samples = score_samples
    (results,) = anomaly_trainer(digit).test(model, build(data), verbose=False)
    return {name.removeprefix("test/"): round(float(value), 4) for name, value in results.items()}


def load_recipe(recipe: str) -> dict:
    """The recipe as ``lebm fit`` runs it (includes expanded, interpolations resolved)."""
    return resolve_recipe(REPO / recipe)


def last_k(config: dict, recipe: str) -> int:
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("AnomalyDetection"):
            return int(callback.get("init_args", {}).get("last_k", 10))
    raise ValueError(f"{recipe} has no AnomalyDetection callback")


def describe_net(net: dict) -> str:
    """The generator's size as its config states it (``ngf``, ``widths`` or VLAE's conv and fc widths)."""
    if "ngf" in net:
        return f"ngf {net['ngf']}"
    if "conv_widths" in net:
        return f"conv widths {'-'.join(str(w) for w in net['conv_widths'])}, fc {net.get('fc_width')}"
    return f"widths {'-'.join(str(w) for w in net.get('widths', []))}"


def describe_budget(
    config: dict, max_epochs: int | None, k: int, run_config: Path | None = None, updates: int | None = None
) -> str:
    """Epochs (or ``updates``, when the run stopped on ``max_steps``), batch, the generator's size
    (from the run's own ``config.yaml`` when there is one, so that fragments and ``--set`` options
    count) and how many evaluations the AUPRC averages."""
    if run_config is not None and run_config.exists():
        config = yaml.safe_load(run_config.read_text())
    net = config["model"]["init_args"]["decoder"]["init_args"]["net"]["init_args"]
    if (config["trainer"].get("max_steps") or -1) > 0:
        epochs = f"{config['trainer']['max_steps']} updates"
    else:
        epochs = f"{max_epochs or config['trainer']['max_epochs']} epochs"
        epochs += f" ({updates} updates)" if updates is not None else ""
    batch = config["data"]["init_args"]["batch_size"]
    stages = config["model"]["init_args"]["prior"]["init_args"].get("n_stages")
    staged = f", {stages} stages" if stages else ""
    pool = config["data"]["init_args"].get("pool", "full")
    return f"{epochs}{staged}, batch {batch}, {describe_net(net)}, mean of last {k} evaluations, {pool} pool"


def evaluation_updates(state: dict, every: int) -> list[int]:
    """The updates after which the run evaluated: from the callback's ``readings`` (the final
    step's validation, when ``max_steps`` is no multiple of ``every``, included), else every ``every``
    updates (checkpoints from before the readings were kept)."""
    readings = state.get("readings") or []
    if len(readings) == len(state["history"]):
        return [int(r["update"]) for r in readings]
    return [every * (i + 1) for i in range(len(state["history"]))]


def evaluation_epochs(run_config: Path, evaluations: int) -> list[int] | None:
    """The epochs after which the run evaluated (``trainer.check_val_every_n_epoch`` of its
    ``config.yaml``), or None when it evaluated after every epoch."""
    every = int(yaml.safe_load(run_config.read_text())["trainer"].get("check_val_every_n_epoch") or 1)
    return [every * (i + 1) for i in range(evaluations)] if every > 1 else None


def save_record(output: Path, record: dict, identity: Callable[[dict], object]) -> None:
    """Add ``record`` to the JSON list in ``output``, replacing the one with the same ``identity``;
    under a file lock, since runners of other digits may write the same file at the same time. The
    record is :func:`records.stamped`: it carries its commit, command, device and date."""
    output.parent.mkdir(parents=True, exist_ok=True)
    record = stamped(record)
    with open(output.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(output.read_text()) if output.exists() else []
        records = [r for r in records if identity(r) != identity(record)] + [record]
        records.sort(key=lambda r: (r["metric"], r.get("data_split") or "disjoint", r.get("setting") or "", r["digit"]))
        output.write_text(json.dumps(records, indent=2) + "\n")


def apply_data_options(config: dict, options: list[str]) -> None:
    """Apply the ``--set data.init_args.KEY=VALUE`` options to ``config``'s data (e.g. ``train_subset``),
    so that the overlap and test readings see the data the run trained on."""
    for item in options:
        key, _, value = item.partition("=")
        key = key.removeprefix("--")
        if key.startswith("data.init_args."):
            config["data"]["init_args"][key.removeprefix("data.init_args.")] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, nargs="+", default=[1, 9, 4, 5, 7])
    parser.add_argument("--recipe", type=existing_file, default="recipes/latent_ebm/mnist_anomaly_offline.yaml")
    parser.add_argument("--experiment", default="mnist_anomaly_offline")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--output", default=None, help="default: docs/results/<method>_<experiment>.json")
    parser.add_argument("--setting", default=None, help="name of a variant of the recipe (its own run folders)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a lebm fit option")
    parser.add_argument("--with", dest="fragments", action="append", default=[], help="a recipe fragment after R")
    parser.add_argument("--val-fraction", type=float, default=None, help="the validation split's share (recipe's: 0.2)")
    parser.add_argument(
        "--validate-on-test",
        action="store_true",
        help="validate on the test split (the papers' protocol; selects on it)",
    )
    parser.add_argument("--score-samples", type=int, default=10, help="latent draws for the sampled test score")
    parser.add_argument("--split", choices=("disjoint", "cited"), default="disjoint", help="how the splits are drawn")
    parser.add_argument(
        "--pool", choices=("offline", "full"), default=None, help="full: all 70,000 digits (default: the recipe's)"
    )
    parser.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many updates")
    parser.add_argument("--val-every-steps", type=positive_int, default=None, help="evaluate every this many updates")
    args = parser.parse_args()
    if not os.environ.get("LEBM_DATA"):
        parser.error("set LEBM_DATA to the folder that holds mnist/ (e.g. LEBM_DATA=../shared/data)")
    extra = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    for item in args.set:
        key, _, value = item.partition("=")
        extra += [f"--{key.removeprefix('--')}", value]
    if args.val_fraction is not None:
        extra += ["--data.init_args.val_fraction", str(args.val_fraction)]
    if args.validate_on_test:
        extra += ["--data.init_args.validate_on", "test"]
    validation_split = not args.validate_on_test
    if args.split != "disjoint":
        extra += ["--data.init_args.split", args.split]
    data_options = [*args.set, *([f"data.init_args.pool={args.pool}"] if args.pool else [])]
    if args.pool:
        extra += ["--data.init_args.pool", args.pool]
    if args.max_steps:
        extra += ["--trainer.max_steps", str(args.max_steps)]
    if args.val_every_steps:
        extra += ["--trainer.val_check_interval", str(args.val_every_steps)]
        extra += ["--trainer.check_val_every_n_epoch", "null"]
    config = load_recipe(args.recipe)  # what test_metrics reads: the data config, unchanged by fragments
    if args.val_fraction is not None:
        config["data"]["init_args"]["val_fraction"] = args.val_fraction
    if args.validate_on_test:
        config["data"]["init_args"]["validate_on"] = "test"
    apply_data_options(config, data_options)
    k = last_k(config, args.recipe)
    fragments = "".join(f", with {f}" for f in args.fragments)
    name = Path(args.recipe).stem
    method = config["model"]["class_path"].rsplit(".", 1)[-1]
    output = Path(args.output or REPO / "docs" / "results" / f"{Path(args.recipe).parent.name}_{args.experiment}.json")
    for digit in args.digits:
        experiment_dir = args.experiment if args.experiment != "mnist_anomaly_offline" else ""
        split_dir = args.split if args.split != "disjoint" else ""
        pool_dir = "full_pool" if args.pool == "full" and "offline" in name else ""
        run_dir = REPO / "runs" / Path(args.recipe).parent.name / name / pool_dir / experiment_dir / split_dir
        run_dir = run_dir / (args.setting or "") / f"digit{digit}"
        run_digit(args.recipe, digit, run_dir, extra, args.fragments)
        state, updates = detection_state(run_dir)
        recent = state["history"][-k:]
        budget = describe_budget(config, args.max_epochs, len(recent), run_dir / "config.yaml", updates) + fragments
        if args.val_every_steps:
            budget += f", evaluated every {args.val_every_steps} updates"
        evaluated = evaluation_epochs(run_dir / "config.yaml", len(state["history"]))
        if evaluated:
            budget += f", evaluated every {evaluated[0]} epochs"
        terms = term_summaries(state, k)
        tested = {}
        if validation_split:
            tested = {f"test_{key}": value for key, value in test_metrics(config, run_dir, digit, None).items()}
            if "encoder" in config["model"]["init_args"] and args.score_samples:
                sampled = test_metrics(config, run_dir, digit, args.score_samples)
                tested.update({f"test_{key}_sampled": value for key, value in sampled.items()})
        record = {
            "method": method,
            "experiment": args.experiment,
            "metric": "auprc",
            "digit": digit,
            **({"setting": args.setting, "options": args.fragments + args.set} if args.setting else {}),
            **readings(state, k),
            "split": "validation (disjoint from test)" if validation_split else "test (the protocol)",
            "data_split": args.split,
            "pool": config["data"]["init_args"].get("pool", "full"),
            "updates": updates,
            "test_overlap": test_overlap(config, digit, args.split),
            **terms,
            **chance_readings(state, k, statistics.fmean(recent)),
            **tested,
            "auprc_by_epoch": [round(v, 4) for v in state["history"]],
            **({"evaluation_epochs": evaluated} if evaluated else {}),
            **({"evaluation_updates": evaluation_updates(state, args.val_every_steps)} if args.val_every_steps else {}),
            "budget": budget,
            "command": "LEBM_DATA=../shared/data "
            + shlex.join(
                [
                    "python",
                    "experiments/mnist_anomaly_offline.py",
                    "--digits",
                    str(digit),
                    "--recipe",
                    args.recipe,
                    *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
                    *(["--setting", args.setting] if args.setting else []),
                    *[f"--with={fragment}" for fragment in args.fragments],
                    *[f"--set={item}" for item in args.set],
                    *(["--val-fraction", str(args.val_fraction)] if args.val_fraction is not None else []),
                    *(["--validate-on-test"] if args.validate_on_test else []),
                    *(["--split", args.split] if args.split != "disjoint" else []),
                    *(["--pool", args.pool] if args.pool else []),
                    *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
                    *(["--val-every-steps", str(args.val_every_steps)] if args.val_every_steps else []),
                    *(["--experiment", args.experiment] if args.experiment != "mnist_anomaly_offline" else []),
                ]
            ),
            "device": this_device(),
            "date": datetime.date.today().isoformat(),
        }
        save_record(
            output,
            record,
            lambda r: (r["digit"], r["metric"], r.get("setting"), r.get("data_split") or "disjoint", r.get("pool")),
        )
        render_results_md()
        print(f"digit {digit}: AUPRC {statistics.fmean(recent):.4f} over {len(recent)} evaluations", terms, tested)


if __name__ == "__main__":
    run_main(main)
