"""DAMC's cost benchmark splits an iteration into its parts, and the chain-starts experiment's
helpers read a trace as its records say. Device: CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.scripts import load_script, run_json

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_damc_cost_splits_an_iteration_into_its_parts_and_compares_with_latent_ebm() -> None:
    """One iteration of each quickstart at a batch of 4, on one torch thread (a test of the split, not a timing)."""
    out = run_json(
        *("benchmarks/damc_cost.py", "--pairs", "quickstart", "--iters", "1", "--warmup", "0"),
        *("--batch-size", "4", "--threads", "1"),
    )
    pair = out["pairs"]["quickstart"]
    damc, latent_ebm = pair["damc"], pair["latent_ebm"]
    assert damc["method"] == "DAMC" and latent_ebm["method"] == "LatentEBM" and damc["batch_size"] == 4
    parts = {
        "amortizer_sampling",
        "posterior_sampler",
        "prior.sampler",
        "amortizer_steps",
        "decoder_and_prior_updates",
        "updates_and_rest",
    }
    assert set(damc["split_sec_per_iter"]) == parts
    assert all(seconds > 0 for seconds in damc["split_sec_per_iter"].values())
    assert sum(damc["split_sec_per_iter"].values()) == pytest.approx(damc["sec_per_iter"], rel=0.01)
    assert set(latent_ebm["split_sec_per_iter"]) == {"posterior_sampler", "prior.sampler", "updates_and_rest"}
    assert damc["amortizer_sampling_steps"] == 20 and damc["amortizer_sampling_alone_sec"] > 0
    assert pair["damc_over_latent_ebm"] == pytest.approx(damc["sec_per_iter"] / latent_ebm["sec_per_iter"], rel=0.01)
    assert len(out["load_average_before"]) == 3


def test_the_chain_starts_experiment_finds_the_first_step_that_reaches_a_value_and_mixes_per_target() -> None:
    starts = load_script("experiments/damc_chain_starts.py")
    assert starts.first_reaching(np.array([5.0, 3.0, 2.0, 1.0]), 2.5) == 2
    assert starts.first_reaching(np.array([5.0, 3.0]), 1.0) is None
    assert starts.first_reaching({0: 4.0, 20: 3.0, 5: 2.0}, 3.5) == 5  # by step, not by insertion
    rng = np.random.default_rng(0)
    # 3 targets x 4 chains, 41 states (the start, then 40 draws): chain c of target i at row 3c + i
    energy = rng.normal(size=(41, 12))
    energy[:, 0::3] += 10.0  # target 0's chains sit elsewhere: its R-hat is still near 1
    rhat, ess = starts.mixing(energy, 40, 4, interleaved=True)
    assert 0.95 < rhat < 1.1 and 60 < ess <= 4 * 40 * 2
    energy[:, 0] += 5.0  # one chain of target 0 apart from its three others
    assert starts.mixing(energy, 40, 4, interleaved=True)[0] == pytest.approx(rhat, abs=0.1)  # the median target
    assert all(np.isnan(value) for value in starts.mixing(energy, 3, 4, interleaved=True))  # under 4 draws


def test_ancestral_start_times_a_damc_recipes_start_eagerly_on_a_cpu() -> None:
    bench = load_script("benchmarks/ancestral_start.py")
    settings = argparse.Namespace(batch_size=4, accelerator="cpu", iters=1, precision="32-true")
    row = bench.time_recipe("recipes/damc/quickstart.yaml", settings)
    assert row["batch_size"] == 4 and row["sampling_steps"] == 20
    assert row["eager_sec"] > 0 and row["sec_per_step"] == pytest.approx(row["eager_sec"] / 20, rel=0.01)
    assert row["captured_sec"] is None and row["captured_vs_eager"] is None  # no CUDA graph on a CPU
    assert row["capture_stats"]["captures"] == 0
