"""Generate docs/results.md from the machine-readable records in docs/results/*.json.

Each record: ``method``, ``experiment``, ``metric``, ``value`` and, where they apply, ``digit``,
``std``, ``n_evaluations``, ``command``, ``device``, ``date``. Published numbers live in
``docs/results/published/*.json`` (same fields plus ``source``) and are shown next to ours for
the experiment whose name they prefix (``mnist_anomaly`` for ``mnist_anomaly_offline``).

    python scripts/make_results_md.py [--check]

``--check`` exits 1 if docs/results.md is not what the records generate (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
OUTPUT = REPO / "docs" / "results.md"
REQUIRED = ("method", "experiment", "metric", "value")


def load_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.json")):
        for record in json.loads(path.read_text()):
            missing = [key for key in REQUIRED if key not in record]
            if missing:
                raise ValueError(f"{path}: record {record} lacks {missing}")
            records.append(record)
    return records


def fmt(record: dict | None) -> str:
    if record is None:
        return "–"
    value = f"{record['value']:.3f}"
    return f"{value} ± {record['std']:.3f}" if record.get("std") is not None else value


#: Extra per-record values shown as columns when any record of an experiment has them: the AUPRC
#: of each term of an anomaly score, and the test split's, read once, of a record chosen on a
#: validation split.
EXTRA_COLUMNS = {
    "auprc_reconstruction_term": "reconstruction term",
    "auprc_prior_term": "prior term",
    "test_auprc": "test",
    "test_auprc_reconstruction_term": "test: reconstruction term",
    "test_auprc_prior_term": "test: prior term",
    "test_auprc_sampled": "test, score over 10 q(z|x) samples",
    "auprc_trapezoid": "trapezoid AUPRC",
    "papers_reading.auprc": "last 10: AP",
    "papers_reading.auprc_trapezoid": "last 10: trapezoid",
    "test_overlap": "test split in training",
}


def lookup_value(record: dict, key: str) -> float | None:
    """``record[key]``, or a nested value for a dotted key (``papers_reading.auprc``)."""
    value: object = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value  # type: ignore[return-value]


def label(record: dict) -> str:
    """The method, its setting in parentheses, and a split other than the default in brackets."""
    name = f"{record['method']} ({record['setting']})" if record.get("setting") else record["method"]
    split = record.get("data_split") or "disjoint"
    return f"{name} [{split} split]" if split != "disjoint" else name


def order(record: dict) -> tuple:
    split = record.get("data_split") or "disjoint"
    return (record["method"], split, record.get("setting") or "", record.get("digit", -1))


def experiment_table(experiment: str, ours: list[dict], published: list[dict]) -> list[str]:
    reference = [r for r in published if experiment.startswith(r["experiment"])]
    baselines = sorted({r["method"] for r in reference}, key=lambda m: [r["method"] for r in reference].index(m))
    lookup = {(r["method"], r.get("digit"), r["metric"]): r for r in reference}
    extra = [key for key in EXTRA_COLUMNS if any(lookup_value(r, key) is not None for r in ours)]
    header = [
        "method",
        "digit",
        "metric",
        "ours",
        *[EXTRA_COLUMNS[key] for key in extra],
        *[f"paper {m}" for m in baselines],
        "budget",
        "device",
        "date",
    ]
    lines = [f"## {experiment}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(ours, key=lambda r: (*order(r), r["metric"])):
        paper = [fmt(lookup.get((m, r.get("digit"), r["metric"]))) for m in baselines]
        row = [
            label(r),
            str(r.get("digit", "")),
            r["metric"],
            fmt(r),
            *[f"{lookup_value(r, key):.3f}" if lookup_value(r, key) is not None else "–" for key in extra],
            *paper,
            r.get("budget", ""),
            r.get("device", ""),
            r.get("date", ""),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += curve_table(ours)
    commands = sorted({r["command"] for r in ours if r.get("command")})
    if commands:
        lines += ["", "Commands:", "", "```bash", *commands, "```"]
    return lines + [""]


def curve_table(ours: list[dict]) -> list[str]:
    """The AUPRC after every epoch of the records that keep it (``auprc_by_epoch``): whether a longer
    run would move the number."""
    curves = [r for r in ours if r.get("auprc_by_epoch")]
    if not curves:
        return []
    epochs = max(len(r["auprc_by_epoch"]) for r in curves)
    header = ["method", "digit", *[f"epoch {e}" for e in range(1, epochs + 1)]]
    lines = ["", "AUPRC after each epoch:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(curves, key=order):
        values = [f"{v:.3f}" for v in r["auprc_by_epoch"]] + ["–"] * (epochs - len(r["auprc_by_epoch"]))
        lines.append("| " + " | ".join([label(r), str(r.get("digit", "")), *values]) + " |")
    return lines


def render(records: list[dict], published: list[dict]) -> str:
    by_experiment: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_experiment[record["experiment"]].append(record)
    lines = [
        "# Results",
        "",
        "Generated by `python scripts/make_results_md.py` from the records in `docs/results/*.json`;",
        "do not edit by hand. Protocols, budgets and how our settings differ from the papers':",
        "[results_notes.md](results_notes.md).",
        "",
    ]
    for experiment in sorted(by_experiment):
        lines += experiment_table(experiment, by_experiment[experiment], published)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render(load_records(RESULTS), load_records(RESULTS / "published"))
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print("docs/results.md is out of date: run python scripts/make_results_md.py", file=sys.stderr)
            sys.exit(1)
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
