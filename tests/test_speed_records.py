"""Speed figures stand beside their records (device: CPU; reads the docs and the stored GPU records).

- ``docs/performance.md`` opens with each method's paths timed per GPU kind, every row from one
  record (one call), and each method's default on CUDA, the text ``scripts/fastest_settings.py``
  generates from ``benchmarks/results/``;
- every paragraph of the docs that gives a figure measured on a GPU names its record (a file under
  ``benchmarks/results/``) or links to a section that does, or sits in a dated record section.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PAGES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
#: A GPU named as the device a figure was measured on.
GPU = re.compile(r"\b(H100|H200|A100|V100)\b|on (a|the|one) GPU\b|GPU machine")
#: A speed figure: a time per iteration or a rate.
FIGURE = re.compile(r"\d[\d,]*(\.\d+)?\s*(s/iter|ms\b|it/s|s an iteration|s per iteration|TFLOP/s)|\d\.\d+ s\b")
#: What names a record: a stored record's path, or a link to a section of records.
RECORD = re.compile(
    r"benchmarks/results/|\]\((performance\.md)?#(measured-on-an-h100|20\d\d-\d\d-\d\d|the-fastest-measured-settings)"
)
#: The sections that are records of GPU runs (each names its files): their paragraphs cite them.
RECORD_SECTION = re.compile(r"^#{2,4} (20\d\d-\d\d-\d\d|Measured on an H100|The fastest measured settings)")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastest_settings", REPO / "scripts" / "fastest_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unsourced_gpu_figures(text: str) -> list[str]:
    """The paragraphs of a Markdown page with a GPU figure and no record, each cut to 120 characters."""
    found = []
    for section in re.split(r"\n(?=#{2,4} )", text):
        if RECORD_SECTION.match(section) and "benchmarks/results/" in section:
            continue
        for paragraph in re.split(r"\n\s*\n", section):
            if GPU.search(paragraph) and FIGURE.search(paragraph) and not RECORD.search(paragraph):
                found.append(" ".join(paragraph.split())[:120])
    return found


def test_every_gpu_figure_in_the_docs_names_its_record() -> None:
    """Device: CPU."""
    unsourced = {str(page.relative_to(REPO)): unsourced_gpu_figures(page.read_text()) for page in PAGES}
    assert not {page: found for page, found in unsourced.items() if found}


def test_the_check_finds_a_gpu_figure_without_a_record_and_passes_one_with_it() -> None:
    """Device: CPU. The docs' own claims before issue 88 (a figure "on an H100" with no file) fail."""
    claim = "An H100 ran the iteration in 0.0194 s (fp32) with each chain captured."
    assert unsourced_gpu_figures(f"## Captured chains\n\n{claim}\n") == [claim]
    sourced = f"{claim} Record: `benchmarks/results/gpu_check-2026-11-24-x.json`."
    assert unsourced_gpu_figures(f"## Captured chains\n\n{sourced}\n") == []
    linked = f"{claim} ([below](#measured-on-an-h100))"
    assert unsourced_gpu_figures(f"## Captured chains\n\n{linked}\n") == []
    dated = f"### 2026-11-27: a lend\n\nRecords: `benchmarks/results/a.json`.\n\n- {claim}\n"
    assert unsourced_gpu_figures(dated) == []
    assert unsourced_gpu_figures("## CPU\n\nThe iteration took 2.44 s/iter on two cores.\n") == []


def test_performance_page_opens_with_the_fastest_settings_generated_from_the_records() -> None:
    """Device: CPU. The text between the markers is the one the records give now: the table, each
    row with its record's file and torch, and the five methods' defaults."""
    script = load_script()
    page = script.PAGE.read_text()
    generated = script.generated()
    assert script.with_table(page, generated) == page, "run python scripts/fastest_settings.py --write"
    first_section = page.split("\n## ", 2)[1]
    assert first_section.startswith("The fastest measured settings") and script.START in first_section
    lines = generated.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method, recipe |")]
    assert len(rows) >= 10  # the five methods on the H100 and on the H200
    named = next(line for line in lines if line.startswith("Records (under"))
    for row in rows:
        number = row.rstrip(" |").rsplit("| ", 1)[1].split(":")[0]
        assert f"{number} `gpu_check-" in named and "+cu" in row  # its record's file, its torch
    for method in ("LatentEBM", "MultiStageNCE", "DualMCMC", "JointHierarchicalEBM", "DAMC"):
        assert any(line.startswith(f"- {method}: **") for line in lines)


def test_each_row_is_one_records_rows_the_one_that_compares_captured_and_recorded_in_one_call() -> None:
    """Device: CPU. Synthetic records: per method and GPU kind one record, every figure of the row
    from it (never a faster path of another record); the record preferred is one that timed captured
    and recorded in one call with 10+ iterations, over one with fewer iterations, over one that timed
    more paths or is newer; failed rows and other machines' rows are not mixed in."""
    script = load_script()

    def record(device: str, date: str, rows: list[tuple[str, str, float | None]], iters: int = 10) -> dict:
        suite = [
            {
                "suite_method": method,
                "path": path,
                "iters": iters,
                **({"sec_per_iter": s} if s is not None else {"error": "x"}),
            }
            for method, path, s in rows
        ]
        environment = {"device": device, "torch": "2.11.0+cu130", "commit": "abcdef0123", "date": date}
        return {"environment": environment, "stages": {"suite": {"rows": suite}}}

    records = {
        # the newest H100 record, four paths, captured and recorded in one call but 3 iterations a row
        "gpu_check-a.json": record(
            "H100",
            "2026-11-29",
            [("damc", "eager", 0.4), ("damc", "captured", 0.1), ("damc", "recorded", 0.2), ("damc", "fast_bf16", 0.01)],
            iters=3,
        ),
        # 10 iterations, one call: preferred although older and with fewer paths
        "gpu_check-b.json": record("H100", "2026-11-27", [("damc", "captured", 0.12), ("damc", "recorded", 0.11)]),
        # a faster recorded row, but no captured one in its call
        "gpu_check-c.json": record("H100", "2026-11-30", [("damc", "recorded", 0.05), ("damc", "captured", None)]),
        "gpu_check-d.json": record("H200", "2026-11-28", [("damc", "captured_bf16", 0.05)]),
    }
    rows = script.row_sets(records)
    assert [(r["device"], r["record"]) for r in rows] == [("H100", "gpu_check-b.json"), ("H200", "gpu_check-d.json")]
    assert rows[0]["seconds"] == {"captured": 0.12, "recorded": 0.11} and rows[1]["seconds"] == {"captured_bf16": 0.05}
    del records["gpu_check-b.json"]
    rows = script.row_sets(records)
    assert rows[0]["record"] == "gpu_check-a.json" and rows[0]["iters"] == [3]
    text = script.table(rows)
    cells = "| 0.4000 | 0.1000 | 0.2000 |  |  | fast_bf16: 40.00 |"
    assert f"{cells} 1: H100, 2.11.0+cu130, `abcdef0`, 2026-11-29, 3 iterations |" in text
    assert "| DAMC, `damc/svhn` |  |  |  | 0.0500 |  | captured bf16: no eager row | 2: H200, " in text
    named = "Records (under `benchmarks/results/`): 1 `gpu_check-a.json`; 2 `gpu_check-d.json`."
    assert text.splitlines()[-1] == named
    defaults = script.defaults_text(records)
    assert "- DAMC: **captured chains**; fp32: captured, no same-call record with 10+ timed iterations" in defaults
    assert "(nearest: `gpu_check-a.json`, 3 a row, damc captured / recorded 0.500, not counted)" in defaults
