"""The reproduction status table that opens ``docs/results.md``.

Its rows live in ``docs/results/status/status.json``: ``papers`` maps each paper's name, as the
recipes cite it, to its arXiv id; each of ``rows`` names its ``recipes`` (the first one carries
the ``# Paper target:`` line whose value the row shows), ``ours`` (selectors of the records that
give our value, each ``{"label", "where", "percent"}``; ``where`` maps record fields to a value
or a list of values; ``"seeds": true`` shows the mean ± sample sd over the seeds it picks, per
digit), ``data`` (what ours ran on), ``status`` (one of :data:`STATUSES`, or ``below the paper:
explained by <what> (measured)``), a short ``reason`` and, where a record it shows predates a
change to its recipe or method (``scripts/results_staleness.py``), ``stale`` saying which. The
paper's value is read from the recipe, ours from the records: the row holds no figure of its own.
Its words (``reason``, ``data``, each ``label``) name their figures as ``{name}`` placeholders that
its ``figures`` read from the records (``scripts/results_figures.py``); a numeral typed there fails
``tests/test_results_figures.py``.

A status may blame only what a record shows:

- ``out of reach offline (GPU)`` needs ``rising``, a selector of records with checkpoint readings
  whose test reading at the last update is above the one at half of it (:func:`still_rising`): a
  longer budget would still move the figure; or ``not_run``, naming the run at the paper's scale
  that no record holds (then nothing was measured to be flat);
- ``below the paper: explained by ... (measured)`` needs ``explained_by``, a selector of the
  records that measure the explanation; ``below the paper: unexplained`` needs none.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from results_records import markdown_table, number, short_budget, short_device

from lebm.cli.catalog import catalog

STATUSES = (
    "reproduced",
    "shown in kind",
    "shown in kind on MNIST",
    "shown in kind on one digit",
    "out of reach offline (data)",
    "out of reach offline (GPU)",
    "below the paper: unexplained",
)
#: The statuses that claim a result of ours, so need its records.
CLAIMS = STATUSES[:4]
#: A status that names a measured explanation of a shortfall: ``explained_by`` holds its records.
EXPLAINED = re.compile(r"below the paper: explained by (?P<what>.+) \(measured\)")
#: The statuses that name a shortfall of ours against the paper, so need our records too.
SHORTFALLS = ("out of reach offline (GPU)", "below the paper: unexplained")
HEADER = ["experiment (recipe)", "paper value", "ours", "budget and data", "status"]


def names_paper_row(target: str) -> bool:
    """Whether a recipe's paper-target text names a row of a paper's table: a target that is not
    "none", or a "none here (offline variant ...; the paper's row: ...)"."""
    return bool(target) and (not target.startswith("none") or "the paper's" in target)


def named_targets(recipes: Path) -> dict[str, str]:
    """``{recipe name: target}`` of the runnable recipes below ``recipes`` that name a paper row."""
    return {e.name: e.target for e in catalog(recipes) if not e.fragment and names_paper_row(e.target)}


def paper_value(target: str) -> str:
    """The paper's value a target names: the target itself, or what follows "the paper's" in an
    offline variant's "none here (...)"."""
    if not target.startswith("none"):
        return target
    value = target.split("the paper's", 1)[1].strip().removesuffix(")")
    return value.removeprefix("row:").strip()


def cite(text: str, papers: dict[str, str]) -> str:
    """``text`` with each paper's name linked to its arXiv page (an "arXiv <id>" after the name
    goes: the link holds it)."""
    names = "|".join(re.escape(name) for name in sorted(papers, key=len, reverse=True))
    pattern = rf"({names})(?:,? arXiv:? ?\d{{4}}\.\d{{4,5}})?"
    return re.sub(pattern, lambda m: f"[{m.group(1)}](https://arxiv.org/abs/{papers[m.group(1)]})", text)


def recipe_cell(names: list[str]) -> str:
    """The recipes' names in code, one a line, breakable after their folder."""
    return "<br>".join(f"<code>{name.replace('/', '/<wbr>')}</code>" for name in names)


def matches(record: dict, where: dict) -> bool:
    """Whether ``record`` has every field ``where`` asks for (a list: any of its values)."""
    for key, wanted in where.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if record.get(key) not in options:
            return False
    return True


def selected(selector: dict, records: list[dict]) -> list[dict]:
    """The records a selector picks, in the order its lists give, then by digit; none is an error."""
    where = selector["where"]
    found = [r for r in records if matches(r, where)]
    if not found:
        raise ValueError(f"no record matches {where} (docs/results/status/status.json)")

    def key(record: dict) -> tuple:
        listed = [where[k].index(record[k]) for k in where if isinstance(where[k], list)]
        seed = record.get("seed") if isinstance(record.get("seed"), int) else -1
        return (*listed, record.get("digit", -1), seed)

    return sorted(found, key=key)


def seed_means(records: list[dict]) -> list[str]:
    """The records' values as ``mean ± sample sd (n seeds)`` per digit, in the records' order."""
    by_digit: dict[object, list[float]] = {}
    for record in records:
        by_digit.setdefault(record.get("digit"), []).append(record["value"])
    cells = []
    for values in by_digit.values():
        if len(values) == 1:
            cells.append(f"{number(values[0])} (1 seed)")
        else:
            cells.append(
                f"{number(statistics.mean(values))} ± {number(statistics.stdev(values))} ({len(values)} seeds)"
            )
    return cells


def ours_text(selector: dict, records: list[dict]) -> str:
    """A selector's values, joined by " / ", after its label (``seeds``: their mean ± sd per digit)."""
    picked = selected(selector, records)
    values = [r["value"] for r in picked]
    if selector.get("seeds"):
        text = " / ".join(seed_means(picked))
    elif selector.get("percent"):
        text = " / ".join(f"{100 * v:.1f}" for v in values) + " %"
    else:
        text = " / ".join(number(v) for v in values)
    return f"{selector['label']} {text}".strip() if selector.get("label") else text


def ours_cell(row: dict, records: list[dict]) -> str:
    """Our values, linked to the experiment's table below; "–" without."""
    if not row.get("ours"):
        return "–"
    experiments = list(dict.fromkeys(r["experiment"] for s in row["ours"] for r in selected(s, records)))
    text = "; ".join(ours_text(selector, records) for selector in row["ours"])
    return f"[{text}](#{experiments[0]})"


def budget_cell(row: dict, records: list[dict]) -> str:
    """The short budget and device of the records behind ours, and the data they ran on."""
    if not row.get("ours"):
        return row.get("data", "–")
    runs = {
        f"{short_budget(r.get('budget', ''))}, {short_device(r.get('device', ''))}"
        for selector in row["ours"]
        for r in selected(selector, records)
    }
    return f"{row['data']}; {'; '.join(sorted(runs))}"


def reading_at(record: dict, update: float) -> float:
    """The test AUPRC of the record's last checkpoint reading at or before ``update``."""
    earlier = [r for r in record["readings"] if r["update"] <= update]
    return earlier[-1]["test"]["score"]["auprc"]


def still_rising(record: dict) -> bool:
    """Whether a record's test reading at its last checkpoint is above its reading at half that
    budget (a record without checkpoint readings shows nothing rising)."""
    readings = sorted(record.get("readings") or [], key=lambda r: r["update"])
    if len(readings) < 2:
        return False
    last = readings[-1]["update"]
    if readings[0]["update"] > last / 2:
        return False
    return reading_at({"readings": readings}, last) > reading_at({"readings": readings}, last / 2)


def check_status(row: dict, records: list[dict]) -> None:
    """Refuse a status that blames what no record shows (the module docstring)."""
    status = row["status"]
    if status not in STATUSES and not EXPLAINED.fullmatch(status):
        raise ValueError(
            f"status {status!r} is not one of {STATUSES} nor 'below the paper: explained by ... (measured)'"
        )
    if (status in CLAIMS or status in SHORTFALLS or EXPLAINED.fullmatch(status)) and not row.get("ours"):
        raise ValueError(f"a row {status!r} needs the records of ours: {row['recipes']}")
    if status == "out of reach offline (GPU)" and not row.get("not_run"):
        if "rising" not in row:
            raise ValueError(
                f"{row['recipes'][0]}: a GPU is blamed, but no 'rising' records show the reading still rising"
            )
        flat = [r.get("seed") for r in selected(row["rising"], records) if not still_rising(r)]
        if flat:
            raise ValueError(
                f"{row['recipes'][0]}: a GPU is blamed, but the 'rising' records of seeds {flat} read no higher at "
                "their last checkpoint than at half of it: say 'below the paper: unexplained' or name what explains it"
            )
    if EXPLAINED.fullmatch(status):
        if "explained_by" not in row:
            raise ValueError(f"{row['recipes'][0]}: an explanation needs 'explained_by', the records that measure it")
        selected(row["explained_by"], records)  # none found is an error


def status_row(row: dict, targets: dict[str, str], records: list[dict], papers: dict[str, str]) -> list[str]:
    """One row of the status table."""
    check_status(row, records)
    first = row["recipes"][0]
    if first not in targets:
        raise ValueError(f"recipe {first!r} names no paper row (# Paper target:)")
    return [
        recipe_cell(row["recipes"]),
        cite(paper_value(targets[first]), papers),
        ours_cell(row, records),
        budget_cell(row, records),
        f"**{row['status']}**: {row['reason']}" + (f" (**stale figures**: {row['stale']})" if row.get("stale") else ""),
    ]


def status_section(
    status: dict, targets: dict[str, str], records: list[dict], published: list[dict] | None = None, sizes=None
) -> list[str]:
    """The status table with its heading and a line on how to read it; each row's words with their
    figures read from the records (``results_figures.py``)."""
    from results_figures import Sources, filled_row

    sources = Sources(records, published or [], sizes or {})
    rows = [status_row(filled_row(row, sources), targets, records, status["papers"]) for row in status["rows"]]
    return [
        "## Reproduction status",
        "",
        "One row per paper result a recipe aims at (its `# Paper target:` line, `lebm recipes`); ours",
        "links to the experiment's table below. The rows: `docs/results/status/status.json`.",
        "",
        *markdown_table(HEADER, rows),
        "",
    ]


def load_status(path: Path) -> dict:
    """The status record."""
    return json.loads(path.read_text())
