"""docs/results.md is generated from the JSON records, and every record has the required fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def test_results_markdown_is_generated_from_the_records() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/make_results_md.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_records_have_the_required_fields() -> None:
    for path in [*REPO.glob("docs/results/*.json"), *REPO.glob("docs/results/published/*.json")]:
        for record in json.loads(path.read_text()):
            for key in ("method", "experiment", "metric", "value"):
                assert key in record, (path.name, key)
            assert isinstance(record["value"], (int, float))


def test_generator_renders_paper_values_next_to_ours(tmp_path: Path) -> None:
    make_results_md = load_script("scripts/make_results_md.py")

    ours = [
        {
            "method": "LatentEBM",
            "experiment": "mnist_anomaly_offline",
            "metric": "auprc",
            "digit": 1,
            "value": 0.25,
            "std": 0.01,
            "command": "cmd",
            "device": "cpu",
            "date": "2026-11-21",
        }
    ]
    published = [
        {"method": "LEBM", "experiment": "mnist_anomaly", "metric": "auprc", "digit": 1, "value": 0.336, "std": 0.008}
    ]
    text = make_results_md.render(ours, published)
    row = next(line for line in text.splitlines() if line.startswith("| LatentEBM"))
    assert "0.250 ± 0.010" in row and "0.336 ± 0.008" in row


def test_generator_renders_the_auprc_curve_of_records_that_keep_it() -> None:
    make_results_md = load_script("scripts/make_results_md.py")

    record = {"method": "JointHierarchicalEBM", "experiment": "mnist_anomaly_offline", "metric": "auprc"}
    ours = [{**record, "digit": 4, "value": 0.6, "auprc_by_epoch": [0.5, 0.6]}, {**record, "digit": 9, "value": 0.4}]
    lines = make_results_md.render(ours, []).splitlines()
    assert "| method | digit | epoch 1 | epoch 2 |" in lines
    assert "| JointHierarchicalEBM | 4 | 0.500 | 0.600 |" in lines
    assert not any(
        line.startswith("| JointHierarchicalEBM | 9 | 0.") for line in lines[lines.index("AUPRC after each epoch:") :]
    )


def test_the_terms_of_the_score_and_a_test_split_read_once_get_their_own_columns() -> None:
    make_results_md = load_script("scripts/make_results_md.py")

    record = {"method": "JointHierarchicalEBM", "experiment": "mnist_anomaly_selection", "metric": "auprc"}
    ours = [
        {**record, "digit": 1, "setting": "base", "value": 0.3, "auprc_prior_term": 0.71, "test_auprc": 0.29},
        {**record, "digit": 1, "setting": "gfactor1", "value": 0.5, "auprc_reconstruction_term": 0.42},
    ]
    lines = make_results_md.render(ours, []).splitlines()
    header = next(line for line in lines if line.startswith("| method | digit | metric"))
    assert "| reconstruction term | prior term | test |" in header
    rows = [line for line in lines if line.startswith("| JointHierarchicalEBM (")]
    assert rows[0].startswith("| JointHierarchicalEBM (base) | 1 | auprc | 0.300 | – | 0.710 | 0.290 |")
    assert rows[1].startswith("| JointHierarchicalEBM (gfactor1) | 1 | auprc | 0.500 | 0.420 | – | – |")


def test_a_record_replaces_its_own_earlier_version_only(tmp_path: Path) -> None:
    save_record = load_script("experiments/mnist_anomaly_offline.py").save_record

    output = tmp_path / "records.json"
    identity = lambda r: (r["digit"], r["metric"], r.get("setting"))  # noqa: E731
    base = {"method": "M", "experiment": "e", "metric": "auprc"}
    save_record(output, {**base, "digit": 1, "setting": "a", "value": 0.1}, identity)
    save_record(output, {**base, "digit": 1, "setting": "b", "value": 0.2}, identity)
    save_record(output, {**base, "digit": 1, "setting": "a", "value": 0.3}, identity)
    records = json.loads(output.read_text())
    assert [(r["setting"], r["value"]) for r in records] == [("a", 0.3), ("b", 0.2)]


def test_a_record_keeps_each_terms_mean_of_the_last_evaluations_and_its_curve() -> None:
    """CPU. The anomaly runner reads the callback's state: each term's AUPRC is averaged over the
    same last k evaluations as the whole score's, and its per-epoch values are kept."""
    term_summaries = load_script("experiments/mnist_anomaly_offline.py").term_summaries

    state = {"history": [0.1, 0.2, 0.3], "term_history": {"prior_term": [0.9, 0.5, 0.7], "reconstruction_term": [0.2]}}
    summaries = term_summaries(state, k=2)
    assert summaries["auprc_prior_term"] == 0.6 and summaries["auprc_reconstruction_term"] == 0.2
    assert summaries["term_auprc_by_epoch"] == {"prior_term": [0.9, 0.5, 0.7], "reconstruction_term": [0.2]}
    assert term_summaries({"history": [0.5]}, k=3) == {}  # a method whose score has no terms


def test_runners_read_the_newest_last_checkpoint_not_a_stale_one(tmp_path: Path) -> None:
    """CPU. A fresh fit into a folder that still holds another process's ``last.ckpt`` saves its own
    as ``last-v1.ckpt``; the experiment runners must read that one."""
    import os

    newest_last_checkpoint = load_script("experiments/records.py").newest_last_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale, fresh, epoch = folder / "last.ckpt", folder / "last-v1.ckpt", folder / "epoch=9-step=90.ckpt"
    for age, path in ((300, stale), (100, fresh), (0, epoch)):
        path.write_bytes(b"")
        os.utime(path, (1e9 - age, 1e9 - age))
    assert newest_last_checkpoint(tmp_path) == fresh
    os.utime(stale, (2e9, 2e9))  # the other way round: the plain name is the newer one
    assert newest_last_checkpoint(tmp_path) == stale
    with pytest.raises(SystemExit, match="no last"):
        newest_last_checkpoint(tmp_path / "elsewhere")


def test_a_rescored_dual_mcmc_record_keeps_the_command_that_fitted_its_run() -> None:
    """CPU. ``dual_mcmc_mnist.py --skip-fit`` re-scores a run it did not fit: its records name the
    earlier records' fit command, whether those fitted the run or were themselves re-scores."""
    fit_command = load_script("experiments/dual_mcmc_mnist.py").fit_command

    fitted = [{"metric": "fid_raw", "command": "python experiments/dual_mcmc_mnist.py -- --trainer.max_epochs 6"}]
    assert fit_command(fitted) == fitted[0]["command"]
    rescored = [{"metric": "fid_raw", "command": "python experiments/dual_mcmc_mnist.py --skip-fit"}]
    assert fit_command(rescored) is None
    assert fit_command([{**rescored[0], "fit_command": fitted[0]["command"]}]) == fitted[0]["command"]


def test_a_record_holds_both_readings_and_the_papers_last_10(tmp_path: Path) -> None:
    """Device: CPU. From the callback's histories: average precision and trapezoid over the
    recipe's last k, and both over the last 10 (the papers' reading); the split and its overlap
    get their own columns, and a cited-split row is labelled as such."""
    make_results_md = load_script("scripts/make_results_md.py")
    readings = load_script("experiments/mnist_anomaly_offline.py").readings

    history = [0.1 * i for i in range(12)]  # 0.0 ... 1.1
    state = {"history": history, "trapezoid_history": [v + 0.01 for v in history]}
    summary = readings(state, 3)
    assert summary["value"] == pytest.approx(1.0) and summary["n_evaluations"] == 3
    assert summary["auprc_trapezoid"] == pytest.approx(1.01)
    papers = summary["papers_reading"]
    assert papers["n_evaluations"] == 10 and papers["auprc"] == pytest.approx(0.65)
    assert papers["auprc_trapezoid"] == pytest.approx(0.66) and papers["auprc_std"] == pytest.approx(0.2872, abs=1e-4)
    record = {"method": "LatentEBM", "experiment": "mnist_anomaly_protocol", "metric": "auprc", "digit": 4}
    ours = [{**record, **summary, "data_split": "cited", "test_overlap": 0.51}]
    lines = make_results_md.render(ours, []).splitlines()
    header = next(line for line in lines if line.startswith("| method | digit | metric"))
    assert "| trapezoid AUPRC | last 10: AP | last 10: trapezoid | test split in training |" in header
    row = next(line for line in lines if line.startswith("| LatentEBM [cited split] | 4 |"))
    assert "| 1.010 | 0.650 | 0.660 | 0.510 |" in row
