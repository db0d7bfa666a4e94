"""The selection rules the results pages read records by, each at the edge a slip would cross: of
equal validation readings the earliest is chosen; the paper's selection averages a run's last 10
test readings, not its first; a reading equal to the no-model score is no detector; the gap study
reads the 70,000-digit pool's records only. Device: CPU, nothing written."""

from __future__ import annotations

from tests.helpers.scripts import load_script


def rules():
    """``results_row`` and ``results_gap``, loaded as ``make_results_md`` loads them."""
    load_script("scripts/make_results_md.py")
    return load_script("scripts/results_row.py"), load_script("scripts/results_gap.py")


def reading(update: int, val: float, test: float) -> dict:
    return {
        "update": update,
        "val": {"score": {"auprc": val, "auroc": 0.6}},
        "test": {"n": 2000, "anomaly_rate": 0.34, "score": {"auprc": test, "auroc": 0.7}},
    }


def recipe_record(digit: int, seed: int, readings: list[dict], pool: str = "full") -> dict:
    return {"experiment": "mnist_anomaly_selections", "method": "LatentEBM", "digit": digit, "pool": pool,
            "seed": seed, "protocol": "recipe", "metric": "auprc", "readings": readings,
            "no_model": {"test": {"auprc": 0.3, "best": "background"}}}  # fmt: skip


def test_of_equal_validation_readings_the_earliest_is_chosen() -> None:
    row, _ = rules()
    record = recipe_record(4, 1, [reading(100, 0.5, 0.41), reading(200, 0.5, 0.42), reading(300, 0.4, 0.43)])
    assert row.chosen_reading(record)["update"] == 100
    assert row.chosen_reading({**record, "readings": record["readings"][::-1]})["update"] == 100  # not by order kept


def test_the_papers_selection_averages_the_last_ten_readings_not_the_first() -> None:
    """Twelve readings of 0.1 at first, 0.5 at last: the last 10 hold two fewer low ones than the first 10."""
    row, _ = rules()
    tests = [0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    record = recipe_record(4, 1, [reading(100 * (i + 1), 0.5, t) for i, t in enumerate(tests[:5])])
    assert abs(row.last_mean(record) - sum(tests[:5]) / 5) < 1e-12  # fewer than 10: all of them
    longer = recipe_record(4, 1, [reading(40 * (i + 1), 0.5, t) for i, t in enumerate(tests)])
    assert abs(row.last_mean(longer) - sum(tests[2:]) / 10) < 1e-12  # 0.42, where the first 10 read 0.34


def test_a_reading_equal_to_the_no_model_score_is_no_detector() -> None:
    row, _ = rules()
    column = {"means": {"ours": 0.476, "chance": 0.374, "no_model": 0.476, "paper": 0.463}}
    said = row.no_detector_sentence({7: column})
    assert "Held-out 7 reads above chance but no higher than a score with no model (0.476 against 0.476)" in said
    higher = {"means": {**column["means"], "ours": 0.477}}
    assert row.no_detector_sentence({7: higher}) == ""


def test_the_gap_study_reads_the_full_pools_records_only() -> None:
    """A factor record of the 15,000-digit pool at the same seed is neither a row nor a change."""
    _, gap = rules()
    base = [recipe_record(4, seed, [reading(500, 0.5, 0.45 + seed / 100)]) for seed in (1, 2)]
    offline = {
        **recipe_record(4, 1, [reading(500, 0.9, 0.9)], pool="offline"),
        "experiment": "mnist_anomaly_factor_ngf64",
    }
    assert gap.ours([*base, offline], "mnist_anomaly_factor_ngf64") == []
    section = gap.gap_section([*base, offline])  # its only factor record is of another pool
    assert not [line for line in section if line.startswith("| generator width")]
    full = {**offline, "pool": "full", "readings": [reading(500, 0.52, 0.49)]}
    rows = [line for line in gap.gap_section([*base, offline, full]) if line.startswith("| generator width")]
    assert len(rows) == 1 and rows[0].endswith("| 0.490 | 0.700 | +0.030 |")
    assert "ngf64" not in gap.validation_changes([*base, offline])
