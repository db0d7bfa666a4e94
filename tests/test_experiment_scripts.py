"""The experiment scripts refuse as ``lebm fit`` does (device: CPU): one line naming the problem
and the fix, before anything trains: budgets of 0 or below, a sigma of 0 or below, a recipe, record
or run folder that is not there, a probe recipe without the probe, records of another recipe or
seed paired as a data gap; a refusal of ``lebm`` itself passes through as its own line plus one,
not a ``CalledProcessError`` traceback.

The refusals run each script as ``python experiments/<script>.py ARGS`` runs it, in this process
(:func:`run_script`: its ``__main__`` with that ``sys.argv``, from the clone, its folder first on
``sys.path``): a subprocess would import torch and Lightning anew for each. One case runs as a
subprocess too (:func:`run_script_process`), as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lebm
from tests.helpers.scripts import Finished, load_script, run_here
from tests.helpers.subprocesses import HANG_SECONDS

REPO = Path(__file__).resolve().parents[1]


def script_module():
    return load_script("experiments/script.py")


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("positive_int", "0", "must be a whole number >= 1, got 0"),
        ("positive_int", "-3", "must be a whole number >= 1, got -3"),
        ("positive_int", "1.5", "must be a whole number >= 1, got '1.5'"),
        ("positive_float", "-1", "must be a finite number > 0, got -1"),
        ("positive_float", "0", "must be a finite number > 0, got 0"),
        ("positive_float", "nan", "must be a finite number > 0, got nan"),
        ("existing_file", "recipes/no_such_recipe.yaml", "no file recipes/no_such_recipe.yaml"),
        ("existing_folder", "/no/such/run", "no folder /no/such/run: give a run folder that exists"),
    ],
)
def test_an_argument_type_refuses_in_one_line(kind: str, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(script_module(), kind)(text)


def test_the_argument_types_take_what_they_should() -> None:
    script = script_module()
    assert script.positive_int("3") == 3 and script.positive_float("0.1") == 0.1
    assert script.existing_file("recipes/quickstart.yaml") == "recipes/quickstart.yaml"
    assert script.existing_folder(str(REPO)) == REPO


def test_a_failed_command_stops_the_script_with_its_code_and_one_line(capfd: pytest.CaptureFixture) -> None:
    refusal = "import sys; sys.stderr.write('lebm: error: a refusal\\n'); sys.exit(2)"
    with pytest.raises(SystemExit) as stop:
        script_module().run_lebm([sys.executable, "-c", refusal])
    err = capfd.readouterr().err
    assert stop.value.code == 2
    assert err.splitlines()[0] == "lebm: error: a refusal" and "exit code 2 (its message is above)" in err
    assert "Traceback" not in err and "CalledProcessError" not in err


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        ("ScriptError('no record of digit 4 in x.json: run it')", "no record of digit 4 in x.json: run it"),
        ("FileNotFoundError(2, 'No such file or directory', 'docs/results/x.json')", "docs/results/x.json"),
        ("ValueError('Langevin step_size must be > 0,\\n got -1')", "Langevin step_size must be > 0, got -1"),
    ],
)
def test_a_scripts_mistake_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture, raised: str, said: str) -> None:
    script = script_module()

    def main() -> None:
        raise eval(raised, {"ScriptError": script.ScriptError})

    with pytest.raises(SystemExit) as stop:
        script.run_main(main)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and said in err and ": error: " in err, err


def script_environment() -> dict[str, str]:
    return {"LEBM_DATA": os.environ.get("LEBM_DATA", str(REPO.parent / "shared" / "data"))}


def run_script_process(*args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` from the clone, in a process of its own."""
    env = {**os.environ, **script_environment()}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=HANG_SECONDS
    )


def run_script(script: str, *args: str) -> Finished:
    """``python SCRIPT ARGS`` from the clone, run in this process (:func:`run_here`) with the same
    ``LEBM_DATA``."""
    return run_here(script, *args, env=script_environment())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # docs/: a folder every clone has (runs/ exists only once a run made it)
        (["experiments/anomaly_sigma.py", "docs", "--sigmas", "-1"], "argument --sigmas: must be a finite number > 0"),
        (["experiments/mnist_anomaly_offline.py", "--max-steps", "0"], "argument --max-steps: must be a whole number"),
        (["experiments/anomaly_protocols.py", "no/such/run"], "argument run: no folder no/such/run"),
        (
            ["experiments/probe_offline.py", "--recipe", "recipes/quickstart.yaml"],
            "recipes/quickstart.yaml has no lebm.callbacks.LatentProbe among its trainer.callbacks",
        ),
    ],
)
def test_a_script_refuses_before_it_trains(args: list[str], message: str) -> None:
    finished = run_script(*args)
    assert finished.returncode == 2 and message in finished.stderr, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr


def test_a_script_run_as_a_command_refuses_in_one_line_before_it_trains() -> None:
    """CPU. The script as a user runs it, ``python experiments/mnist_anomaly_offline.py``, in a
    process of its own: its neighbours import from its folder, and the refusal is one line."""
    finished = run_script_process("experiments/mnist_anomaly_offline.py", "--max-steps", "0")
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "argument --max-steps: must be a whole number" in finished.stderr and "Traceback" not in finished.stderr
    assert finished.stderr.count("error:") == 1, finished.stderr[-2000:]


def test_the_sigma_script_refuses_a_run_that_is_no_anomaly_run_or_lies_outside_runs(tmp_path: Path) -> None:
    """CPU. A quickstart run (no anomaly_classes) is named, not a ``KeyError``; an anomaly run folder
    outside ``runs/`` asks for --output and --setting, not pathlib's "is not in the subpath"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  class_path: lebm.data.ImageDataModule\n  init_args: {dataset: digits}\n")
    finished = run_script("experiments/anomaly_sigma.py", str(run), "--sigmas", "0.1")
    assert finished.returncode == 2 and "Traceback" not in finished.stderr, finished.stderr[-2000:]
    assert (
        "is not an MNIST anomaly run (its data, lebm.data.ImageDataModule, holds no anomaly_classes)" in finished.stderr
    )
    (run / "config.yaml").write_text(
        "data:\n  class_path: lebm.data.MNISTAnomalyDataModule\n  init_args: {anomaly_classes: [1]}\n"
    )
    finished = run_script("experiments/anomaly_sigma.py", str(run), "--sigmas", "0.1")
    assert finished.returncode == 2 and "Traceback" not in finished.stderr, finished.stderr[-2000:]
    assert "is not a run folder under" in finished.stderr and "give --output and --setting" in finished.stderr


def test_the_validation_noise_script_names_a_run_of_another_method(tmp_path: Path) -> None:
    """CPU. A DAMC run given to the quickstart's noise study is named in one line, not "train longer"."""
    run = tmp_path / "damc_run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  class_path: lebm.models.DAMC\n")
    finished = run_script("experiments/quickstart_validation_noise.py", "--run", str(run))
    assert finished.returncode == 2 and "Traceback" not in finished.stderr, finished.stderr[-2000:]
    assert "is a run of lebm.models.DAMC: this script measures the LatentEBM quickstart's curve" in finished.stderr


def test_the_data_gap_pairs_records_of_one_recipe_and_seed_only() -> None:
    """A record of another seed or recipe is no data-gap pair: refused, naming both."""
    load_script("experiments/mnist_anomaly_offline.py")
    gap = load_script("experiments/anomaly_data_gap.py")
    default = "recipes/latent_ebm/mnist_anomaly_offline.yaml"
    offline = {"command": "python experiments/mnist_anomaly_offline.py --digits 1"}
    full = {"command": "python experiments/mnist_anomaly_offline.py --digits 1 --pool full --max-steps 1060"}
    assert gap.check_same_run_settings(full, offline, default) == default
    seeded = {"command": full["command"] + " --set seed_everything=7"}
    with pytest.raises(gap.ScriptError, match=r"seed 7, the offline pool's .* seed the recipe's"):
        gap.check_same_run_settings(seeded, offline, default)
    other = {"command": full["command"] + " --recipe recipes/hierarchical/mnist_anomaly_offline.yaml"}
    with pytest.raises(gap.ScriptError, match=r"ran recipe recipes/hierarchical/mnist_anomaly_offline.yaml"):
        gap.check_same_run_settings(other, offline, default)


class _SplitReader:
    """A stand-in Trainer whose ``validate`` and ``test`` each answer with their own figures."""

    def validate(self, model, datamodule, verbose):
        return [{"val/auprc": 0.25, "val/auroc": 0.5, "val/auprc_best_of": 0.9}]

    def test(self, model, datamodule, verbose):
        return [{"test/auprc": 0.75, "test/auroc": 0.8}]


def test_the_sigma_reading_reads_validation_on_validate_and_test_on_test(monkeypatch) -> None:
    """CPU. ``anomaly_sigma.read_split`` asks the Trainer's ``validate`` for "val" and its ``test`` for
    "test", keeping the AUPRC and AUROC figures (not the best-of reading)."""
    sigma = load_script("experiments/anomaly_sigma.py")
    monkeypatch.setattr(sigma, "anomaly_trainer", lambda digit: _SplitReader())
    monkeypatch.setattr(sigma, "build", lambda config: None)
    assert sigma.read_split(None, {}, 1, "val") == {"auprc": 0.25, "auroc": 0.5}
    assert sigma.read_split(None, {}, 1, "test") == {"auprc": 0.75, "auroc": 0.8}


def test_a_sigma_record_scores_with_the_sigma_it_names() -> None:
    """CPU. The 0.1.0 LatentEBM checkpoint (trained with sigma 0.3) read with sigma 0.1: the model
    each split is read with has decoder sigma 0.1, validation is read before test, and the record
    names 0.3 as trained and 0.1 as scored, its ``value`` the validation AUPRC and ``test_auprc``
    the test split's."""
    sigma = load_script("experiments/anomaly_sigma.py")
    checkpoint = REPO / "tests" / "fixtures" / "checkpoints" / "latent_ebm.ckpt"
    asked = []

    def read(model, stage: str) -> dict[str, float]:
        asked.append((stage, model.decoder.sigma))
        return {"auprc": {"val": 0.2, "test": 0.6}[stage], "auroc": {"val": 0.4, "test": 0.7}[stage]}

    assert lebm.load(str(checkpoint)).decoder.sigma == 0.3  # trained with 0.3: scoring must change it
    validation, tested = sigma.read_with_sigma(str(checkpoint), 0.1, read, validates_on_test=False)
    assert asked == [("val", 0.1), ("test", 0.1)]
    fields = sigma.sigma_fields("run", 0.3, 0.1, validation, tested, validates_on_test=False)
    assert fields["trained_sigma"] == 0.3 and fields["scored_sigma"] == 0.1
    assert fields["setting"] == "run, scored with sigma 0.1"
    assert (fields["value"], fields["val_auroc"]) == (0.2, 0.4)
    assert (fields["test_auprc"], fields["test_auroc"]) == (0.6, 0.7)
    assert fields["split"] == "validation (disjoint from test)"
    asked.clear()
    validation, tested = sigma.read_with_sigma(str(checkpoint), 0.1, read, validates_on_test=True)
    assert asked == [("val", 0.1)] and tested == validation  # a run that validated on test reads it once


def test_the_validation_noise_script_counts_reversals_and_reads_every_10th_epoch_by_phase() -> None:
    """CPU. A zigzag reverses at every change, a steady climb never; phase 9 reads epochs 19, 29,
    ... (its first reading, epoch 9, is the warm-up it leaves out); a plateau of 39 readings is too
    short for 20 pairs at a lag of 20 and is refused in one line."""
    noise = load_script("experiments/quickstart_validation_noise.py")
    assert noise.reversals([1.0, 3.0, 2.0, 4.0, 3.0]) == 3 and noise.reversals([1.0, 2.0, 3.0, 4.0]) == 0
    readings = {epoch: float(epoch) for epoch in range(40)}
    phases = noise.every_10th(readings)
    assert phases[9]["readings"] == [19.0, 29.0, 39.0] and phases[9]["reversals"] == 0
    zigzag = {epoch: 30.0 + 2.0 * ((epoch // 10) % 2) for epoch in range(100)}  # a 20-epoch square wave
    assert noise.plateau_summary(zigzag, 20)["autocorrelation"]["10"] < -0.1  # a 20-epoch period shows at lag 10
    with pytest.raises(noise.ScriptError, match="39 readings from epoch 20 on: a lag of 20 needs 40"):
        noise.plateau_summary({epoch: 1.0 for epoch in range(59)}, 20)


def test_the_selections_script_fits_with_its_checkpoint_cadence_and_scores_under_its_experiment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CPU. ``anomaly_selections.py``'s two commands, as it would run them: the fit keeps a
    checkpoint every ``--every`` updates for ``--max-steps`` updates on the held-out digit and seed,
    into the run folder the scoring reads, and the scoring records under its own experiment. The
    script's root is this test's folder (the run folder's ``fit_arguments.json`` lands there)."""
    selections = load_script("experiments/anomaly_selections.py")
    monkeypatch.setattr(selections, "REPO", tmp_path)
    commands: list[list[str]] = []
    monkeypatch.setattr(selections, "run_lebm", lambda command, what="lebm": commands.append(list(command)))
    monkeypatch.setattr(selections, "render_results_md", lambda: None)
    monkeypatch.setenv("LEBM_DATA", "data")
    arguments = ["--recipe", "recipes/hierarchical/mnist_anomaly_offline.yaml", "--digit", "7", "--seed", "2"]
    monkeypatch.setattr(sys, "argv", ["anomaly_selections.py", *arguments, "--max-steps", "300", "--every", "100"])
    selections.main()
    fit, scoring = commands
    assert fit[fit.index("-c") + 3] == "recipes/evaluation/checkpoints_every_100.yaml"
    assert fit[fit.index("--trainer.max_steps") + 1] == "300" and fit[fit.index("--seed_everything") + 1] == "2"
    assert fit[fit.index("--data.init_args.anomaly_classes") + 1] == "[7]"
    run = fit[fit.index("--trainer.default_root_dir") + 1]
    assert run.endswith("runs/hierarchical/mnist_anomaly_selections/digit7-seed2")
    assert scoring[2] == "runs/hierarchical/mnist_anomaly_selections/digit7-seed2"
    assert scoring[scoring.index("--experiment") + 1] == "mnist_anomaly_selections"
    kept = json.loads((tmp_path / scoring[2] / "fit_arguments.json").read_text())
    assert kept == {"fit_args": [], "recipe": "recipes/hierarchical/mnist_anomaly_offline.yaml"}


def test_the_no_model_script_reads_the_whole_pool_and_the_held_out_digit_as_the_anomaly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CPU. ``anomaly_no_model.py``'s ``main()`` on tiny MNIST files (labels cycling 0-9): each split's
    chance is the held-out digit's share (every 4 of the files, in the pool; not the normal
    digits'), and the evaluation pool's record reads the validation and test splits together (the
    papers' test split), not the test split alone."""
    from tests.helpers.dataset_files import write_idx_splits, write_mnist_csv

    arrays = write_idx_splits(tmp_path / "mnist", n_train=200, n_test=100, compress=True, seed=0)
    write_mnist_csv(tmp_path / "mnist" / "mnist_5k.csv.gz", *arrays["train"], header=False)
    no_model = load_script("experiments/anomaly_no_model.py")
    monkeypatch.setattr(no_model, "render_results_md", lambda: None)
    monkeypatch.setenv("LEBM_DATA", str(tmp_path))
    output = tmp_path / "no_model.json"
    arguments = ["--digits", "4", "--pools", "full", "--output", str(output)]
    monkeypatch.setattr(sys, "argv", ["anomaly_no_model.py", *arguments])
    no_model.main()
    records = {record["setting"]: record for record in json.loads(output.read_text())}
    pool, val, test = (records[name] for name in no_model.SPLITS)
    assert pool["n_examples"] == val["n_examples"] + test["n_examples"] and test["n_examples"] < pool["n_examples"]
    fours = sum(int((labels == 4).sum()) for _, labels in arrays.values())  # every 4 is evaluated, none trained on
    assert pool["chance"] == round(fours / pool["n_examples"], 4) < 0.5  # inverted targets: the normal digits' share
    for record in (val, test):
        assert 0 < record["chance"] < 0.5 and record["digit"] == 4 and record["pool"] == "full"


class _TwoSplits:
    """A DataModule stand-in whose validation and test splits differ (3 and 2 images)."""

    anomaly_classes = [4]

    def setup(self, stage: str) -> None:
        self.stage = stage

    def val_dataloader(self) -> list:
        return [(torch.ones(3, 1, 2, 2), torch.tensor([1, 1, 4]))]

    def test_dataloader(self) -> list:
        return [(torch.zeros(2, 1, 2, 2), torch.tensor([4, 1]))]


def test_the_score_variant_script_reads_the_split_it_is_asked_for(tmp_path: Path, monkeypatch) -> None:
    """CPU. ``anomaly_gap.evaluation_split`` reads the run's validation split for ``"val"`` (where a
    score is chosen) and its test split for ``"test"``, the held-out digit marked in each."""
    gap = load_script("experiments/anomaly_gap.py")
    (tmp_path / "config.yaml").write_text("data:\n  class_path: x\n  init_args: {}\n")
    monkeypatch.setenv("LEBM_DATA", str(tmp_path))
    monkeypatch.setattr(gap, "build", lambda config: _TwoSplits())
    images, held_out, digit = gap.evaluation_split(tmp_path, "val")
    assert images.shape[0] == 3 and held_out.tolist() == [False, False, True] and digit == 4
    images, held_out, _ = gap.evaluation_split(tmp_path, "test")
    assert images.shape[0] == 2 and held_out.tolist() == [True, False]
