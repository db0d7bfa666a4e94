"""Each method's default path on CUDA is the one the GPU records pick (device: CPU; reads the stored
GPU records and synthetic ones, runs nothing on a GPU).

Issue 106: captured chains are lebm's default on CUDA; a method records whole iterations by default
(``recorded_iterations_by_default``) only where the newest record that timed captured and recorded
in one call, with 10+ timed iterations a row, shows recorded at least 5% faster, fp32 and bf16
alike (``benchmarks/speed_defaults.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lebm.models import DAMC, DualMCMC, JointHierarchicalEBM, LatentEBM, MultiStageNCE
from tests.helpers.scripts import load_script
from tests.helpers.subprocesses import HANG_SECONDS

REPO = Path(__file__).resolve().parents[1]
CLASSES = (LatentEBM, MultiStageNCE, DualMCMC, JointHierarchicalEBM, DAMC)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_each_methods_class_default_is_what_the_newest_records_pick(cls: type) -> None:
    """Device: CPU. The class attribute against the rule read off ``benchmarks/results/``: recorded
    iterations by default only where a same-call record with 10+ iterations shows them 5% faster."""
    rule = load_script("benchmarks/speed_defaults.py")
    picked = rule.defaults(rule.load_records())[cls.__name__]
    assert getattr(cls, "recorded_iterations_by_default", False) is picked["recorded_iterations_by_default"]
    assert set(rule.METHODS) == {c.__name__ for c in CLASSES}


def test_the_stored_records_decide_no_method_and_say_why() -> None:
    """Device: CPU. 7bee550's record timed captured and recorded in one call but 3 iterations a row,
    and 256fb1d's two calls timed one path each: no record decides, so every default is captured,
    and the output names both."""
    rule = load_script("benchmarks/speed_defaults.py")
    picked = rule.defaults(rule.load_records())
    damc = picked["DAMC"]["fp32"]
    assert (damc["default"], damc["record"], damc["why"]) == ("captured", None, rule.NO_RECORD)
    notes = " / ".join(damc["not_qualifying"])
    assert "gpu_check-2026-11-27-nvidia_h200-7bee550.json: damc captured and recorded in one call" in notes
    assert "3 timed iterations" in notes
    assert "256fb1d-captured.json: captured row without a recorded row in the same call" in notes


def row(method: str, path: str, seconds: float | None, iters: int | None = 10) -> dict[str, Any]:
    """A suite row as gpu_check keeps it (``iters`` None: the field missing)."""
    entry: dict[str, Any] = {"suite_method": method.lower(), "method": method, "path": path}
    entry.update({"sec_per_iter": seconds} if seconds is not None else {"error": ["RuntimeError"]})
    return {**entry, **({"iters": iters} if iters is not None else {})}


def write(folder: Path, name: str, started_at: str, rows: list[dict[str, Any]], date: str = "2026-12-01") -> None:
    environment = {"date": date, "started_at": started_at, "device": "GPU"}
    record = {"environment": environment, "stages": {"suite": {"rows": rows}}}
    (folder / f"gpu_check-{name}.json").write_text(json.dumps(record))


def pick(folder: Path, method: str = "DAMC", precision: str = "fp32") -> dict[str, Any]:
    rule = load_script("benchmarks/speed_defaults.py")
    return rule.decide(rule.load_records(folder), method, precision)


@pytest.mark.parametrize(
    ("recorded", "iters", "expected", "decides"),
    [
        (1.0 / 1.06, 10, "recorded", True),  # recorded 6% faster, 10 iterations
        (1.0 / 1.04, 10, "captured", True),  # 4% faster: not enough
        (1.0 / 1.06, 3, "captured", False),  # 6% faster but 3 iterations
        (1.0 / 1.06, None, "captured", False),  # no iteration count
        (None, 10, "captured", False),  # the recorded row failed
    ],
    ids=["6%-faster", "4%-faster", "3-iterations", "no-iteration-count", "recorded-failed"],
)
def test_recorded_is_picked_only_when_5_percent_faster_over_10_iterations_of_one_call(
    tmp_path: Path, recorded: float | None, iters: int | None, expected: str, decides: bool
) -> None:
    """Device: CPU. Synthetic records, one call each, captured at 1 s/iter."""
    write(
        tmp_path,
        "a",
        "2026-12-01T10:00:00+00:00",
        [row("DAMC", "captured", 1.0), row("DAMC", "recorded", recorded, iters)],
    )
    decided = pick(tmp_path)
    assert decided["default"] == expected
    if decides:
        assert decided["record"] == "gpu_check-a.json" and decided["ratio"] == pytest.approx(1.0 / recorded)
    else:
        assert decided["record"] is None and decided["not_qualifying"][0].startswith("gpu_check-a.json: damc")


def test_captured_and_recorded_of_two_calls_are_not_compared(tmp_path: Path) -> None:
    """Device: CPU. Recorded 20% faster, but timed by another call than the captured row."""
    write(tmp_path, "captured", "2026-12-01T10:00:00+00:00", [row("DAMC", "captured", 1.2)])
    write(tmp_path, "recorded", "2026-12-01T10:10:00+00:00", [row("DAMC", "recorded", 1.0)])
    decided = pick(tmp_path)
    assert (decided["default"], decided["record"]) == ("captured", None)
    assert len(decided["not_qualifying"]) == 2


def test_the_newest_qualifying_record_decides(tmp_path: Path) -> None:
    """Device: CPU. An older call with recorded 10% faster, a newer one (a later date, then a later
    start on the same date) with it 1% faster: the newest decides; a newer 3-iteration call does not."""
    faster = [row("DAMC", "captured", 1.1), row("DAMC", "recorded", 1.0)]
    even = [row("DAMC", "captured", 1.01), row("DAMC", "recorded", 1.0)]
    write(tmp_path, "z-old", "2026-12-09T10:00:00+00:00", faster, date="2026-11-30")
    write(tmp_path, "a-new", "2026-12-01T09:00:00+00:00", even)
    assert (pick(tmp_path)["default"], pick(tmp_path)["record"]) == ("captured", "gpu_check-a-new.json")
    write(tmp_path, "b-newer", "2026-12-01T11:00:00+00:00", faster)
    assert (pick(tmp_path)["default"], pick(tmp_path)["record"]) == ("recorded", "gpu_check-b-newer.json")
    few = [row("DAMC", "captured", 1.01, 3), row("DAMC", "recorded", 1.0, 3)]
    write(tmp_path, "c-newest", "2026-12-01T12:00:00+00:00", few)
    decided = pick(tmp_path)
    assert (decided["default"], decided["record"]) == ("recorded", "gpu_check-b-newer.json")
    assert decided["newer_not_qualifying"][0].startswith("gpu_check-c-newest.json")


def test_a_class_records_by_default_only_where_fp32_and_bf16_both_pick_recorded(tmp_path: Path) -> None:
    """Device: CPU. bf16 compares ``captured_bf16`` with ``recorded_bf16``; the quickstart's rows are
    LatentEBM's, and where one call compares both of its recipes recorded must win on both."""
    rule = load_script("benchmarks/speed_defaults.py")
    fp32 = [row("DAMC", "captured", 1.1), row("DAMC", "recorded", 1.0)]
    bf16 = [row("DAMC", "captured_bf16", 1.1), row("DAMC", "recorded_bf16", 1.0)]
    write(tmp_path, "fp32", "2026-12-01T10:00:00+00:00", fp32)
    assert rule.defaults(rule.load_records(tmp_path))["DAMC"]["recorded_iterations_by_default"] is False
    write(tmp_path, "both", "2026-12-01T11:00:00+00:00", fp32 + bf16)
    assert rule.defaults(rule.load_records(tmp_path))["DAMC"]["recorded_iterations_by_default"] is True
    quickstart = [
        {**r, "suite_method": "quickstart"}
        for r in (row("LatentEBM", "captured", 1.0), row("LatentEBM", "recorded", 1.0))
    ]
    svhn = [row("LatentEBM", "captured", 1.1), row("LatentEBM", "recorded", 1.0)]
    write(tmp_path, "latent", "2026-12-01T12:00:00+00:00", svhn + quickstart)
    decided = pick(tmp_path, "LatentEBM")
    assert decided["default"] == "captured" and decided["suite_method"] == "quickstart" and len(decided["pairs"]) == 2


def test_the_script_prints_every_methods_default_as_json(tmp_path: Path) -> None:
    """Device: CPU. ``python benchmarks/speed_defaults.py --records DIR``."""
    write(tmp_path, "a", "2026-12-01T10:00:00+00:00", [row("DAMC", "captured", 1.1), row("DAMC", "recorded", 1.0)])
    command = [sys.executable, "benchmarks/speed_defaults.py", "--records", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert set(report["methods"]) == {c.__name__ for c in CLASSES} and report["records"] == 1
    damc = report["methods"]["DAMC"]
    assert (damc["fp32"]["default"], damc["bf16"]["default"], damc["default"]) == ("recorded", "captured", "captured")
    assert damc["fp32"]["captured_sec_per_iter"] == 1.1 and damc["fp32"]["ratio"] == 1.1
