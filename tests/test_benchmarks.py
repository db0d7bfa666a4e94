"""The benchmark scripts run on the quickstart recipes and print the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_json(*args: str) -> dict:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


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


def test_prior_chain_times_every_stage() -> None:
    out = run_json("benchmarks/prior_chain.py", "--recipe", "recipes/multistage_nce/quickstart.yaml", "--repeats", "1")
    assert list(out["sec_per_chain"]) == ["stage_0", "stage_1", "stage_2", "stage_3"]
    assert all(seconds > 0 for seconds in out["sec_per_chain"].values())
