"""The benchmark scripts run on the quickstart recipes and print the JSON they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lebm.cli.recipes import RecipeError
from tests.helpers.scripts import load_script, printed_here, run_here, run_json
from tests.helpers.subprocesses import HANG_SECONDS
from tests.helpers.trainers import quiet_trainer

REPO = Path(__file__).resolve().parents[1]

#: A benchmark run by a test computes on one torch thread (``OMP_NUM_THREADS``, which torch reads at
#: start): a test checks what the script prints, not its speed, and on a 2-core machine running two
#: test workers a second thread per script only spins, costing CPU time.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_script(*args: str) -> subprocess.CompletedProcess:
    """``python *args`` in the repository, on one thread; its exit status, output and errors."""
    env = {**os.environ, **ONE_THREAD}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_SECONDS
    )


def run_json_in_a_process(*args: str) -> dict:
    """The last line a script prints, as JSON, run in a process of its own (the script must exit with
    status 0): for a script that starts processes, or one that must see the GPU."""
    result = run_script(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_step_times_a_chosen_stage_of_multistage_nce() -> None:
    out = run_json(
        "benchmarks/train_step.py",
        "--recipe",
        "recipes/multistage_nce/quickstart.yaml",
        *("--iters", "1", "--warmup", "0", "--batch-size", "4"),
        "--stage",
        "2",
    )
    assert out["method"] == "MultiStageNCE" and out["stage"] == 2 and out["n_stages"] == 4
    assert out["sec_per_iter"] > 0 and out["observation_shape"] == [1, 8, 8]


@pytest.mark.slow
def test_train_step_splits_a_dual_mcmc_iteration_into_its_chains_and_the_rest() -> None:
    out = run_json(
        "benchmarks/train_step.py",
        "--recipe",
        "recipes/dual_mcmc/quickstart.yaml",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "4",
        "--split",
    )
    split = out["split_sec_per_iter"]
    assert out["method"] == "DualMCMC" and set(split) == {"data_sampler", "posterior_sampler", "updates_and_rest"}
    assert all(value > 0 for value in split.values())
    # two data chains of 30 steps against one posterior chain of 10: the data chains cost more
    assert split["data_sampler"] > split["posterior_sampler"]
    assert sum(split.values()) == pytest.approx(out["sec_per_iter"], rel=0.01)


@pytest.mark.slow
def test_prior_chain_times_every_stage() -> None:
    out = run_json("benchmarks/prior_chain.py", "--recipe", "recipes/multistage_nce/quickstart.yaml", "--repeats", "1")
    assert list(out["sec_per_chain"]) == ["stage_0", "stage_1", "stage_2", "stage_3"]
    assert all(seconds > 0 for seconds in out["sec_per_chain"].values())


@pytest.mark.slow
def test_train_step_runs_the_hierarchical_svhn_recipe() -> None:
    """The official 5-layer SVHN model (55M-parameter generator) at a tiny batch: the prior chain and the rest."""
    out = run_json(
        "benchmarks/train_step.py",
        "--recipe",
        "recipes/hierarchical/svhn.yaml",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "2",
        "--split",
    )
    assert (
        out["method"] == "JointHierarchicalEBM" and out["observation_shape"] == [3, 32, 32] and out["latent_dim"] == 50
    )
    assert set(out["split_sec_per_iter"]) == {"prior.sampler", "updates_and_rest"}


@pytest.mark.slow
def test_train_step_runs_a_recipe_whose_nets_hold_batch_norm() -> None:
    """CPU. The VLAE-structured MNIST nets normalise over the batch: the benchmark must read the
    observation shape without a batch of one in train mode (BatchNorm refuses it)."""
    out = run_json(
        "benchmarks/train_step.py",
        "--recipe",
        "recipes/hierarchical/mnist_anomaly_offline.yaml",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "4",
    )
    assert out["method"] == "JointHierarchicalEBM" and out["observation_shape"] == [1, 28, 28]
    assert out["latent_dim"] == 6 and out["sec_per_iter"] > 0


@pytest.mark.slow
def test_dual_mcmc_reduces_each_of_its_three_nets_once_per_iteration_under_ddp() -> None:
    """Three optimisers, three backward passes: only the stepped nets' gradients travel, once each
    (a DistributedDataParallel wrapper would all-reduce every net at each of the three passes)."""
    out = run_json_in_a_process(
        "benchmarks/ddp_bytes.py", "--recipe", "recipes/dual_mcmc/quickstart.yaml", "--iters", "2", "--batch-size", "2"
    )
    assert out["processes"] == 2 and out["backward_passes"] == 3
    assert out["minimum_bytes"] <= out["collective_bytes"] <= out["minimum_bytes"] + 64, out
    assert out["plain_ddp_over_minimum"] == 3.0


@pytest.mark.slow
def test_suite_writes_a_json_and_a_markdown_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU. The suite's own work (the row's command, the ratios, the two files) runs in this process
    (it only gathers); its row runs, as always, in a fresh ``train_step.py`` process, on one thread."""
    suite = load_script("benchmarks/suite.py")
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)
    arguments = [
        *("--only", "latent_ebm", "--paths", "eager", "--iters", "1", "--warmup", "0"),
        *("--cpu-batch-size", "2", "--generate", "4", "--out", str(tmp_path)),
    ]
    monkeypatch.setattr(sys, "argv", ["suite.py", *arguments])
    suite.main()
    (table,) = tmp_path.glob("suite-*.md")
    (record,) = tmp_path.glob("suite-*.json")
    rows = json.loads(record.read_text())["rows"]
    assert rows[0]["method"] == "LatentEBM" and rows[0]["batch_size"] == 2 and rows[0]["sec_per_iter"] > 0
    assert rows[0]["generate_samples_per_sec"] > 0 and rows[0]["baseline_sec_per_iter"] > 0
    assert rows[0]["speedup_vs_eager"] == 1.0 and rows[0]["speedup_vs_plain_loop"] > 0
    assert rows[0]["chain_calls"] == {"captures": 0, "replays": 0, "eager_calls": 0}  # CPU: no capture machinery
    assert "| `recipes/latent_ebm/svhn.yaml` | eager | 2 |" in table.read_text()


def test_train_step_names_the_device_the_iterations_ran_on_not_where_fit_left_the_model(monkeypatch, capsys) -> None:
    """Lightning moves the model back to the CPU when fit ends; the label, the baseline and the
    generate timing must use the device of the timed iterations. Here the model reports the meta
    device after fit, so any reading of ``model.device`` taken afterwards would say "meta" (or fail)."""
    train_step = load_script("benchmarks/train_step.py")

    class SendAwayAtTheEnd(L.Callback):
        def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            pl_module._device = torch.device("meta")  # what model.device reports from now on

    original = train_step.bare_trainer
    monkeypatch.setattr(
        train_step,
        "bare_trainer",
        lambda **kw: original(**{**kw, "callbacks": [*kw["callbacks"], SendAwayAtTheEnd()]}),
    )
    monkeypatch.setattr(
        sys,
        "argv",
        ["train_step.py", "--recipe", "recipes/quickstart.yaml", "--iters", "1", "--warmup", "0"]
        + ["--baseline", "--generate", "4", "--accelerator", "cpu"],
    )
    train_step.main()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["device"].startswith("cpu (") and out["baseline_sec_per_iter"] > 0
    assert out["generate_samples_per_sec"] > 0 and out["chain_capture"] == "on"


@pytest.mark.gpu
def test_on_a_gpu_train_step_labels_the_gpu_times_the_plain_loop_there_and_replays_its_chains() -> None:
    """Device: CUDA. The GPU's name, its memory and the plain loop on the same GPU (issue 23's
    misreported runs said "cpu" and timed the loop on the CPU)."""
    out = run_json_in_a_process(
        "benchmarks/train_step.py",
        *("--recipe", "recipes/latent_ebm/svhn.yaml", "--iters", "3", "--warmup", "2", "--batch-size", "16"),
        "--baseline",
    )
    assert out["device"] == torch.cuda.get_device_name(0)
    assert out["chain_calls"]["replays"] >= 6 and out["chain_calls"]["eager_calls"] == 0
    assert 0 < out["peak_mem_mb"] < torch.cuda.get_device_properties(0).total_memory / 2**20
    assert out["baseline_sec_per_iter"] > 0


@pytest.mark.slow
def test_conv_ceiling_times_each_generator_convolution_against_sgemm() -> None:
    out = run_json(
        "benchmarks/conv_ceiling.py",
        "--recipe",
        "recipes/latent_ebm/svhn.yaml",
        "--batch-size",
        "2",
        "--repeats",
        "1",
        "--gemm-size",
        "128",
    )
    layers = out["layers"]
    assert list(layers) == ["net.0", "net.2", "net.4", "net.6"]  # LEBM's four transposed convolutions
    # forward + input gradient of ConvTranspose2d(512, 256, 4, stride 2) on 4x4 inputs: 2 x 2*B*Cin*H*W*Cout*16
    assert layers["net.2"]["gflop"] == pytest.approx(2 * 2 * 2 * 512 * 16 * 256 * 16 / 1e9, abs=1e-3)
    assert out["chain_step"]["gflop"] == pytest.approx(sum(v["gflop"] for v in layers.values()), abs=2e-3)
    assert out["sgemm_gflops"] > 0 and out["conv_share_of_sgemm"] > 0
    assert sum(v["share_of_layer_time"] for v in layers.values()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_fid_layout_times_both_layouts_and_finds_the_same_features() -> None:
    """CPU, needs the offline Inception weights. Channels-last Inception (lebm's) gives the
    contiguous network's features to float rounding, and the benchmark times both."""
    import os

    weights = os.path.expandvars("$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth")
    if not os.environ.get("LEBM_DATA") or not os.path.isfile(weights):
        pytest.skip("LEBM_DATA holds no offline Inception weights")
    report = run_json("benchmarks/fid_layout.py", "--images", "4", "--batch-size", "2", "--threads", "1")
    assert report["benchmark"] == "fid_layout" and report["images"] == 4
    assert set(report["seconds_per_100"]) == {"channels_last", "contiguous"}
    assert all(seconds > 0 for seconds in report["seconds_per_100"].values())
    assert 0 < report["max_abs_feature_difference"] < 1e-4  # another layout, not another network


# -- benchmarks/gpu_check.py: the one command for a lent GPU machine (these tests are CPU-only) --


def test_gpu_check_without_cuda_exits_at_once_with_status_2_and_runs_nothing(tmp_path) -> None:
    """Device: CPU (conftest hides any GPU from the subprocess). No test, no training, no file: the
    refusal says nothing was run, and nothing was written (no wall-clock bound: a busy machine)."""
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "out"), "--budget", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "no CUDA device" in result.stderr and "nothing was run" in result.stderr
    assert "pytest" not in result.stderr and "Epoch" not in result.stderr  # no tier, no training started
    assert not (tmp_path / "out").exists() and result.stdout == ""


def test_gpu_check_refuses_a_path_the_suite_does_not_time_naming_the_known_ones(monkeypatch, capsys) -> None:
    """Device: CPU, as if it had CUDA (``no_cuda_message`` patched). The paths are checked after the
    CUDA check, which stays at once; an unknown one stops the check before anything runs."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    load_script("benchmarks/suite.py")
    monkeypatch.setattr(gpu_check, "no_cuda_message", lambda: None)
    monkeypatch.setattr(gpu_check, "run_check", lambda args: pytest.fail("the check ran"))
    assert gpu_check.main(["--paths", "eager,compiled"]) == 2
    error = capsys.readouterr().err
    assert "unknown paths ['compiled']" in error and "captured_bf16" in error
    assert gpu_check.unknown_paths("eager,recorded") is None


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="1" tests="6">
 <testcase classname="tests.test_gpu_tier" name="test_bf16_mixed_trains_a_method_on_the_gpu" time="9.1"/>
 <testcase classname="tests.models.test_chain_graphs_cuda" name="test_replay[recipes/quickstart.yaml]" time="1.0">
  <failure message="AssertionError: replay differs from eager&#10;assert 0.1 &lt; 1e-06">long traceback</failure>
 </testcase>
 <testcase classname="tests.test_gpu_tier.TestGroup" name="test_in_a_class" time="0.1">
  <failure message="">

RuntimeError: CUDA error: an illegal memory access
more lines</failure>
 </testcase>
 <testcase classname="tests.test_gpu_tier" name="test_fixture_breaks" time="0.0">
  <error message="failed on setup with &quot;OSError: no data&quot;">trace</error>
 </testcase>
 <testcase classname="tests.test_gpu_tier" name="test_two_gpus" time="0.0">
  <skipped type="pytest.skip" message="needs two GPUs">skip</skipped>
 </testcase>
 <testcase classname="tests.test_benchmarks" name="test_on_a_gpu_train_step" time="3.0"/>
 <testcase classname="" name="tests.test_loggers" time="0.0"><skipped message="collection skipped"/></testcase>
 <testcase time="0.002"/>
</testsuite></testsuites>
"""


def test_gpu_check_reads_a_junit_report_into_counts_and_failing_ids_with_their_first_message_line(tmp_path) -> None:
    """Device: CPU. Ids in pytest's form (file, class, test, parameters), messages cut to one line; the
    nameless entry pytest writes for a test an interrupt stopped (seen on the H100) is no pass."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    parsed = gpu_check.parse_junit(report)
    assert {k: parsed[k] for k in ("tests", "passed", "failed", "errors", "skipped", "incomplete")} == {
        "tests": 7,
        "passed": 2,
        "failed": 2,
        "errors": 1,
        "skipped": 2,
        "incomplete": 1,
    }
    assert parsed["failing"] == [
        {
            "id": "tests/models/test_chain_graphs_cuda.py::test_replay[recipes/quickstart.yaml]",
            "kind": "failure",
            "message": "AssertionError: replay differs from eager",
        },
        {
            "id": "tests/test_gpu_tier.py::TestGroup::test_in_a_class",
            "kind": "failure",
            "message": "RuntimeError: CUDA error: an illegal memory access",
        },
        {
            "id": "tests/test_gpu_tier.py::test_fixture_breaks",
            "kind": "error",
            "message": 'failed on setup with "OSError: no data"',
        },
    ]


def synthetic_suite_rows() -> list[dict]:
    """Suite rows as gpu_check keeps them, ratios already added: some targets met, some missed by a
    hair, one row failed, one skipped, one method absent (hierarchical)."""
    return [
        {"suite_method": "latent_ebm", "path": "eager", "sec_per_iter": 1.0, "peak_mem_mb": 1000.0},
        {"suite_method": "latent_ebm", "path": "captured", "speedup_vs_plain_loop": 5.0, "peak_mem_vs_eager": 1.6},
        {"suite_method": "latent_ebm", "path": "captured_bf16", "speedup_vs_plain_loop": 7.99, "sec_per_iter": 0.1},
        {"suite_method": "multistage_nce", "path": "eager", "error": ["RuntimeError: out of memory"]},
        {"suite_method": "multistage_nce", "path": "captured", "sec_per_iter": 0.2, "peak_mem_mb": 900.0},
        {"suite_method": "dual_mcmc", "path": "captured", "speedup_vs_eager": 3.0, "peak_mem_vs_eager": 1.5},
        {"suite_method": "dual_mcmc", "path": "captured_bf16", "sec_per_iter": 0.41, "error": "ran on cpu"},
        {"suite_method": "quickstart", "path": "captured", "skipped": "deadline: 3 s left"},
        {"suite_method": "latent_ebm", "path": "recorded", "speedup_vs_eager": 5.0, "sec_per_iter": 0.2},
        {"suite_method": "latent_ebm", "path": "recorded_bf16", "speedup_vs_recorded": 1.29, "sec_per_iter": 0.155},
        {"suite_method": "hierarchical", "path": "recorded", "speedup_vs_eager": 4.99},
        {"suite_method": "hierarchical", "path": "recorded_bf16", "speedup_vs_recorded": 1.3},
        {"suite_method": "dual_mcmc", "path": "recorded_bf16", "sec_per_iter": 0.42},
    ]


def test_gpu_check_scores_each_target_met_unmet_or_not_measured_from_the_suite_rows() -> None:
    """Device: CPU. Thresholds count as met when reached exactly; a missing, failed or skipped row, or
    a row whose ratio could not be formed (its eager row failed), is not measured (None), never met."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    quick = {"status": "completed", "epochs_timed": 10, "speedup_vs_reference": 5.0}
    tier = {"status": "completed", "junit": "gpu_junit.xml", "tests": 40, "passed": 39, "failed": 1, "errors": 0}
    targets = gpu_check.evaluate_targets(synthetic_suite_rows(), quick, {**tier, "skipped": 0})
    met = {name: entry["met"] for name, entry in targets.items()}
    assert met == {
        "latent_ebm_captured_vs_plain_loop": True,  # 5.0 >= 5
        "latent_ebm_captured_bf16_vs_plain_loop": False,  # 7.99 < 8
        "multistage_nce_captured_vs_eager": None,  # its eager row failed: no ratio
        "hierarchical_captured_vs_eager": None,  # no captured row
        "dual_mcmc_captured_bf16_sec_per_iter": None,  # the row holds an error
        "damc_captured_vs_eager": None,  # no DAMC row at all
        "damc_captured_bf16_vs_captured": None,
        "latent_ebm_peak_mem_captured_vs_eager": False,  # 1.6 > 1.5
        "multistage_nce_peak_mem_captured_vs_eager": None,
        "dual_mcmc_peak_mem_captured_vs_eager": True,  # 1.5 <= 1.5
        "hierarchical_peak_mem_captured_vs_eager": None,
        "quickstart_peak_mem_captured_vs_eager": None,  # skipped at the deadline
        "latent_ebm_recorded_vs_eager": True,  # 5.0 >= 5
        "multistage_nce_recorded_vs_eager": None,
        "dual_mcmc_recorded_vs_eager": None,
        "hierarchical_recorded_vs_eager": False,  # 4.99 < 5
        "damc_recorded_vs_eager": None,
        "latent_ebm_recorded_bf16_vs_recorded": False,  # 1.29 < 1.3
        "multistage_nce_recorded_bf16_vs_recorded": None,
        "hierarchical_recorded_bf16_vs_recorded": True,  # 1.3 >= 1.3
        "damc_recorded_bf16_vs_recorded": None,
        "dual_mcmc_recorded_bf16_sec_per_iter": False,  # 0.42 > 0.41
        "quickstart_epoch_vs_reference": True,  # 5.0 >= 5
        "gpu_tier_all_passing": False,  # one failure
    }
    assert targets["latent_ebm_captured_bf16_vs_plain_loop"] | {"what": None} == {
        "what": None,
        "value": 7.99,
        "threshold": 8.0,
        "compare": ">=",
        "met": False,
    }
    assert "failed" in targets["dual_mcmc_captured_bf16_sec_per_iter"]["reason"]
    assert "eager row" in targets["multistage_nce_peak_mem_captured_vs_eager"]["reason"]
    assert "skipped" in targets["quickstart_peak_mem_captured_vs_eager"]["reason"]
    assert "dual_mcmc_recorded_bf16_vs_recorded" not in targets  # DualMCMC's bf16 is scored in s/iter alone
    assert gpu_check.target_summary(targets) == {"met": 5, "unmet": 6, "not_measured": 13}
    # the DualMCMC row without its error: 0.41 s/iter is within "no slower than 0.41"
    rows = [{**r, "error": None} if r["path"] == "captured_bf16" else r for r in synthetic_suite_rows()]
    rows = [{k: v for k, v in r.items() if v is not None} for r in rows]
    assert gpu_check.evaluate_targets(rows, quick, tier)["dual_mcmc_captured_bf16_sec_per_iter"]["met"] is True
    # the quickstart and the tier: too few epochs, nothing passed, cut off clean, not run at all
    few = {"status": "cut_off", "epochs_timed": 1, "speedup_vs_reference": None}
    assert gpu_check.quickstart_target(few)["met"] is None and gpu_check.quickstart_target(None)["met"] is None
    all_skipped = {**tier, "passed": 0, "failed": 0, "skipped": 40}
    assert gpu_check.tier_target(all_skipped)["met"] is None
    assert gpu_check.tier_target({**tier, "failed": 0, "status": "cut_off", "skipped": 0})["met"] is None
    assert gpu_check.tier_target({**tier, "failed": 0, "skipped": 0})["met"] is True
    assert gpu_check.tier_target({"status": "cut_off", "junit": None})["met"] is None
    assert gpu_check.tier_target(None)["met"] is None


def damc_rows(eager: float | str, captured: float | str, bf16: float | str) -> list[dict]:
    """DAMC's three suite rows with their ratios as ``suite.add_ratios`` forms them: a number is the
    row's s/iter, ``"failed"`` or ``"skipped"`` what became of the row."""
    suite = load_script("benchmarks/suite.py")
    rows = []
    for path, outcome in (("eager", eager), ("captured", captured), ("captured_bf16", bf16)):
        row = {"suite_method": "damc", "recipe": "recipes/damc/svhn.yaml", "path": path}
        if outcome == "failed":
            row["error"] = ["RuntimeError: CUDA error"]
        elif outcome == "skipped":
            row["skipped"] = "deadline: 3 s left"
        else:
            row.update(device="GPU", sec_per_iter=outcome, peak_mem_mb=1000.0)
        rows.append(row)
    suite.add_ratios(rows)
    return rows


@pytest.mark.parametrize(
    ("outcomes", "captured_vs_eager", "bf16_vs_fp32"),
    [
        ((0.41, 0.1, 0.1), True, True),  # 4.1x; bf16 as fast as fp32 is not slower
        ((0.39, 0.1, 0.09), False, True),  # 3.9x
        ((0.41, 0.1, 0.101), True, False),  # bf16 1% slower
        (("failed", 0.1, 0.09), None, True),  # no eager row: no speed-up over it, bf16 still compared
        ((0.41, "skipped", 0.09), None, None),  # no captured fp32 row: neither target measured
        ((0.41, 0.1, "failed"), True, None),
    ],
)
def test_gpu_check_scores_damc_captured_against_eager_and_its_bf16_against_its_fp32(
    outcomes: tuple, captured_vs_eager: bool | None, bf16_vs_fp32: bool | None
) -> None:
    """Device: CPU. DAMC's captured fp32 iteration at least 4x its eager one, its captured bf16 one no
    slower than captured fp32; a target whose rows did not both run is not measured, never met."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    targets = gpu_check.evaluate_targets(damc_rows(*outcomes), None, None)
    speedup, bf16 = targets["damc_captured_vs_eager"], targets["damc_captured_bf16_vs_captured"]
    assert (speedup["met"], bf16["met"]) == (captured_vs_eager, bf16_vs_fp32)
    if outcomes[1] == "skipped":
        assert "captured row" in bf16["reason"] and "skipped" in speedup["reason"]
    if captured_vs_eager is not None:
        table = gpu_check.markdown({"targets": targets})
        mark = "yes" if captured_vs_eager else "**no**"
        assert f"(`damc_captured_vs_eager`) | {speedup['value']:.4g} | >= 4.0 | {mark} |" in table


def test_gpu_check_runs_each_methods_captured_and_recorded_rows_side_by_side_first_and_eager_rows_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device: CPU (the rows' processes replaced by a stand-in that spends 20 s of a fake deadline).
    Issue 106: the rows that decide a method's default, captured and recorded in one call, run first,
    pair by pair, DAMC first, every method (DAMC too) with the 10 timed iterations asked for; a pair
    starts only with time for both of its rows (25 s left after four rows: the next pair is skipped,
    not half run, and the time goes to DAMC's eager row, the first of the single rows); the rows come
    back method by method in the order of the paths, with their ratios."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    suite = load_script("benchmarks/suite.py")
    seconds = {"eager": 0.4, "captured": 0.08, "recorded": 0.07}

    class Deadline:
        budget = 4 * 20.0 + 25.0

        def left(self) -> float:
            return self.budget

    deadline = Deadline()
    ran = []

    def run_one(recipe: str, path: str, settings: Any, batch_size: int | None, log: Any) -> dict:
        ran.append((recipe, path, settings.iters, settings.warmup))
        deadline.budget -= 20.0
        return {"recipe": recipe, "path": path, "device": "GPU", "sec_per_iter": seconds[path], "peak_mem_mb": 1.0}

    monkeypatch.setattr(suite, "run_one", run_one)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "GPU")
    stage = gpu_check.suite_stage(tmp_path, deadline, 10, 1, 100, 100.0)
    assert ran == [
        ("recipes/damc/svhn.yaml", "captured", 10, 2),
        ("recipes/damc/svhn.yaml", "recorded", 10, 2),
        ("recipes/latent_ebm/svhn.yaml", "captured", 10, 1),
        ("recipes/latent_ebm/svhn.yaml", "recorded", 10, 1),
        ("recipes/damc/svhn.yaml", "eager", 10, 2),
    ]
    assert stage["rows_run"] == 5 and stage["rows_skipped"] == 6 * 5 - 5
    assert [(row["suite_method"], row["path"]) for row in stage["rows"][:5]] == [
        ("damc", path) for path in ("eager", "captured", "recorded", "captured_bf16", "recorded_bf16")
    ]
    damc_recorded = stage["rows"][2]
    assert damc_recorded["speedup_vs_captured"] == 1.143 and damc_recorded["speedup_vs_eager"] == 5.714
    for path in ("captured", "recorded", "eager"):
        assert "skipped" in gpu_check.find_row(stage["rows"], "multistage_nce", path)
    assert "skipped" in gpu_check.find_row(stage["rows"], "latent_ebm", "eager")


def test_gpu_check_times_five_paths_ten_iterations_a_row_and_gives_the_quickstart_time_for_both_runs() -> None:
    """Device: CPU. The defaults of issue 106: eager, captured and recorded, fp32 and bf16, for the
    five methods and the quickstart, 10 timed iterations a row (the fewest with which a record decides
    a default), and a quickstart stage long enough for two runs of 10 epochs whatever the budget."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    load_script("benchmarks/suite.py")
    rule = load_script("benchmarks/speed_defaults.py")
    args = gpu_check.parse_args([])
    assert args.paths.split(",") == ["eager", "captured", "recorded", "captured_bf16", "recorded_bf16"]
    assert set(gpu_check.PAPER_METHODS) <= set(args.methods.split(",")) and "quickstart" in args.methods
    assert args.suite_iters == gpu_check.SUITE_ITERS == rule.MIN_ITERS == 10
    assert not hasattr(gpu_check, "SUITE_ITERS_CAP")
    order = gpu_check.suite_order(("damc", "latent_ebm"), tuple(args.paths.split(",")))
    assert order == [
        [("damc", "captured"), ("damc", "recorded")],
        [("latent_ebm", "captured"), ("latent_ebm", "recorded")],
        [("damc", "captured_bf16"), ("damc", "recorded_bf16")],
        [("latent_ebm", "captured_bf16"), ("latent_ebm", "recorded_bf16")],
        [("damc", "eager")],
        [("latent_ebm", "eager")],
    ]
    assert gpu_check.suite_order(("damc",), ("eager", "recorded")) == [[("damc", "eager")], [("damc", "recorded")]]
    assert gpu_check.stage_caps(380)["quickstart"] == 100 and gpu_check.stage_caps(1000)["quickstart"] == 150
    assert gpu_check.stage_caps(540)["gpu_tier"] == 200


def test_gpu_check_times_the_quickstart_epochs_from_the_second_on() -> None:
    """Device: CPU. it/s per epoch from the epoch clock's record; the median leaves out epoch 1."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    epochs = [{"batches": 14, "train_seconds": 7.0, "epoch_seconds": 8.0}] + [
        {"batches": 14, "train_seconds": s, "epoch_seconds": s + 0.1} for s in (0.25, 0.28, 0.2)
    ]
    speeds = gpu_check.epoch_speeds({"epochs": epochs})
    assert speeds["it_per_sec"] == [2.0, 56.0, 50.0, 70.0]
    assert speeds["median_it_per_sec"] == 56.0 and speeds["speedup_vs_reference"] == round(56.0 / 9.6, 3)
    assert gpu_check.epoch_speeds({"epochs": epochs[:1]})["median_it_per_sec"] is None


def test_suite_gives_each_path_its_peak_memory_over_the_eager_paths() -> None:
    """Device: CPU. ``peak_mem_vs_eager`` on every row but the eager one, and a column for it."""
    suite = load_script("benchmarks/suite.py")
    common = {"recipe": "recipes/quickstart.yaml", "device": "GPU", "batch_size": 100}
    rows = [
        {**common, "path": "eager", "sec_per_iter": 2.0, "peak_mem_mb": 1000.0},
        {**common, "path": "captured", "sec_per_iter": 0.5, "peak_mem_mb": 1300.0},
        {**common, "path": "captured_bf16", "sec_per_iter": 0.25, "peak_mem_mb": 800.0},
        {"recipe": "recipes/quickstart.yaml", "path": "fast_bf16", "error": ["boom"]},
    ]
    suite.add_ratios(rows)
    assert "peak_mem_vs_eager" not in rows[0] and "peak_mem_vs_eager" not in rows[3]
    assert rows[1]["peak_mem_vs_eager"] == 1.3 and rows[2]["peak_mem_vs_eager"] == 0.8
    assert rows[1]["speedup_vs_eager"] == 4.0
    header = {"device": "GPU", "torch": "2", "date": "today", "iters": 1, "warmup": 0}
    table = suite.markdown(rows, header).splitlines()
    assert "memory / eager" in table[2] and table[5].split(" | ")[10] == "1.3"
    assert all(line.count("|") == table[2].count("|") for line in table[2:])


def test_gpu_check_prints_the_markdown_of_a_record_it_is_given(tmp_path) -> None:
    """Device: CPU (``--table`` needs no GPU). The targets and the suite's rows, as docs/performance.md takes them."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    load_script("benchmarks/suite.py")  # gpu_check's markdown imports it by name
    rows = [
        {"suite_method": "latent_ebm", "recipe": "recipes/latent_ebm/svhn.yaml", "path": "eager", "error": ["x"]},
        {"suite_method": "latent_ebm", "recipe": "recipes/latent_ebm/svhn.yaml", "path": "captured", "skipped": "late"},
    ]
    header = {"device": "GPU", "torch": "2", "date": "today", "iters": 5, "warmup": 2}
    record = {
        "environment": {"device": "NVIDIA H100", "date": "2026-11-24", "commit": "abc", "optional_packages": {}},
        "budget_s": 540,
        "wall_s": 500.0,
        "finished": True,
        "stages": {"suite": {"status": "cut_off", "rows_run": 1, "rows_failed": 1, "rows_skipped": 1, "rows": rows}},
        "targets": gpu_check.evaluate_targets(rows, None, None),
    }
    record["stages"]["suite"]["header"] = header
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    printed = printed_here("benchmarks/gpu_check.py", "--table", str(path))
    assert printed == gpu_check.markdown(record)
    assert "## GPU check: NVIDIA H100, 2026-11-24" in printed
    assert "| suite | cut_off |" in printed and "skipped: late" in printed
    assert (
        "(`latent_ebm_captured_vs_plain_loop`) |  | >= 5.0 | not measured: captured row of latent_ebm skipped"
        in printed
    )
    assert "(`damc_captured_vs_eager`) |  | >= 4.0 | not measured: no captured row of damc" in printed


@pytest.mark.slow
def test_samplers_times_every_sampler_on_the_prior_and_posterior_chains() -> None:
    """CPU. The sampler benchmark prints a time per chain, per gradient and relative to Langevin."""
    recipe = ["--recipe", "recipes/quickstart.yaml"]
    out = run_json("benchmarks/samplers.py", *recipe, "--gradients", "5", "--repeats", "1")
    for chain in ("prior", "posterior"):
        assert set(out["sec_per_chain"][chain]) == {"Langevin", "MALA", "MALA_adaptive", "HMC"}
        assert all(seconds > 0 for seconds in out["sec_per_chain"][chain].values())
        assert out["relative_to_langevin"][chain]["Langevin"] == 1.0


@pytest.mark.slow  # a quickstart model and its 60-step prior chain
def test_argument_walk_times_both_walks_over_a_chains_operations_and_finds_them_equal() -> None:
    """CPU. lebm's walks of an operation's arguments give pytree's leaves and maps over every
    operation of the quickstart's prior chain, and the script times all four walks."""
    out = run_json("benchmarks/argument_walk.py", "--batch-size", "2", "--repeats", "1", "--trials", "1")
    assert out["walks_agree"] is True and out["operations"] > 100
    assert set(out["us_per_operation"]) == {"leaves_of", "tree_leaves", "map_leaves", "tree_map"}
    assert all(value > 0 for value in out["us_per_operation"].values())


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_host_work_counts_the_operations_around_and_inside_the_chains_and_times_the_rest() -> None:
    """CPU. Training chains record their ends only (fewer operations a step than recording every
    step), and handing step values to Lightning at the logging cadence costs less than at every step."""
    recipe = ("--recipe", "recipes/quickstart.yaml", "--batch-size", "4")
    out = run_json("benchmarks/host_work.py", *recipe, "--iters", "3", "--warmup", "2", "--repeats", "1")
    assert out["ops_outside_chains"] > 0
    ends, every = out["ops_per_chain_step"]["ends"], out["ops_per_chain_step"]["every_step"]
    assert set(ends) == set(every) == {"posterior_sampler", "prior.sampler"}
    assert all(ends[chain] < every[chain] for chain in ends)
    assert out["remainder_ms"]["cadence"] > 0 and out["remainder_ms"]["every_step"] > 0


@pytest.mark.slow  # five quickstart fits
def test_iteration_key_cost_times_the_key_beside_each_quickstarts_eager_iteration(tmp_path: Path) -> None:
    """CPU. One JSON line per method's quickstart, and a table made from those lines under --write."""
    printed = printed_here(
        *("benchmarks/iteration_key_cost.py", "--recipes", "quickstart", "--quickstart-batch-size", "4"),
        *("--iters", "1", "--repeats", "2", "--write", str(tmp_path)),
    )
    rows = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    methods = {"LatentEBM", "MultiStageNCE", "DualMCMC", "JointHierarchicalEBM", "DAMC"}
    assert {row["method"] for row in rows} == methods
    for row in rows:
        assert row["key_us"] > 0 and row["eager_iteration_ms"] > 0 and row["modules_described"] > 0, row
        # the share is rounded to 5 decimals: on a loaded machine (a slow eager iteration) that is over 1%
        assert row["key_share"] == pytest.approx(row["key_us"] / 1e3 / row["eager_iteration_ms"], rel=1e-2, abs=1e-5)
    (written,) = tmp_path.glob("iteration_key_cost-*.md")
    text = written.read_text()
    assert all(f"| {method} |" in text for method in methods) and "load average" in text


def clocked_fit(tmp_path: Path, accelerator: str) -> dict:
    """Two epochs of three batches of a small LatentEBM with the epoch clock; its record."""
    from lebm.models import LatentEBM, TiltedGaussianPrior
    from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
    from lebm.samplers import Langevin

    epoch_clock = load_script("benchmarks/epoch_clock.py")
    decoder = GaussianDecoder(MLPGenerator(4, [2], hidden=16, out_activation=None), sigma=0.3)
    model = LatentEBM(decoder, TiltedGaussianPrior(4, EnergyMLP(4, hidden=16), sampler=Langevin(3, 0.4)))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(96, 2)), batch_size=32)

    clock = epoch_clock.EpochClock(out=str(tmp_path / "clock.json"))
    trainer = quiet_trainer(
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        inference_mode=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, data)
    return json.loads((tmp_path / "clock.json").read_text())


def test_the_epoch_clock_counts_each_epochs_batches_and_times_them(tmp_path: Path) -> None:
    """CPU. The clock the GPU check times the quickstart with: batches and seconds of every epoch,
    and (under the CPU emulator of CUDA graphs) how many iterations were recorded and replayed."""
    from lebm.recording import iteration_capture
    from lebm.testing.capture import emulate_on_cpu

    with emulate_on_cpu(), iteration_capture(True):
        record = clocked_fit(tmp_path, "cpu")
    assert [epoch["batches"] for epoch in record["epochs"]] == [3, 3]
    assert all(0 < epoch["train_seconds"] <= epoch["epoch_seconds"] for epoch in record["epochs"])
    assert record["recorded_iterations"]["recordings"] == 1 and record["recorded_iterations"]["replays"] >= 1


def test_gpu_check_times_the_quickstart_as_lebm_runs_it_and_again_with_recorded_iterations_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. The quickstart stage's two runs: the first leaves lebm's default on, the second turns
    recorded iterations off in the child's environment; each keeps its own log and speeds."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    switches = []

    def fake_run(command, log, limit_s, env):
        switches.append(env[gpu_check.ITERATION_VARIABLE])
        log.write_text("ran\n")
        clock = Path(json.loads(command[-1].split("=", 1)[1])["init_args"]["out"])  # the epoch clock's record
        speed = 0.2 if env[gpu_check.ITERATION_VARIABLE] == "1" else 0.4
        epochs = [{"batches": 14, "train_seconds": s, "epoch_seconds": s} for s in (1.0, speed, speed)]
        clock.write_text(json.dumps({"epochs": epochs, "recorded_iterations": {"replays": 20}}))
        return {"returncode": 0, "wall_s": 1.0, "cut_off": False}

    monkeypatch.setattr(gpu_check, "run_limited", fake_run)
    stage = gpu_check.quickstart_stage(tmp_path, 60.0, logger=False)
    assert switches == ["1", "0"]
    assert stage["median_it_per_sec"] == 70.0 and stage["iterations_off"]["median_it_per_sec"] == 35.0
    assert {p.name for p in tmp_path.iterdir()} == {"quickstart.log", "quickstart-iterations_off.log"}
    assert "with them off 35.0 it/s" in gpu_check._stage_note("quickstart", stage)


@pytest.mark.gpu
def test_on_a_gpu_the_epoch_clock_synchronises_once_at_each_end_of_an_epoch_not_after_each_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device: CUDA. A synchronisation after every batch would drain the queue the host keeps ahead
    of the GPU and slow the loop it times: the clock reads CUDA events instead."""
    callers = []
    synchronize = torch.cuda.synchronize

    def counted(*args):
        callers.append(sys._getframe(1).f_code.co_filename)
        return synchronize(*args)

    monkeypatch.setattr(torch.cuda, "synchronize", counted)
    record = clocked_fit(tmp_path, "gpu")
    assert sum(caller.endswith("epoch_clock.py") for caller in callers) == 4  # start and end of both epochs
    assert [epoch["batches"] for epoch in record["epochs"]] == [3, 3]
    assert all(0 < epoch["train_seconds"] <= epoch["epoch_seconds"] for epoch in record["epochs"])


def test_gpu_check_keeps_each_profile_runs_record_or_last_lines_and_skips_what_the_deadline_cannot_fit(
    tmp_path: Path,
) -> None:
    """CPU. The profile stage with stand-in scripts (each a fresh Python process printing what
    profile_step.py and host_work.py print): each run's JSON in the record (the last JSON line, a
    warning after it), a failing run's last lines instead, a run the deadline cannot fit skipped;
    one table row each. The real scripts: the slow test below."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    profile = {
        "wall_ms": 12.5,
        "device_busy_ms": None,
        "device_idle_share": None,
        "host_ranges_ms": {"training_step": 9.0},
    }
    host = {"ops_outside_chains": 7, "remainder_ms": {"cadence": 1.5, "every_step": 2.5}}
    scripts = {
        "profile.py": f"print('starting'); print({json.dumps(json.dumps(profile))}); print('a warning')",
        "failing.py": "import sys; print('no recipe recipes/none.yaml'); sys.exit(2)",
        "host.py": f"print({json.dumps(json.dumps(host))})",
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    runs = tuple(
        (label, str(tmp_path / name), ()) for label, name in zip(["profiled", "failing", "host"], scripts, strict=True)
    )
    out = tmp_path / "out"
    out.mkdir()
    stage = gpu_check.profile_stage(out, gpu_check.Deadline(120), runs)
    measured, failed, host_run = stage["runs"]
    assert measured["result"] == profile and host_run["result"] == host
    assert "result" not in failed and "none.yaml" in failed["error"] and failed["returncode"] == 2
    assert stage["status"] == "completed with failures" and "== failing" in (out / "profile.log").read_text()
    table = "\n".join(gpu_check.profile_markdown(stage))
    assert "| profiled | 12.5 |" in table and "| host |" in table and "7 ops outside the chains" in table
    late = gpu_check.profile_stage(out, gpu_check.Deadline(1), runs[:1])
    assert late["runs"][0]["skipped"].startswith("deadline")


@pytest.mark.slow
def test_gpu_check_profiles_each_run_in_its_own_process_and_tabulates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. The profile stage (a second GPU call's work) on the real scripts, each on one thread and
    small batches: each run's JSON in the record, a failing run's last lines instead, a run the
    deadline cannot fit skipped; one table row each."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)  # the runs' environment is this one's
    quickstart = ("--recipe", "recipes/quickstart.yaml", "--batch-size", "4")
    quick = (*quickstart, "--accelerator", "cpu", "--iters", "1", "--warmup", "1")
    few = (*quickstart, "--iters", "2", "--warmup", "2", "--repeats", "1")
    runs = (
        ("quickstart on the cpu", "profile_step.py", quick),
        ("a script that fails at once", "no_such_profile.py", ()),  # Python's own error, before any import
        ("quickstart host work", "host_work.py", few),
    )
    stage = gpu_check.profile_stage(tmp_path, gpu_check.Deadline(600), runs)
    measured, failed, host = stage["runs"]
    profile = measured["result"]
    assert profile["wall_ms"] > 0 and profile["device_busy_ms"] is None  # no device timeline on a CPU
    assert profile["host_ranges_ms"]["training_step"] > profile["host_ranges_ms"]["chain:prior.sampler"] > 0
    assert profile["top_host_ops"] and profile["runtime_calls"]["graph_launches"] == 0
    assert "result" not in failed and "no_such_profile.py" in failed["error"]
    assert host["result"]["ops_outside_chains"] > 0
    assert stage["status"] == "completed with failures" and (tmp_path / "profile.log").is_file()
    table = "\n".join(gpu_check.profile_markdown(stage))
    assert "| quickstart on the cpu | " in table and "| quickstart host work |" in table
    late = gpu_check.profile_stage(tmp_path, gpu_check.Deadline(1), runs[:1])
    assert late["runs"][0]["skipped"].startswith("deadline")


def test_gpu_check_tabulates_damcs_start_and_iteration_split_runs() -> None:
    """CPU. The profile stage's DAMC runs (ancestral_start.py, damc_cost.py) get one row each, with
    the start's eager and captured seconds and the iteration's split."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    start = {
        "rows": [
            {"recipe": "recipes/damc/svhn.yaml", "eager_sec": 0.2, "captured_sec": 0.01, "captured_vs_eager": 20.0}
        ]
    }
    split = {
        "pairs": {
            "svhn": {
                "damc": {"sec_per_iter": 0.08, "split_sec_per_iter": {"amortizer_steps": 0.03}},
                "damc_over_latent_ebm": 3.1,
            }
        }
    }
    stage = {
        "runs": [{"label": "damc ancestral start", "result": start}, {"label": "damc iteration split", "result": split}]
    }
    table = "\n".join(gpu_check.profile_markdown(stage))
    assert "| damc ancestral start |" in table and "start eager 0.2 s, captured 0.01 s (20.0x)" in table
    assert "| damc iteration split |" in table and "DAMC 0.08 s/iter (amortizer_steps 0.03); 3.1x LatentEBM" in table
    labels = [label for label, _, _ in gpu_check.PROFILE_RUNS]
    assert {"damc ancestral start", "damc iteration split"} <= set(labels)


def test_gpu_check_profiles_the_methods_asked_for_in_their_order_and_every_run_has_a_method() -> None:
    """CPU. ``--methods damc,hierarchical`` profiles DAMC's runs, then the hierarchical model's,
    nothing else; every profile run belongs to a suite method (the default profiles them all)."""
    gpu_check = load_script("benchmarks/gpu_check.py")
    runs = gpu_check.profile_runs_for(("damc", "hierarchical"))
    words = [label.split()[0] for label, _, _ in runs]
    assert words == sorted(words) and set(words) == {"damc", "hierarchical"}
    assert any("bf16-mixed" in arguments for label, _, arguments in runs if label.startswith("hierarchical"))
    assert set(gpu_check.profile_runs_for(gpu_check.SUITE_METHODS)) == set(gpu_check.PROFILE_RUNS)


def test_profile_step_names_a_recipe_it_cannot_read() -> None:
    """CPU. What ``gpu_check``'s profile stage keeps of a failing ``profile_step.py`` run: its last
    lines, which name the recipe (the stage itself is tested on a fake failing script above)."""
    with pytest.raises(RecipeError, match="recipes/none.yaml does not parse"):
        run_here("benchmarks/profile_step.py", "--recipe", "recipes/none.yaml")


def test_profile_step_counts_the_device_time_covered_once_however_intervals_overlap() -> None:
    """CPU. The device's busy time is the union of its kernel intervals."""
    profile_step = load_script("benchmarks/profile_step.py")
    assert profile_step.union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7), (10, 10)]) == 4
    assert profile_step.union_length([]) == 0


@pytest.mark.gpu
def test_on_a_gpu_profile_step_sees_the_device_timeline_and_the_chains_graph_launches() -> None:
    """Device: CUDA. Two captured chains an iteration: at least two graph launches per iteration,
    device busy time within the wall time, and the host's training step measured."""
    out = run_json_in_a_process(
        "benchmarks/profile_step.py", "--recipe", "recipes/quickstart.yaml", "--iters", "3", "--warmup", "3"
    )
    assert out["device"] == torch.cuda.get_device_name(0)
    assert out["runtime_calls"]["graph_launches"] >= 2
    assert 0 < out["device_busy_ms"] <= out["wall_ms"] and 0 <= out["device_idle_share"] < 1
    assert out["host_ranges_ms"]["training_step"] > 0 and out["top_device_kernels"]


def test_profile_step_counts_kernels_and_copies_as_device_work_not_waits_or_ranges() -> None:
    """CPU. Kineto puts synchronisations (spanning the wait) and user ranges on the GPU's timeline:
    counting them as busy time would hide the very idle time the profile is for."""
    from types import SimpleNamespace

    profile_step = load_script("benchmarks/profile_step.py")
    work = profile_step.is_device_work
    assert work(SimpleNamespace(name="void at::native::vectorized_elementwise_kernel<4>", activity_type="kernel"))
    assert work(SimpleNamespace(name="Memcpy HtoD (Pageable -> Device)", activity_type="gpu_memcpy"))
    assert not work(SimpleNamespace(name="Stream Sync", activity_type="cuda_sync"))
    assert not work(SimpleNamespace(name="Context Sync"))  # a torch without activity_type
    assert not work(SimpleNamespace(name="training_step", is_user_annotation=True))
    assert not work(SimpleNamespace(name="chain:prior.sampler", activity_type="gpu_user_annotation"))


def test_the_gpu_tier_runs_on_workers_with_pytest_xdist_and_in_one_process_without() -> None:
    """CPU. The gpu tier's command gives its own worker count where pytest-xdist is, and no ``-n``
    where it is not (which pytest would refuse)."""
    gpu_tier_command = load_script("benchmarks/gpu_check.py").gpu_tier_command
    with_plugin = gpu_tier_command(Path("j.xml"), xdist=True, timeout_plugin=False)
    assert with_plugin[with_plugin.index("-n") + 1] == "8"
    without = gpu_tier_command(Path("j.xml"), xdist=False, timeout_plugin=True)
    assert "-n" not in without
    assert without[without.index("gpu") - 1] == "-m" and "--timeout" in without


def test_the_tier_cost_sums_each_files_tests_and_compares_at_the_old_records_speed() -> None:
    """CPU, no tests run. ``benchmarks/test_tier_cost.py``: a ``--durations=0`` log summed per file
    (set-up, call and teardown), and a record compared with an older one through the median time
    ratio of the files the change left alone (here 2.0: the machine ran at half the speed)."""
    tier = load_script("benchmarks/test_tier_cost.py")
    log = "\n".join(
        [
            "3.00s call     tests/a.py::test_one",
            "1.00s setup    tests/a.py::test_one",
            "2.50s call     tests/b.py::test_two[x]",
            "0.50s teardown tests/cli/c.py::test_three",
            "2185 passed, 45 skipped in 353.42s (0:05:53)",
        ]
    )
    assert tier.per_file(log) == {"tests/a.py": 4.0, "tests/b.py": 2.5, "tests/cli/c.py": 0.5}
    old = {"files": {"tests/a.py": 2.0, "tests/b.py": 1.25, "tests/cli/c.py": 9.0}, "summed_seconds": 12.25}
    new = {"files": {"tests/a.py": 4.0, "tests/b.py": 2.5, "tests/cli/c.py": 2.5}, "summed_seconds": 9.0}
    new["wall_seconds"] = 10.0
    seen = tier.compared(new, old, ["tests/cli"])
    assert seen["speed_ratio"] == 2.0 and seen["files_read"] == 2
    assert seen["summed_seconds_at_old_speed"] == 4.5 and seen["wall_seconds_at_old_speed"] == 5.0
