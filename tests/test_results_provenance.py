"""Every result record says what made it: its commit (or, for a record written before runners
stamped one, ``"commit": null`` with the commit that added it and a note), command, device and
date, and a factor study's record the one setting it changed; the runners stamp new records so.
Device: CPU, writing only under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def test_every_record_names_its_commit_command_device_and_date() -> None:
    provenance = load_script("scripts/results_provenance.py")
    short = {}
    for path in sorted((REPO / "docs" / "results").glob("*.json")):
        for record in json.loads(path.read_text()):
            if provenance.lacks(record):
                short.setdefault(path.name, set()).update(provenance.lacks(record))
            if record.get("commit") is None:
                assert record.get("added_in") and record["added_in"] in record["commit_note"], (path.name, record)
    assert short == {}
    factors = [
        record
        for path in (REPO / "docs" / "results").glob("latent_ebm_mnist_anomaly_factor_*.json")
        for record in json.loads(path.read_text())
    ]
    assert len(factors) == 9 and all(record["changed"].startswith("--model.init_args.") for record in factors)


def test_a_record_lacking_its_making_is_named() -> None:
    provenance = load_script("scripts/results_provenance.py")
    made = {"commit": "abc1234", "command": "python x.py", "device": "cpu", "date": "2026-11-29"}
    assert provenance.lacks(made) == []
    assert provenance.lacks({**made, "commit": None}) == ["commit_note"]
    assert provenance.lacks({k: v for k, v in made.items() if k != "device"}) == ["device"]
    assert provenance.lacks({**made, "experiment": "mnist_anomaly_factor_x"}) == ["changed"]


def test_an_older_record_gains_the_commit_that_added_it_and_nothing_it_measured_changes() -> None:
    provenance = load_script("scripts/results_provenance.py")
    record = {"experiment": "mnist_anomaly_factor_ngf64", "value": 0.5, "command": "c", "device": "d", "date": "t"}
    versions = [("aaa1111", "2026-11-27", set()), ("bbb2222", "2026-11-28", {provenance.measured(record)})]
    out = provenance.recovered(record, versions)
    assert out["commit"] is None and out["added_in"] == "bbb2222" and "bbb2222 (2026-11-28)" in out["commit_note"]
    assert out["changed"] == provenance.FACTOR_CHANGES["mnist_anomaly_factor_ngf64"]
    assert provenance.measured(out) == provenance.measured(record) and out["value"] == 0.5
    lost = provenance.recovered({**record, "value": 0.6}, versions)
    assert "added_in" not in lost and "no committed version" in lost["commit_note"]
    assert provenance.recovered({**record, "commit": "ccc3333"}, versions)["commit"] == "ccc3333"


def test_a_runner_stamps_its_record_with_what_made_it(tmp_path: Path) -> None:
    """``save_record`` (the anomaly runners' writer) adds the commit, command, device and date a
    runner left out, and keeps those it gave."""
    load_script("experiments/records.py")
    save_record = load_script("experiments/mnist_anomaly_offline.py").save_record
    output = tmp_path / "records.json"
    base = {"method": "M", "experiment": "e", "metric": "auprc", "digit": 1, "value": 0.1}
    save_record(output, {**base, "command": "python experiments/x.py --a"}, lambda r: r["digit"])
    (record,) = json.loads(output.read_text())
    assert record["command"] == "python experiments/x.py --a" and record["value"] == 0.1
    assert len(record["commit"]) >= 7 and isinstance(record["commit_dirty"], bool)
    assert record["device"] and record["date"]
    assert load_script("scripts/results_provenance.py").lacks(record) == []


def test_a_factor_runs_record_names_the_setting_its_fit_changed(tmp_path: Path) -> None:
    protocols = load_script("experiments/anomaly_protocols.py")
    assert protocols.changed_settings(tmp_path) == {}  # fitted otherwise: not known, not guessed
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar=false"]
    (tmp_path / "fit_arguments.json").write_text(json.dumps({"fit_args": quiet}))
    assert protocols.changed_settings(tmp_path) == {"changed": "nothing (the recipe)"}
    (tmp_path / "fit_arguments.json").write_text(json.dumps({"fit_args": [*quiet, "--model.init_args.x", "0.6"]}))
    assert protocols.changed_settings(tmp_path) == {"changed": "--model.init_args.x 0.6"}
