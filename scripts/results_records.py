"""The result records of ``docs/results/`` and what every page made from them shares: loading them,
labelling a record, finding the paper's value it compares with, and narrow Markdown tables.

A record: ``method``, ``experiment``, ``metric``, ``value`` and, where they apply, ``digit``,
``setting``, ``data_split``, ``split``, ``std``, ``budget``, ``device``, ``date``, ``command``. A
published record (``docs/results/published/*.json``) has the same fields plus ``source``, and
``lebm_method`` when one of lebm's methods implements that row of the paper: a record of that
method, metric and digit, in an experiment the published ``experiment`` prefixes
(``mnist_anomaly`` for ``mnist_anomaly_offline``), compares with it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

REQUIRED = ("method", "experiment", "metric", "value")
#: A no-break space: "0.274 ± 0.006" and "CPU, 1 thread" stay on one line in a narrow column.
NBSP = "\u00a0"
#: No table on a results page is wider than this; :func:`markdown_table` refuses one.
MAX_COLUMNS = 9


def load_records(folder: Path) -> list[dict]:
    """Every record of the ``*.json`` files directly in ``folder``; one without a required field
    is an error."""
    records = []
    for path in sorted(folder.glob("*.json")):
        for record in json.loads(path.read_text()):
            missing = [key for key in REQUIRED if key not in record]
            if missing:
                raise ValueError(f"{path}: record {record} lacks {missing}")
            records.append(record)
    return records


def by_experiment(records: list[dict]) -> dict[str, list[dict]]:
    """The records grouped by experiment, experiments sorted by name."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["experiment"]].append(record)
    return dict(sorted(groups.items()))


def number(value: float) -> str:
    """A value as the tables print it: three decimals below 100, two below 10,000, none above."""
    if abs(value) < 100:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 10_000 else f"{value:,.0f}"


def fmt(record: dict | None) -> str:
    """A record's value with its ``± std`` where it has one; "–" for no record."""
    if record is None:
        return "–"
    value = number(record["value"])
    return f"{value}{NBSP}±{NBSP}{number(record['std'])}" if record.get("std") is not None else value


def setting(record: dict, with_metric: bool = False) -> str:
    """What distinguishes a record from others of its method: (``with_metric``) its metric, its
    setting, held-out digit, a data split other than the default and a validation reading."""
    parts = [f"**{record['metric']}**"] if with_metric else []
    if record.get("setting"):
        parts.append(record["setting"])
    if record.get("digit") is not None:
        parts.append(f"held-out {record['digit']}")
    if record.get("data_split") not in (None, "disjoint"):
        parts.append(f"{record['data_split']} split")
    if str(record.get("split", "")).startswith("validation"):
        parts.append("validation")
    return ", ".join(parts) or "–"


def order(record: dict) -> tuple:
    """The order of a table's rows: method, data split, setting, digit, metric, seed."""
    split = record.get("data_split") or "disjoint"
    seed = record.get("seed") if isinstance(record.get("seed"), int) else -1
    return (record["method"], split, record.get("setting") or "", record.get("digit", -1), record["metric"], seed)


def applies_to(published: dict, experiment: str) -> bool:
    """Whether a published record belongs to the paper experiment ``experiment`` reproduces."""
    return experiment.startswith(published["experiment"])


def paper_for(record: dict, published: list[dict]) -> dict | None:
    """The published record of the paper's row that ``record``'s method implements, or None."""
    for paper in published:
        if (
            applies_to(paper, record["experiment"])
            and paper.get("lebm_method") == record["method"]
            and paper["metric"] == record["metric"]
            and paper.get("digit") == record.get("digit")
        ):
            return paper
    return None


#: A run folder or checkpoint named in a budget ("the checkpoint of runs/latent_ebm/.../digit1"): the
#: details page gives it; a table says "a checkpoint" (paths would widen the tables past a screen).
RUN_PATH = re.compile(r"(?:the checkpoint of )?\bruns/\S+")


def short_budget(budget: str) -> str:
    """The first clause of a record's budget ("10 epochs" of "10 epochs, batch 100, ..."), a run path
    in it replaced by "a checkpoint" ("no training: a checkpoint (3 epochs)") and a parenthesis the
    cut leaves open closed."""
    if not budget:
        return "–"
    first = re.split(r"[;,] ", RUN_PATH.sub("a checkpoint", budget), maxsplit=1)[0]
    return first + ")" * (first.count("(") - first.count(")"))


def short_device(device: str) -> str:
    """The short device: "CPU, 1 thread" for the records' "cpu (x86_64, 1 threads)"; a GPU's name as it is."""
    match = re.fullmatch(r"cpu \((.+), (\d+) threads?\)", device or "")
    if match is None:
        return device or "–"
    threads = match.group(2)
    return f"CPU,{NBSP}{threads}{NBSP}thread{'' if threads == '1' else 's'}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table; wider than :data:`MAX_COLUMNS` is an error."""
    if len(header) > MAX_COLUMNS:
        raise ValueError(f"a results table has at most {MAX_COLUMNS} columns, not {len(header)}: {header}")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *[line(row) for row in rows]]
