"""The measured speed of each method's training paths on one GPU, one record per row, and each
method's default path on CUDA, generated from the GPU records.

    python scripts/fastest_settings.py            # print the table and the defaults
    python scripts/fastest_settings.py --write    # put them into docs/performance.md, between its markers
    python scripts/fastest_settings.py --check    # exit 1 if docs/performance.md holds other text there

Reads every ``benchmarks/results/gpu_check-*.json`` (``benchmarks/gpu_check.py``'s records). For
each method and each GPU kind it takes **one** record, and every figure of that table row comes
from it: the rows of one call, on one machine, never a path of one record beside a path of another
(issue 106). The record taken is the one that compares most: first one that timed captured chains
and recorded iterations in the same call with 10+ timed iterations a row, then one that timed
them in the same call at all, then the most paths timed, then the newest. The row gives each
path's s/iter (eager, captured, recorded, captured bf16, recorded bf16; blank where the record
did not time it), the fastest of them over the same record's eager row, the iterations timed, the
device, torch, commit, date and the record's file. Below the table, each method's default on CUDA
as ``benchmarks/speed_defaults.py`` decides it, naming the record that decides or the nearest one
that does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
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
#: The paths a row shows, in its columns' order, with each column's name.
PATHS = {
    "eager": "eager",
    "captured": "captured",
    "recorded": "recorded",
    "captured_bf16": "captured bf16",
    "recorded_bf16": "recorded bf16",
}
#: A suite path as the switches that give it.
SETTINGS = {
    "eager": "fp32, eager chains",
    "captured": "fp32, captured chains",
    "captured_bf16": "bf16, channels-last, captured chains",
    "fast_bf16": "bf16, channels-last, compiled, captured chains",
    "recorded": "fp32, recorded iterations",
    "recorded_bf16": "bf16, channels-last, recorded iterations",
}
HEADER = [
    "method, recipe",
    *PATHS.values(),
    "fastest: eager / it",
    "record: GPU, torch, commit, date, timed iterations",
]


def load_rule() -> ModuleType:
    """``benchmarks/speed_defaults.py``, the rule that picks each method's default path."""
    module = sys.modules.get("speed_defaults")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("speed_defaults", REPO / "benchmarks" / "speed_defaults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["speed_defaults"] = module
    spec.loader.exec_module(module)
    return module


def suite_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite rows of a gpu_check record that were timed."""
    rows = (record.get("stages") or {}).get("suite", {}).get("rows", [])
    timed = (row for row in rows if isinstance(row.get("sec_per_iter"), (int, float)) and "error" not in row)
    return [row for row in timed if "suite_method" in row]


def row_set(name: str, record: dict[str, Any], method: str) -> dict[str, Any] | None:
    """``method``'s timed rows in one record, by path, with the record's environment (None: none)."""
    rows = {row["path"]: row for row in suite_rows(record) if row["suite_method"] == method}
    if not rows:
        return None
    environment = record.get("environment") or {}
    iters = sorted({row["iters"] for row in rows.values() if isinstance(row.get("iters"), int)})
    return {
        "method": method,
        "record": name,
        "seconds": {path: row["sec_per_iter"] for path, row in rows.items()},
        "iters": iters,
        "device": environment.get("device", "?"),
        "torch": environment.get("torch", "?"),
        "commit": str(environment.get("commit", "?"))[:7],
        "date": str(environment.get("date", "?")),
        "started_at": str(environment.get("started_at") or ""),
        "compares": compares(rows),
    }


def compares(rows: dict[str, dict[str, Any]]) -> int:
    """2 when a captured and a recorded row of one precision both ran 10+ timed iterations, 1 when
    both ran at all, else 0."""
    rule = load_rule()
    best = 0
    for captured, recorded in rule.PRECISIONS.values():
        if captured in rows and recorded in rows:
            enough = all(rule.why_not(rows[path]) is None for path in (captured, recorded))
            best = max(best, 2 if enough else 1)
    return best


def row_sets(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each method and GPU kind, the one record's rows that compare most (see the module's
    doc), in :data:`METHODS`' order, GPU kinds by name."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for name, record in sorted(records.items()):
        for method in METHODS:
            found = row_set(name, record, method)
            if found is None:
                continue
            key = (method, found["device"])
            rank = (found["compares"], len(found["seconds"]), found["date"], found["started_at"], name)
            held = best.get(key)
            if held is None or rank > (
                held["compares"],
                len(held["seconds"]),
                held["date"],
                held["started_at"],
                held["record"],
            ):
                best[key] = found
    return [best[key] for key in sorted(best, key=lambda k: (list(METHODS).index(k[0]), k[1]))]


def table(rows: list[dict[str, Any]]) -> str:
    """The row sets as a Markdown table, each with the number of its record, then the records' files
    (under ``benchmarks/results/``) by number."""
    records: list[str] = []
    lines = [
        "Seconds per iteration (median), each row from the one record it names:",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for row in rows:
        if row["record"] not in records:
            records.append(row["record"])
        seconds = row["seconds"]
        fastest = min(seconds, key=seconds.get)
        eager = seconds.get("eager")
        ratio = f"{eager / seconds[fastest]:.2f}" if eager else "no eager row"
        iters = "/".join(str(n) for n in row["iters"]) or "?"
        cells = [
            METHODS[row["method"]],
            *(f"{seconds[path]:.4f}" if path in seconds else "" for path in PATHS),
            f"{PATHS.get(fastest, fastest)}: {ratio}",
            f"{records.index(row['record']) + 1}: {short_device(row['device'])}, {row['torch']}, "
            f"`{row['commit']}`, {row['date']}, {iters} iterations",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    named = "; ".join(f"{index} `{name}`" for index, name in enumerate(records, 1))
    lines += ["", f"Records (under `benchmarks/results/`): {named}."]
    return "\n".join(lines) + "\n"


def defaults_text(records: dict[str, dict[str, Any]]) -> str:
    """Each method's default path on CUDA by ``benchmarks/speed_defaults.py``, with the record that
    decides each precision or, where none does, the nearest same-call record and why it does not."""
    rule = load_rule()
    lines = [
        "",
        f"Each method's default on CUDA (`python benchmarks/speed_defaults.py`): {rule.RULE}.",
        "",
    ]
    for method, picked in rule.defaults(records).items():
        default = "recorded iterations" if picked["recorded_iterations_by_default"] else "captured chains"
        parts = [f"{precision}: {precision_note(picked[precision])}" for precision in rule.PRECISIONS]
        lines.append(f"- {method}: **{default}**; " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def precision_note(pick: dict[str, Any]) -> str:
    """What decided one precision's pick, in a few words."""
    if pick["record"] is not None:
        return (
            f"{pick['default']}, by `{pick['record']}` ({pick['suite_method']}: captured "
            f"{pick['captured_sec_per_iter']:.4f} / recorded {pick['recorded_sec_per_iter']:.4f} s/iter = "
            f"{pick['ratio']:.3f}, {min(pick['iters'])}+ timed iterations a row)"
        )
    nearest = pick.get("nearest")
    if nearest is None:
        return "captured, no record timed both paths in one call"
    return (
        f"captured, no same-call record with 10+ timed iterations (nearest: `{nearest['record']}`, "
        f"{min(nearest['iters'])} a row, {nearest['suite_method']} captured / recorded {nearest['ratio']:.3f}, "
        "not counted)"
    )


def generated(records: dict[str, dict[str, Any]] | None = None) -> str:
    """The text between the page's markers: the table, its records, the defaults."""
    records = load_records() if records is None else records
    return table(row_sets(records)) + defaults_text(records)


def short_device(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100``."""
    words = name.replace("NVIDIA ", "").split()
    return words[0] if words else name


def load_records(folder: Path = RECORDS) -> dict[str, dict[str, Any]]:
    """Every gpu_check record under ``folder``, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("gpu_check-*.json"))}


def with_table(page: str, text: str) -> str:
    """``page`` with the text between its markers replaced by ``text``."""
    if START not in page or END not in page:
        raise SystemExit(f"{PAGE} has no {START} ... {END} markers")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{text}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    action.add_argument("--check", action="store_true", help="exit 1 if docs/performance.md holds another table")
    args = parser.parse_args(argv)
    text = generated()
    if not (args.write or args.check):
        print(text, end="")
        return 0
    page = PAGE.read_text()
    updated = with_table(page, text)
    if args.check:
        if updated != page:
            print(f"{PAGE} is out of date: run python scripts/fastest_settings.py --write", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
