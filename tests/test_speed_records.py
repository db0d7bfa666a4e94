"""Speed figures stand beside their records (device: CPU; reads the docs and the stored GPU records).

- ``docs/performance.md`` opens with the fastest measured settings per method and GPU kind, and
  that table is the one ``scripts/fastest_settings.py`` generates from ``benchmarks/results/``;
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
    """Device: CPU. The table between the markers is the one the records give now."""
    script = load_script()
    page = script.PAGE.read_text()
    generated = script.table(script.fastest_rows(script.load_records()))
    assert script.with_table(page, generated) == page, "run python scripts/fastest_settings.py --write"
    first_section = page.split("\n## ", 2)[1]
    assert first_section.startswith("The fastest measured settings") and script.START in first_section
    rows = [line for line in generated.splitlines()[2:] if line.startswith("| ")]
    named = generated.splitlines()[-1]
    for row in rows:
        number = row.rstrip(" |").rsplit("| ", 1)[1].split(":")[0]
        assert f"{number} `gpu_check-" in named and "+cu" in row  # its record's file, its torch


def test_the_fastest_row_is_chosen_per_gpu_kind_with_its_own_runs_eager_row() -> None:
    """Device: CPU. Synthetic records: the fastest timed row of each method on each GPU kind, its
    ratio over the eager row of the same record; failed rows and other machines' rows not mixed in."""
    script = load_script()

    def record(device: str, rows: list[tuple[str, str, float | None]]) -> dict:
        suite = [
            {"suite_method": method, "path": path, **({"sec_per_iter": s} if s is not None else {"error": "x"})}
            for method, path, s in rows
        ]
        environment = {"device": device, "torch": "2.11.0+cu130", "commit": "abcdef0123", "date": "2026-11-27"}
        return {"environment": environment, "stages": {"suite": {"rows": suite}}}

    records = {
        "gpu_check-a.json": record(
            "H100", [("damc", "eager", 0.4), ("damc", "captured", 0.1), ("damc", "recorded", None)]
        ),
        "gpu_check-b.json": record("H100", [("damc", "eager", 0.5), ("damc", "captured_bf16", 0.12)]),
        "gpu_check-c.json": record("H200", [("damc", "recorded_bf16", 0.05)]),
    }
    rows = script.fastest_rows(records)
    assert [(r["device"], r["path"], r["record"]) for r in rows] == [
        ("H100", "captured", "gpu_check-a.json"),
        ("H200", "recorded_bf16", "gpu_check-c.json"),
    ]
    assert rows[0]["eager_sec_per_iter"] == 0.4 and rows[1]["eager_sec_per_iter"] is None
    text = script.table(rows)
    assert "| 4.00 |" in text and "no eager row" in text and "| 1: `abcdef0`, 2026-11-27 |" in text
    assert text.splitlines()[-1] == "Records (under `benchmarks/results/`): 1 `gpu_check-a.json`; 2 `gpu_check-c.json`."
