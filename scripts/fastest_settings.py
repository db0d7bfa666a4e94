"""The fastest measured settings of each method on one GPU, generated from the GPU records.

    python scripts/fastest_settings.py            # print the table
    python scripts/fastest_settings.py --write    # put it into docs/performance.md, between its markers
    python scripts/fastest_settings.py --check    # exit 1 if docs/performance.md holds another table

Reads every ``benchmarks/results/gpu_check-*.json`` (``benchmarks/gpu_check.py``'s records) and,
for each method and each GPU kind, takes the suite row with the fewest seconds per iteration among
the rows that ran. Each row of the table carries the settings that gave it (as the switches a user
passes), its seconds per iteration, the same record's eager row (the ratio is within one run, on one
machine), the device, torch, commit, date and the record's file. Rows of different GPU kinds are not
compared: each kind gets its own row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "performance.md"
START, END = "<!-- fastest-settings:start -->", "<!-- fastest-settings:end -->"

#: Each method's paper experiment, as the suite names it.
METHODS = {
    "latent_ebm": "LatentEBM, `latent_ebm/svhn`",
    "multistage_nce": "MultiStageNCE, `multistage_nce/svhn`",
    "dual_mcmc": "DualMCMC, `dual_mcmc/cifar10`",
    "hierarchical": "JointHierarchicalEBM, `hierarchical/svhn`",
    "damc": "DAMC, `damc/svhn`",
}
#: A suite path as the switches that give it (chains are captured on a GPU by default).
SETTINGS = {
    "eager": "fp32, eager chains",
    "captured": "fp32, captured chains",
    "captured_bf16": "bf16, channels-last, captured chains",
    "fast_bf16": "bf16, channels-last, compiled, captured chains",
    "recorded": "fp32, recorded iterations",
    "recorded_bf16": "bf16, channels-last, recorded iterations",
}
HEADER = ["method, recipe", "fastest settings", "s/iter", "eager", "eager / this", "GPU, torch", "record: commit, date"]


def suite_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite rows of a gpu_check record that were timed."""
    rows = record.get("stages", {}).get("suite", {}).get("rows", [])
    return [row for row in rows if isinstance(row.get("sec_per_iter"), (int, float)) and "suite_method" in row]


def fastest_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each method and GPU kind, the fastest timed row of ``records`` (``{file name: record}``),
    with its record's eager row, environment and file name."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for name, record in sorted(records.items()):
        environment = record.get("environment", {})
        rows = suite_rows(record)
        for row in rows:
            method = row["suite_method"]
            if method not in METHODS:
                continue
            eager = next((r for r in rows if r["suite_method"] == method and r["path"] == "eager"), None)
            entry = {
                "method": method,
                "path": row["path"],
                "sec_per_iter": row["sec_per_iter"],
                "eager_sec_per_iter": eager["sec_per_iter"] if eager else None,
                "device": environment.get("device", "?"),
                "torch": environment.get("torch", "?"),
                "commit": str(environment.get("commit", "?"))[:7],
                "date": environment.get("date", "?"),
                "record": name,
            }
            key = (method, entry["device"])
            if key not in best or entry["sec_per_iter"] < best[key]["sec_per_iter"]:
                best[key] = entry
    return [best[key] for key in sorted(best, key=lambda k: (list(METHODS).index(k[0]), k[1]))]


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, each with the number of its record, then the records' files
    (under ``benchmarks/results/``) by number."""
    records: list[str] = []
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        if row["record"] not in records:
            records.append(row["record"])
        eager = row["eager_sec_per_iter"]
        ratio = f"{eager / row['sec_per_iter']:.2f}" if eager else "no eager row"
        cells = [
            METHODS[row["method"]],
            SETTINGS.get(row["path"], row["path"]),
            f"{row['sec_per_iter']:.4f}",
            f"{eager:.4f}" if eager else "",
            ratio,
            f"{short_device(row['device'])}, {row['torch']}",
            f"{records.index(row['record']) + 1}: `{row['commit']}`, {row['date']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    named = "; ".join(f"{index} `{name}`" for index, name in enumerate(records, 1))
    lines += ["", f"Records (under `benchmarks/results/`): {named}."]
    return "\n".join(lines) + "\n"


def short_device(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100``."""
    words = name.replace("NVIDIA ", "").split()
    return words[0] if words else name


def load_records(folder: Path = RECORDS) -> dict[str, dict[str, Any]]:
    """Every gpu_check record under ``folder``, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("gpu_check-*.json"))}


def with_table(page: str, generated: str) -> str:
    """``page`` with the text between its markers replaced by ``generated``."""
    if START not in page or END not in page:
        raise SystemExit(f"{PAGE} has no {START} ... {END} markers")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{generated}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    action.add_argument("--check", action="store_true", help="exit 1 if docs/performance.md holds another table")
    args = parser.parse_args(argv)
    generated = table(fastest_rows(load_records()))
    if not (args.write or args.check):
        print(generated, end="")
        return 0
    page = PAGE.read_text()
    updated = with_table(page, generated)
    if args.check:
        if updated != page:
            print(f"{PAGE} is out of date: run python scripts/fastest_settings.py --write", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
