"""The status table's words hold no figure typed by hand: every number in a status row's reason,
data and labels is a ``{name}`` placeholder read from the records (``scripts/results_figures.py``),
so a figure changed in a reason fails here, and one changed in the records changes the page (which
``make_results_md.py --check`` holds). Device: CPU, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
STATUS = REPO / "docs" / "results" / "status" / "status.json"


def figures_module():
    load_script("scripts/make_results_md.py")
    return load_script("scripts/results_figures.py")


def rows() -> dict[str, dict]:
    return {row["recipes"][0]: row for row in json.loads(STATUS.read_text())["rows"]}


def test_no_status_row_holds_a_figure_typed_by_hand() -> None:
    module = figures_module()
    found = {name: module.problems(row) for name, row in rows().items()}
    assert {name: p for name, p in found.items() if p} == {}
    assert len([row for row in rows().values() if row.get("figures")]) >= 6


@pytest.mark.parametrize("typed", ["0.120", "0.086", "-0.053", "16,000", "34.5 %", "0.1%"])
def test_a_figure_typed_into_a_reason_fails(typed: str) -> None:
    """Even the figure the record gives, typed by hand in place of its placeholder, is refused."""
    module = figures_module()
    row = rows()["latent_ebm/mnist_anomaly"]
    assert "{budget}" in row["reason"]
    changed = {**row, "reason": row["reason"].replace("{budget}", typed)}
    assert f"a figure typed by hand: {typed!r}" in module.problems(changed)
    label = [{**row["ours"][0], "label": row["ours"][0]["label"] + f" {typed}"}, *row["ours"][1:]]
    assert module.problems({**row, "ours": label})


def test_a_placeholder_needs_its_figure_and_a_figure_its_placeholder() -> None:
    module = figures_module()
    row = rows()["latent_ebm/mnist_anomaly"]
    assert "no figure defines {nowhere}" in module.problems({**row, "reason": row["reason"] + " {nowhere}"})
    extra = {**row, "figures": {**row["figures"], "spare": {"of": {"experiment": "x"}, "read": "value"}}}
    assert "figure 'spare' is used by no word" in module.problems(extra)


def test_the_gap_split_is_read_from_the_records_and_adds_up() -> None:
    """The LatentEBM row's gap: LEBM's value less ours at the CPU budget; its parts the longer
    training, the score's weighting (paired by seed) and what is left; each a figure of the records."""
    module = figures_module()
    records = load_script("scripts/results_records.py").load_records(REPO / "docs" / "results")
    published = load_script("scripts/results_records.py").load_records(REPO / "docs" / "results" / "published")
    sizes = load_script("scripts/results_sizes.py").load_sizes()
    row = rows()["latent_ebm/mnist_anomaly"]
    texts = module.figures(row["figures"], module.Sources(records, published, sizes))
    parts = [float(texts[name]) for name in ("budget", "weighting", "left")]
    assert abs(sum(parts) - float(texts["gap"])) <= 0.0015  # three roundings
    assert abs(float(texts["paper4"]) - float(texts["sel4"].split(" ± ")[0]) - float(texts["gap"])) <= 0.001
    filled = module.filled_row(row, module.Sources(records, published, sizes))["reason"]
    assert f"Of the {texts['gap']} gap" in filled and "{" not in filled


def test_a_figure_reads_checkpoints_pairs_seeds_and_groups_by_digit() -> None:
    module = figures_module()

    def record(digit: int, seed: int, at_500: float, at_1000: float) -> dict:
        readings = [{"update": u, "test": {"auprc": a}} for u, a in ((1000, at_1000), (500, at_500))]
        return {
            "experiment": "e",
            "digit": digit,
            "seed": seed,
            "value": at_1000,
            "readings": readings,
            "text": "6 epochs",
        }

    records = [record(4, 1, 0.40, 0.50), record(4, 2, 0.44, 0.56), record(1, 1, 0.2, 0.3)]
    other = [{**r, "experiment": "f", "value": r["value"] - 0.1} for r in records]
    sources = module.Sources([*records, *other])
    four = {"experiment": "e", "digit": 4}
    specs = {
        "last": {"of": four, "read": "readings@last.update"},
        "rise": {"of": four, "read": "readings@1000.test.auprc", "minus": "readings@500.test.auprc", "show": "range"},
        "both": {"of": four, "read": "value", "show": "mean_sd"},
        "paired": {"of": four, "read": "value", "pair": {"of": {"experiment": "f", "digit": 4}, "read": "value"},
                   "show": "signed"},
        "per": {"of": {"experiment": "e", "digit": [4, 1]}, "read": "value", "show": "mean", "per": "digit"},
        "epochs": {"of": four, "read": "text", "match": r"^(\d+) epochs"},
        "part": {"sum": {"both": 1, "paired": -1}},
    }  # fmt: skip
    texts = module.figures(specs, sources)
    assert texts["last"] == "1,000" and texts["rise"] == "0.100-0.120" and texts["both"] == "0.530 ± 0.042"
    assert texts["paired"] == "+0.100" and texts["per"] == "0.530 / 0.300" and texts["epochs"] == "6"
    assert texts["part"] == "0.430"
    with pytest.raises(ValueError, match="records differ"):
        module.figures({"v": {"of": four, "read": "value"}}, sources)
    with pytest.raises(ValueError, match="not the same seeds"):
        bad = {**specs["paired"], "pair": {"of": {"experiment": "f", "digit": 4, "seed": 1}, "read": "value"}}
        module.figures({"p": bad}, sources)
    with pytest.raises(ValueError, match="no reading of update 700"):
        module.figures({"r": {"of": four, "read": "readings@700.update"}}, sources)
