"""The benchmark scripts run on the quickstart recipes and print the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_json(*args: str) -> dict:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_step_times_a_chosen_stage_of_multistage_nce() -> None:
    out = run_json(
        "benchmarks/train_step.py",
        "--recipe",
        "recipes/multistage_nce/quickstart.yaml",
        "--iters",
        "2",
        "--warmup",
        "1",
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
        "20",
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
    out = run_json("benchmarks/ddp_bytes.py", "--recipe", "recipes/dual_mcmc/quickstart.yaml", "--iters", "2")
    assert out["processes"] == 2 and out["backward_passes"] == 3
    assert out["minimum_bytes"] <= out["collective_bytes"] <= out["minimum_bytes"] + 64, out
    assert out["plain_ddp_over_minimum"] == 3.0


@pytest.mark.slow
def test_suite_writes_a_json_and_a_markdown_table(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/suite.py",
            *("--only", "latent_ebm", "--paths", "eager", "--iters", "1", "--warmup", "0"),
            *("--cpu-batch-size", "2", "--generate", "4", "--out", str(tmp_path)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
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
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_step

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
    out = run_json(
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
