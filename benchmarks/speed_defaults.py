"""Which training path each lebm method takes by default on CUDA, as the GPU records decide it
(issue 106).

    python benchmarks/speed_defaults.py                      # JSON: each method's default and why
    python benchmarks/speed_defaults.py --records DIR        # read DIR/gpu_check-*.json instead

The default on CUDA is **captured chains** (each Langevin chain one CUDA graph, the rest of the
iteration eager): the path safe for any code. A method records whole training iterations by
default (``recorded_iterations_by_default = True`` on its class) only where the GPU records show,
for fp32 (suite paths ``captured`` against ``recorded``) and for bf16 (``captured_bf16`` against
``recorded_bf16``) alike, recorded iterations at least 5% faster: the captured row's s/iter over the
recorded row's at least :data:`THRESHOLD`.

For each method and precision the record read is the newest (by ``environment.date``, then
``environment.started_at``) of ``benchmarks/results/gpu_check-*.json`` that timed both rows **in
that one call** (``benchmarks/gpu_check.py``'s suite stage), each with a numeric ``sec_per_iter``
and at least :data:`MIN_ITERS` timed iterations (a row without ``iters`` does not qualify). A
captured row of one record and a recorded row of another are never compared: two calls are two
machines, or one machine at two moments. Where no record qualifies, the default is captured, and
the output names the records that came nearest and why they do not count.

A row's ``method`` is the method's class name (``DAMC``); ``suite_method`` the suite's short name
(``damc``). The quickstart's rows (``suite_method`` ``quickstart``) are LatentEBM's on
``recipes/quickstart.yaml``: where one record compares LatentEBM on both recipes, recorded must win
on both. Reads JSON only (no torch): the tests and ``scripts/fastest_settings.py`` import it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "results"

#: The captured row's s/iter over the recorded row's at least this for recorded to be the default.
THRESHOLD = 1.05
#: Timed iterations at least, in each of the two rows, for a record to decide.
MIN_ITERS = 10
#: Precision -> (captured path, recorded path), the suite's names.
PRECISIONS: dict[str, tuple[str, str]] = {"fp32": ("captured", "recorded"), "bf16": ("captured_bf16", "recorded_bf16")}
#: lebm's methods, by class name, and the suite's short names of their recipes.
METHODS: dict[str, tuple[str, ...]] = {
    "LatentEBM": ("latent_ebm", "quickstart"),
    "MultiStageNCE": ("multistage_nce",),
    "DualMCMC": ("dual_mcmc",),
    "JointHierarchicalEBM": ("hierarchical",),
    "DAMC": ("damc",),
}
#: The default where no record decides.
SAFE = "captured"
NO_RECORD = f"no same-call record with {MIN_ITERS}+ timed iterations: captured, the path safe for any code"
RULE = (
    f"captured chains; recorded iterations only where the newest record that timed captured and "
    f"recorded in one call, {MIN_ITERS}+ timed iterations each, shows captured s/iter / recorded s/iter "
    f">= {THRESHOLD}, for fp32 and bf16 alike"
)


def load_records(folder: Path = RECORDS) -> dict[str, dict[str, Any]]:
    """Every gpu_check record under ``folder``, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("gpu_check-*.json"))}


def newest_first(records: dict[str, dict[str, Any]]) -> list[str]:
    """The records' names, newest first: by ``environment.date``, then ``started_at``, then name."""

    def key(name: str) -> tuple[str, str, str]:
        environment = records[name].get("environment") or {}
        return (str(environment.get("date") or ""), str(environment.get("started_at") or ""), name)

    return sorted(records, key=key, reverse=True)


def suite_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite stage's rows of a gpu_check record (failed and skipped ones too)."""
    return list(((record.get("stages") or {}).get("suite") or {}).get("rows") or [])


def method_of(row: dict[str, Any]) -> str | None:
    """A row's method class name: its ``method``, else the class its ``suite_method`` names."""
    if row.get("method"):
        return str(row["method"])
    return next((name for name, short in METHODS.items() if row.get("suite_method") in short), None)


def iterations(row: dict[str, Any]) -> int | None:
    """A row's timed iterations (None where it has none, or not a whole number)."""
    iters = row.get("iters")
    return iters if isinstance(iters, int) and not isinstance(iters, bool) else None


def seconds(row: dict[str, Any]) -> float | None:
    """A row's s/iter (None where it failed, was skipped or holds no positive number)."""
    value = row.get("sec_per_iter")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or "error" in row:
        return None
    return float(value)


def why_not(row: dict[str, Any]) -> str | None:
    """Why a row cannot decide (None: it can)."""
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if seconds(row) is None:
        return "no s/iter (failed)" if "error" in row else "no s/iter"
    iters = iterations(row)
    if iters is None:
        return "no timed-iteration count"
    if iters < MIN_ITERS:
        return f"{iters} timed iterations"
    return None


def pairs_in(record: dict[str, Any], method: str, precision: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(captured row, recorded row) of ``method`` at ``precision`` in one record, one pair per recipe."""
    captured_path, recorded_path = PRECISIONS[precision]
    rows = [row for row in suite_rows(record) if method_of(row) == method]
    pairs = []
    for recipe in dict.fromkeys(row.get("suite_method") for row in rows):
        of_recipe = [row for row in rows if row.get("suite_method") == recipe]
        captured = next((row for row in of_recipe if row.get("path") == captured_path), None)
        recorded = next((row for row in of_recipe if row.get("path") == recorded_path), None)
        if captured is not None and recorded is not None:
            pairs.append((captured, recorded))
    return pairs


def comparison(captured: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """One same-call pair: both s/iter, the ratio, the iterations, the recipe."""
    fast, slow = seconds(recorded), seconds(captured)
    return {
        "suite_method": captured.get("suite_method"),
        "recipe": captured.get("recipe"),
        "captured_sec_per_iter": slow,
        "recorded_sec_per_iter": fast,
        "ratio": round(slow / fast, 4) if fast and slow else None,
        "iters": [iterations(captured), iterations(recorded)],
    }


def decide(records: dict[str, dict[str, Any]], method: str, precision: str) -> dict[str, Any]:
    """``method``'s default path at ``precision`` by the rule: the newest record with a qualifying
    same-call pair decides (recorded where every qualifying pair of it has ratio >= THRESHOLD);
    ``not_qualifying`` lists, newest first, the records that held rows of the pair but cannot decide,
    and ``nearest`` is the newest same-call pair timed too few iterations to count (None: none)."""
    captured_path, recorded_path = PRECISIONS[precision]
    not_qualifying: list[str] = []
    nearest: dict[str, Any] | None = None
    for name in newest_first(records):
        pairs = pairs_in(records[name], method, precision)
        good = [comparison(c, r) for c, r in pairs if why_not(c) is None and why_not(r) is None]
        if good:
            weakest = min(good, key=lambda pair: pair["ratio"])
            recorded = all(pair["ratio"] >= THRESHOLD for pair in good)
            verdict = "recorded" if recorded else SAFE
            relation = ">=" if recorded else "<"
            why = (
                f"{weakest['suite_method']}: captured {weakest['captured_sec_per_iter']:.5g} s/iter / recorded "
                f"{weakest['recorded_sec_per_iter']:.5g} s/iter = {weakest['ratio']:.3f} {relation} {THRESHOLD}, "
                f"{min(weakest['iters'])}+ timed iterations each, one call ({name})"
            )
            entry = {"default": verdict, "record": name, **weakest, "why": why}
            if len(good) > 1:
                entry["pairs"] = good
            if not_qualifying:
                entry["newer_not_qualifying"] = not_qualifying
            return entry
        for captured, recorded in pairs:
            both = ((captured_path, captured), (recorded_path, recorded))
            reasons = ", ".join(f"{path}: {why_not(row)}" for path, row in both if why_not(row) is not None)
            measured = comparison(captured, recorded)
            recipe, ratio = captured.get("suite_method"), measured["ratio"]
            if nearest is None and ratio is not None:
                nearest = {"record": name, **measured}
            measured = "" if ratio is None else f" (captured / recorded {ratio:.3f}, not counted)"
            not_qualifying.append(
                f"{name}: {recipe} {captured_path} and {recorded_path} in one call, but {reasons}{measured}"
            )
        if not pairs:
            held = sorted(
                {
                    str(row.get("path"))
                    for row in suite_rows(records[name])
                    if method_of(row) == method and row.get("path") in (captured_path, recorded_path)
                }
            )
            if held:
                missing = recorded_path if captured_path in held else captured_path
                not_qualifying.append(f"{name}: {held[0]} row without a {missing} row in the same call")
    return {
        "default": SAFE,
        "record": None,
        "captured_sec_per_iter": None,
        "recorded_sec_per_iter": None,
        "ratio": None,
        "why": NO_RECORD,
        "nearest": nearest,
        "not_qualifying": not_qualifying,
    }


def defaults(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every lebm method's default on CUDA: per precision the rule's pick (:func:`decide`), and
    ``recorded_iterations_by_default``, True only where both precisions pick recorded (the class
    attribute covers every precision a run may choose)."""
    result = {}
    for method in METHODS:
        picks = {precision: decide(records, method, precision) for precision in PRECISIONS}
        recorded = all(pick["default"] == "recorded" for pick in picks.values())
        result[method] = {
            "recorded_iterations_by_default": recorded,
            "default": "recorded" if recorded else SAFE,
            **picks,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, default=RECORDS, help="folder of gpu_check-*.json records")
    args = parser.parse_args(argv)
    records = load_records(args.records)
    report = {"rule": RULE, "records": len(records), "methods": defaults(records)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
