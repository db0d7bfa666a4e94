"""The per-experiment parts of the results pages: one narrow table per experiment for
``docs/results.md``, and the details below it for ``docs/results/details.md`` (full budgets, the
extra values of each record, the curves, all of the paper's rows, the commands)."""

from __future__ import annotations

import json
from pathlib import Path

from anomaly_rows import UNTRAINED_BELOW, mean_and_sd, seed_groups, seeds_cell, selection_of, updates_cell, updates_of
from results_records import (
    MAX_COLUMNS,
    applies_to,
    fmt,
    markdown_table,
    number,
    order,
    paper_for,
    setting,
    short_budget,
    short_device,
)
from results_sizes import sizes_line

#: Extra per-record values shown in the details when any record of an experiment has them: the
#: AUPRC of each term of an anomaly score, and the test split's, read once, of a record chosen on
#: a validation split.
EXTRA_VALUES = {
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
    "auprc_above_chance": "AUPRC minus chance",
    "test_auroc": "test AUROC",
    "best_of_n.auprc": "best of N readings",
    "best_of_test.test_auprc": "best of N test readings (the paper's selection)",
    "validation_selected.test_auprc": "test, at the validation's best",
    "last.test_auprc": "test, last checkpoint",
    "best_of_n.n": "N",
    "terms_last_evaluation.reconstruction_term.normal_mean": "reconstruction term: normal",
    "terms_last_evaluation.reconstruction_term.anomaly_mean": "reconstruction term: held-out",
    "terms_last_evaluation.prior_term.normal_mean": "prior term: normal",
    "terms_last_evaluation.prior_term.anomaly_mean": "prior term: held-out",
    "terms_last_evaluation.prior_term.auroc": "prior term: AUROC",
}
#: The per-epoch values a record may keep (plotted, and listed in the details).
CURVE_KEY = "auprc_by_epoch"
#: The header of the narrow table every experiment gets.
NARROW_HEADER = ["method", "setting", "ours", "paper", "ratio", "budget", "device", "date"]
#: The header of an anomaly experiment's table (AUPRC per held-out digit): how the figure was
#: selected, the updates behind it (flagged untrained under lebm's threshold), the AUROC, the AUPRC
#: of a random score (the split's anomaly share) and of the strongest score with no model beside each
#: AUPRC, and no ratio, which can reward a worse detector where the paper's value is below chance.
#: Several seeds of one setting and budget are one row (n, mean ± sample sd). Budgets and devices
#: are in the details.
ANOMALY_HEADER = ["method", "setting", "ours", "selection", "updates", "AUROC", "chance", "no model", "paper"]
#: The no-model baselines of every split (``experiments/anomaly_no_model.py``), for records that
#: predate the baseline's being kept in each record.
NO_MODEL_RECORDS = Path(__file__).resolve().parents[1] / "docs" / "results" / "no_model_mnist_anomaly_no_model.json"
#: The held-out digit a no-model score solves (AUPRC about 0.98 at chance 0.39 on MNIST).
SOLVED_WITHOUT_A_MODEL = 1
#: An experiment whose records hold more metrics than this gets a pivot table instead (a row per
#: method and setting, a column per metric) when no paper quotes it.
PIVOT_METRICS = 4


def lookup_value(record: dict, key: str) -> float | None:
    """``record[key]``, or a nested value for a dotted key (``papers_reading.auprc``)."""
    value: object = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value  # type: ignore[return-value]


def several_metrics(records: list[dict]) -> bool:
    """Whether the records hold more than one metric (then each row names its own)."""
    return len({r["metric"] for r in records}) > 1


def ratio(record: dict, paper: dict | None) -> str:
    """ours / paper to two decimals, or "–"."""
    if paper is None or not paper["value"]:
        return "–"
    return f"{record['value'] / paper['value']:.2f}"


def narrow_row(
    record: dict, published: list[dict], with_metric: bool, with_paper: bool, with_ratio: bool = True
) -> list[str]:
    """One row of the narrow table (:data:`NARROW_HEADER`, without the paper's columns when
    ``with_paper`` is False, without the ratio when ``with_ratio`` is False)."""
    paper = paper_for(record, published)
    compared = [fmt(paper), *([ratio(record, paper)] if with_ratio else [])] if with_paper else []
    return [
        record["method"],
        setting(record, with_metric),
        fmt(record),
        *compared,
        short_budget(record.get("budget", "")),
        short_device(record.get("device", "")),
        record.get("date", "–"),
    ]


def is_anomaly_experiment(records: list[dict]) -> bool:
    """Whether every record is an AUPRC with a held-out digit (an MNIST anomaly experiment)."""
    return all(r["metric"] == "auprc" and r.get("digit") is not None for r in records)


def no_model_reading(record: dict) -> dict | None:
    """The no-model baseline ``{"value", "best"}`` a record reads against: its own (kept by
    ``anomaly_protocols.py`` for its test split), else that of the whole evaluation pool of its
    pool and digit (``experiments/anomaly_no_model.py``; any split of it reads within 0.03)."""
    if record.get("method") == "no model":
        return None
    kept = record.get("no_model") or {}
    own = kept.get("test") or kept.get("val")  # the split the record's value was read on
    if own is not None:
        return {"value": own["auprc"], "best": own["best"]}
    if record.get("digit") is None or record.get("data_split") == "cited" or not NO_MODEL_RECORDS.exists():
        return None  # the baselines are of the disjoint splits
    command = str(record.get("command", ""))
    offline_recipe = "_offline.yaml" in command and "--pool full" not in command
    offline = offline_recipe or "offline" in str(record.get("experiment", "")) + str(record.get("budget", ""))
    pool = record.get("pool") or ("offline" if offline else "full")
    for baseline in json.loads(NO_MODEL_RECORDS.read_text()):
        if (
            baseline["digit"] == record["digit"]
            and baseline["pool"] == pool
            and baseline["setting"].startswith("evaluation")
        ):
            return {"value": baseline["value"], "best": baseline["best"]}
    return None


def anomaly_setting(record: dict, group: list[dict] | None = None) -> str:
    """:func:`setting`, held-out 1 marked as the digit a no-model score solves, with the seeds of
    ``group`` (the record's own seed when no group is given)."""
    text = setting(record)
    if record.get("digit") == SOLVED_WITHOUT_A_MODEL:
        text = text.replace(
            f"held-out {SOLVED_WITHOUT_A_MODEL}", f"held-out {SOLVED_WITHOUT_A_MODEL} (solved with no model)"
        )
    if group is not None:
        return f"{text}, {seeds_cell(group)}"
    return text + (f", seed {record['seed']}" if record.get("seed") is not None else "")


def anomaly_groups(records: list[dict]) -> list[list[dict]]:
    """The rows of an anomaly table: records that differ only by seed, at the same updates, as one
    group; every other record alone."""
    groups = []
    for group in seed_groups(records):
        by_updates: dict[int | None, list[dict]] = {}
        for record in group:
            by_updates.setdefault(updates_of(record), []).append(record)
        groups += list(by_updates.values())
    return sorted(groups, key=lambda group: order(group[0]))


def anomaly_row(record: dict, published: list[dict], group: list[dict] | None = None) -> list[str]:
    """One row of an anomaly table (:data:`ANOMALY_HEADER`) for ``record``, or for the seeds of
    ``group`` (their mean ± sample sd): the selection, the updates (untrained flagged), the AUROC
    (of the same readings, or of the test split read once for a validation record), the chance
    AUPRC, the no-model baseline (:func:`no_model_reading`), and the paper's value marked where it is
    below chance or below the baseline."""
    group = group if group is not None else [record]
    if len(group) > 1:
        mean, sd = mean_and_sd([r["value"] for r in group])
        aurocs = [r.get("auroc", r.get("test_auroc")) for r in group]
        auroc_mean = mean_and_sd(aurocs)[0] if all(a is not None for a in aurocs) else None
        record = {**group[0], "value": mean, "std": sd, "auroc": auroc_mean, "test_auroc": None}
    paper = paper_for(record, published)
    auroc = record.get("auroc", record.get("test_auroc"))
    chance = record.get("chance")
    baseline = no_model_reading(record)
    paper_cell = fmt(paper)
    if paper is not None and chance is not None and paper["value"] < chance:
        paper_cell += ", below chance"
    elif paper is not None and baseline is not None and paper["value"] <= baseline["value"]:
        paper_cell += ", below the no-model baseline"
    ours = fmt(record)
    if baseline is not None and record["value"] <= baseline["value"]:
        ours += " (no better than no model)"
    return [
        record["method"],
        anomaly_setting(record, group if len(group) > 1 or record.get("seed") is not None else None),
        ours,
        selection_of(record),
        updates_cell(record, group),
        "–" if auroc is None else number(auroc),
        "–" if chance is None else number(chance),
        "–" if baseline is None else f"{number(baseline['value'])} ({baseline['best'].replace('_', ' ')})",
        paper_cell,
    ]


#: The header of an anomaly experiment's second table, for records that keep every evaluation's
#: readings (``experiments/anomaly_protocols.py``): both selections and each term in nats.
READINGS_HEADER = [
    "method",
    "setting",
    "best of N test readings (DAMC's selection)",
    "mean of the last 10 test readings (LEBM's; the last 3 beside)",
    "test, at the validation's best (ours)",
    "chance / no model",
    "reconstruction term: normal / held-out (AUROC)",
    "prior term: normal / held-out (AUROC)",
]


def term_cell(term: dict | None) -> str:
    """A term's mean on the normal and on the held-out examples (as the score adds it) and its own AUROC."""
    if term is None:
        return "–"
    return f"{term['normal_mean']:.1f} / {term['anomaly_mean']:.1f} ({number(term['auroc'])})"


def last_readings_mean(record: dict, k: int = 10) -> dict | None:
    """LEBM's selection from a record's kept readings: the mean (and sample sd) of its last ``k``
    test readings, ``{"updates", "test_auprc", "test_auprc_std", "test_auroc"}`` (None without readings)."""
    readings = [r for r in record.get("readings", []) if "score" in r.get("test", {})][-k:]
    if not readings:
        return None
    auprc = mean_and_sd([float(r["test"]["score"]["auprc"]) for r in readings])
    aurocs = [float(r["test"]["score"]["auroc"]) for r in readings if "auroc" in r["test"]["score"]]
    return {
        "updates": [r["update"] for r in readings],
        "test_auprc": auprc[0],
        "test_auprc_std": auprc[1] or 0.0,
        "test_auroc": sum(aurocs) / len(aurocs) if len(aurocs) == len(readings) else None,
    }


def readings_row(record: dict) -> list[str]:
    """One row of :data:`READINGS_HEADER`: the best-of-N and validation-selected test readings,
    and the terms of the test reading at the validation-selected checkpoint."""
    best, chosen = record["best_of_test"], record["validation_selected"]
    test = next(r["test"] for r in record["readings"] if r["update"] == chosen["update"])
    n = len(record["readings"])
    recent, last_three = last_readings_mean(record), record.get("last_mean")
    last_cell = (
        "–"
        if recent is None
        else (
            f"{number(recent['test_auprc'])} ± {number(recent['test_auprc_std'])} "
            f"(AUROC {'–' if recent['test_auroc'] is None else number(recent['test_auroc'])}; "
            f"last {len(recent['updates'])})"
        )
    )
    if last_three is not None:
        last_cell += f"; last {len(last_three['updates'])}: {number(last_three['test_auprc'])}"
    baseline = no_model_reading(record)
    chance = record.get("chance")
    return [
        record["method"],
        anomaly_setting(record),
        f"{number(best['test_auprc'])} (AUROC {number(best['test_auroc'])}; best of {n})",
        last_cell,
        f"{number(chosen['test_auprc'])} (AUROC {number(chosen['test_auroc'])}; update {chosen['update']}"
        + (f", untrained: under {UNTRAINED_BELOW})" if chosen["update"] < UNTRAINED_BELOW else ")"),
        f"{'–' if chance is None else number(chance)} / {'–' if baseline is None else number(baseline['value'])}",
        term_cell(test.get("reconstruction_term")),
        term_cell(test.get("prior_term")),
    ]


def readings_table(ours: list[dict]) -> list[str]:
    """The second table of an anomaly experiment whose records keep their readings: whether a gap
    is the protocol (the two selections), the model (which term ranks the held-out digit) or the
    budget (the updates, in the first table)."""
    kept = [r for r in sorted(ours, key=order) if r.get("readings") and r.get("validation_selected")]
    if not kept:
        return []
    return [
        "Each record's selections read on its test split (the best of its N test readings, as DAMC's code "
        "selects; the mean of the last 10 test readings, as LEBM reports its last 10 epochs, with the mean of "
        "the last 3 beside it; the test reading at the "
        "validation split's best, ours), chance and the no-model baseline of that split, and its score's "
        "terms at the validation's choice: the mean over the normal and over the held-out digits as the score "
        "adds them (nats "
        "of a Gaussian likelihood; DAMC's official score adds the squared error unweighted), and the "
        "term's own AUROC:",
        "",
        *markdown_table(READINGS_HEADER, [readings_row(r) for r in kept]),
        "",
    ]


def sources_line(ours: list[dict], published: list[dict]) -> str:
    """Which metric the table shows and which paper rows its "paper" column quotes."""
    metric = "" if several_metrics(ours) else f"Metric: `{ours[0]['metric']}`. "
    papers = [paper_for(record, published) for record in sorted(ours, key=order)]
    quoted = list(dict.fromkeys((p.get("source", "the paper"), p["method"]) for p in papers if p is not None))
    if not quoted:
        return metric + "No paper reports this experiment's numbers."
    selections = {(p.get("source", "the paper"), p["method"]): p.get("selection") for p in papers if p is not None}
    rows = "; ".join(
        f"{source}, row {method}" + (f" ({selections[source, method]})" if selections[source, method] else "")
        for source, method in quoted
    )
    if is_anomaly_experiment(ours) or all(r["metric"] == "auprc" for r in ours):
        line = metric + (
            f"Paper: {rows}. Chance: the AUPRC of a random score, the evaluated split's anomaly share. No model: the "
            "highest AUPRC of three scores with no model (the squared distance to the untrained generator's level, "
            "to the background, to the mean training image) on the same split "
            "([mnist_anomaly_no_model](#mnist_anomaly_no_model)); held-out 1 is solved with no model."
        )
        if any(record.get("auroc", record.get("test_auroc")) is None for record in ours):
            line += (
                " Rows without an AUROC were recorded before it was kept: read them against chance; the re-read "
                "with both selections and the terms is [mnist_anomaly_protocols](#mnist_anomaly_protocols)."
            )
        return line
    if all(r["metric"].startswith("auprc") for r in ours):  # no ratio column (experiment_section)
        return metric + f"Paper: {rows}. AUPRCs are read against chance, not as a ratio to the paper's."
    return metric + f"Paper: {rows}; ratio: ours / paper."


def pivot_tables(ours: list[dict]) -> list[str]:
    """A row per method and setting, a column per metric (tables of at most :data:`MAX_COLUMNS`
    columns), each cell the record's value with its spread."""
    metrics = list(dict.fromkeys(r["metric"] for r in sorted(ours, key=lambda r: r["metric"])))
    variants = list(dict.fromkeys((r["method"], setting(r)) for r in sorted(ours, key=order)))
    cell = {(r["method"], setting(r), r["metric"]): fmt(r) for r in ours}
    lines = []
    for part in chunks(metrics, MAX_COLUMNS - 2):
        rows = [[method, name, *(cell.get((method, name, m), "–") for m in part)] for method, name in variants]
        lines += [*markdown_table(["method", "setting", *[f"`{m}`" for m in part]], rows), ""]
    return lines


def figures(ours: list[dict]) -> list[str]:
    """The figures the records name (``figure``: a path relative to ``docs/``), once each."""
    named = dict.fromkeys(r["figure"] for r in sorted(ours, key=order) if r.get("figure"))
    return [line for path in named for line in (f"![{Path(path).stem}]({path})", "")]


def experiment_section(
    experiment: str, ours: list[dict], published: list[dict], plot: str | None, sizes: dict[str, dict] | None = None
) -> list[str]:
    """The section of ``docs/results.md`` for one experiment: the narrow table (or the pivot table
    of an experiment of many metrics and no paper), its plot and figures, a link to the details;
    where it sets several methods side by side, their sizes (``sizes``: :mod:`results_sizes`)."""
    with_metric = several_metrics(ours)
    with_paper = any(paper_for(r, published) is not None for r in ours)
    lines = [f"## {experiment}", "", sources_line(ours, published), ""]
    lines += sizes_line(ours, sizes or {})
    if not with_paper and len({r["metric"] for r in ours}) > PIVOT_METRICS:
        lines += pivot_tables(ours)
    else:
        header = NARROW_HEADER if with_paper else [c for c in NARROW_HEADER if c not in ("paper", "ratio")]
        with_ratio = not all(r["metric"].startswith("auprc") for r in ours)  # a ratio of AUPRCs rewards noise
        header = header if with_ratio else [c for c in header if c != "ratio"]
        auprcs = [r for r in ours if r["metric"] == "auprc"]
        rest = [r for r in ours if r["metric"] != "auprc"] if auprcs else ours
        if auprcs:  # read against chance, AUROC and the no-model baseline: a ratio would reward noise below chance
            rows = [anomaly_row(group[0], published, group) for group in anomaly_groups(auprcs)]
            lines += [*markdown_table(ANOMALY_HEADER, rows), ""]
        if rest:
            ordered = sorted(rest, key=lambda r: (r["metric"], *order(r)) if with_metric else order(r))
            rows = [narrow_row(r, published, with_metric, with_paper, with_ratio) for r in ordered]
            lines += [*markdown_table(header, rows), ""]
        if is_anomaly_experiment(ours):
            lines += readings_table(ours)
    if plot is not None:
        lines += [f"![{experiment}: {CURVE_KEY} of each record, the paper's value dashed]({plot})", ""]
    lines += figures(ours)
    details = "full budgets, commands, the paper's other rows"
    lines += [f"Details: [{details}](results/details.md#{experiment}).", ""]
    return lines


def budget_lines(ours: list[dict]) -> list[str]:
    """Each distinct full budget, with the methods and device that ran it."""
    runs: dict[tuple[str, str], list[str]] = {}
    for record in sorted(ours, key=order):
        methods = runs.setdefault((record.get("budget", "–"), record.get("device", "–")), [])
        if record["method"] not in methods:
            methods.append(record["method"])
    return [f"- {', '.join(methods)}: {budget} ({device})" for (budget, device), methods in runs.items()]


def chunks(items: list, size: int) -> list[list]:
    """``items`` in consecutive pieces of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def extra_tables(ours: list[dict]) -> list[str]:
    """The extra values of the records (:data:`EXTRA_VALUES`), in tables of at most
    :data:`MAX_COLUMNS` columns."""
    keys = [key for key in EXTRA_VALUES if any(lookup_value(r, key) is not None for r in ours)]
    lines = []
    for part in chunks(keys, MAX_COLUMNS - 2):
        rows = []
        for record in sorted(ours, key=order):
            values = [lookup_value(record, key) for key in part]
            if any(value is not None for value in values):
                cells = ["–" if value is None else number(value) for value in values]
                rows.append([record["method"], setting(record), *cells])
        lines += [*markdown_table(["method", "setting", *[EXTRA_VALUES[k] for k in part]], rows), ""]
    return ["**More values of each record.**", "", *lines] if lines else []


def curve_table(ours: list[dict]) -> list[str]:
    """The value after every epoch of the records that keep it (:data:`CURVE_KEY`)."""
    curves = [r for r in sorted(ours, key=order) if r.get(CURVE_KEY)]
    if not curves:
        return []
    rows = [[r["method"], setting(r), " ".join(number(v) for v in r[CURVE_KEY])] for r in curves]
    return [
        f"**After each epoch** (`{CURVE_KEY}`, epoch 1 first).",
        "",
        *markdown_table(["method", "setting", "values"], rows),
        "",
    ]


def paper_tables(experiment: str, published: list[dict]) -> list[str]:
    """All of the paper's rows for this experiment: one row per method, one column per digit or
    metric, in tables of at most :data:`MAX_COLUMNS` columns."""
    papers = [p for p in published if applies_to(p, experiment)]
    if not papers:
        return []
    with_metric = several_metrics(papers)
    columns = sorted({(p["metric"], p.get("digit", -1)) for p in papers})
    methods = list(dict.fromkeys(p["method"] for p in papers))
    value = {(p["method"], p["metric"], p.get("digit", -1)): p for p in papers}
    sources = "; ".join(dict.fromkeys(p.get("source", "the paper") for p in papers))
    lines = [f"**The papers' rows** ({sources}).", ""]
    for part in chunks(columns, MAX_COLUMNS - 1):
        names = [setting({"metric": m, "digit": d if d != -1 else None}, with_metric) for m, d in part]
        header = ["method", *[name.replace("**", "") for name in names]]
        rows = [[method, *[fmt(value.get((method, m, d))) for m, d in part]] for method in methods]
        lines += [*markdown_table(header, rows), ""]
    return lines


def commands_block(ours: list[dict]) -> list[str]:
    """The commands that made the records (and the fit a re-scored record read)."""
    commands = sorted({r[key] for r in ours for key in ("command", "fit_command", "training_command") if r.get(key)})
    return ["**Commands.**", "", "```bash", *commands, "```", ""] if commands else []


def details_section(experiment: str, ours: list[dict], published: list[dict]) -> list[str]:
    """The section of ``docs/results/details.md`` for one experiment."""
    return [
        f"## {experiment}",
        "",
        f"The table: [results](../results.md#{experiment}).",
        "",
        "**Budgets** (device as the records name it).",
        "",
        *budget_lines(ours),
        "",
        *extra_tables(ours),
        *curve_table(ours),
        *paper_tables(experiment, published),
        *commands_block(ours),
    ]
