"""LatentEBM's whole MNIST anomaly row (Pang et al. 2020, Table 3: held-out 1, 4, 5, 7 and 9) as lebm
reads it, for ``docs/results.md``: one column per held-out digit, from the records.

The runs are the ``mnist_anomaly_selections`` records of the recipe on the 70,000-digit pool, one per
digit and seed (the recipe's own score: ``protocol`` ``recipe``), each keeping its checkpoints'
readings on both splits. Every run is read up to the same update, :data:`BUDGET` (some ran longer),
at its trained checkpoints (none before lebm's untrained threshold). Two selections of the same
readings stand side by side:

- **ours**: the test split read once, at the checkpoint of the highest validation AUPRC (the
  earliest of equals); the seeds' mean ± sample sd;
- **the paper's**: the mean of each run's last 10 test readings (all of them when it kept fewer), as
  LEBM reports the mean of its last 10 epochs; the seeds' mean ± sd of those means.

Beside them, per digit: the test AUROC at the validation's choice, the test split's chance (its
anomaly share) and the no-model score (the best of three scores with no model on the same split).
"""

from __future__ import annotations

from anomaly_rows import mean_and_sd, updates_of
from results_gap import FACTORS, recipe_validation_sd, spread, validation_changes
from results_records import fmt, number
from results_tables import no_model_reading

RECIPE = "mnist_anomaly_selections"
DIGITS = (1, 4, 5, 7, 9)
#: The seeds every digit needs before the row counts as whole.
SEEDS_WANTED = 3
#: The update every run is read up to: the budget all digits' runs share.
BUDGET = 500
#: LEBM's selection: the mean of this many last test readings.
LAST_K = 10


def runs_of(records: list[dict], digit: int) -> list[dict]:
    """LatentEBM's recipe records of held-out ``digit`` on the full pool, by seed; two records of one
    seed are refused (which one the row reads would be chance)."""
    found = [
        r
        for r in records
        if r.get("method") == "LatentEBM"
        and r.get("experiment") == RECIPE
        and r.get("digit") == digit
        and r.get("pool") == "full"
        and r.get("protocol", "recipe") == "recipe"
        and isinstance(r.get("seed"), int)
    ]
    seeds = [r["seed"] for r in found]
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise SystemExit(f"scripts/results_row.py: held-out {digit} has two recipe records of seed {twice}: keep one")
    return sorted(found, key=lambda r: r["seed"])


def trained_readings(record: dict) -> list[dict]:
    """A run's readings up to :data:`BUDGET` with a score on both splits, none of them untrained, by update."""
    kept = [
        reading
        for reading in record.get("readings") or []
        if reading.get("update", BUDGET + 1) <= BUDGET
        and not reading.get("untrained")
        and "score" in reading.get("val", {})
        and "score" in reading.get("test", {})
    ]
    return sorted(kept, key=lambda reading: reading["update"])


def chosen_reading(record: dict) -> dict | None:
    """The reading of the highest validation AUPRC (the earliest of equals), or None."""
    readings = trained_readings(record)
    return max(readings, key=lambda r: (r["val"]["score"]["auprc"], -r["update"])) if readings else None


def last_mean(record: dict) -> float | None:
    """The mean test AUPRC of a run's last :data:`LAST_K` trained readings (LEBM's selection), or None."""
    readings = trained_readings(record)[-LAST_K:]
    return mean_and_sd([r["test"]["score"]["auprc"] for r in readings])[0] if readings else None


def paper_value(published: list[dict], digit: int) -> dict | None:
    """LEBM's published AUPRC on held-out ``digit`` (``{"value", "std", ...}``), or None."""
    for paper in published:
        same_row = paper.get("lebm_method") == "LatentEBM" and paper.get("experiment") == "mnist_anomaly"
        if same_row and paper.get("metric") == "auprc" and paper.get("digit") == digit:
            return paper
    return None


def one_or_spread(values: list[float]) -> str:
    """The value once when every seed shares it (a split's chance, its no-model score), else :func:`spread`."""
    return number(values[0]) if values and len(set(values)) == 1 else spread(values)


def digit_column(runs: list[dict], paper: dict | None) -> dict:
    """One digit's cells, keyed by the row they go in, and its means (``"means"``: ours, chance, no model)."""
    chosen = [c for c in map(chosen_reading, runs) if c is not None]
    ours = [c["test"]["score"]["auprc"] for c in chosen]
    chance = [c["test"]["anomaly_rate"] for c in chosen if "anomaly_rate" in c["test"]]
    no_model = [b["value"] for b in map(no_model_reading, runs) if b is not None]
    scored = sorted({c["test"]["n"] for c in chosen if "n" in c["test"]})
    trained = sorted({u for u in map(updates_of, runs) if u is not None})
    return {
        "paper": fmt(paper),
        "ours": spread(ours),
        "last": spread([m for m in map(last_mean, runs) if m is not None]),
        "gap": f"{mean_and_sd(ours)[0] - paper['value']:+.3f}" if paper is not None and ours else "",
        "auroc": spread([c["test"]["score"]["auroc"] for c in chosen]),
        "chance": one_or_spread(chance),
        "no_model": one_or_spread(no_model),
        "seeds": ", ".join(str(r["seed"]) for r in runs) or "none",
        "read": ", ".join(f"{c['update']:,}" for c in chosen) or "–",
        "scored": " / ".join(f"{n:,}" for n in scored) or "–",
        "updates": " / ".join(f"{u:,}" for u in trained) or "–",
        "means": {
            "ours": mean_and_sd(ours)[0] if ours else None,
            "chance": mean_and_sd(chance)[0] if chance else None,
            "no_model": mean_and_sd(no_model)[0] if no_model else None,
            "paper": paper["value"] if paper is not None else None,
        },
    }


ROWS = (
    ("paper", "Pang et al. 2020, Table 3 (LEBM: the mean of its last 10 epochs' test readings)"),
    ("ours", "**ours: the test split read once, at the validation's best**"),
    ("last", "ours with the paper's selection (the mean of each run's last 10 test readings, all when it kept fewer)"),
    ("gap", "ours less the paper"),
    ("auroc", "test AUROC at the validation's best"),
    ("chance", "chance (the test split's anomaly share)"),
    ("no_model", "no model (the best of three scores with no model)"),
    ("seeds", "seeds"),
    ("read", "the update the validation chose, by seed"),
    ("scored", "digits scored per split"),
    ("updates", f"updates each run trained (read up to {BUDGET:,})"),
)


def setting_sentence(records: list[dict]) -> str:
    """Whether the recipe is the best validated setting: the one-factor change that raised held-out 4's
    validation AUPRC most, against the recipe's validation seed spread; a change read on one seed
    decides nothing."""
    changes = validation_changes(records)
    sd = recipe_validation_sd(records)
    if not changes:
        return "No one-factor change has been read on validation yet, so the recipe is untested against any."
    if sd is None:
        return "The recipe has one seed on validation, so no change can be read against its spread yet."
    best = max(changes, key=lambda name: changes[name][0])
    change, seeds = changes[best]
    measured = (
        f"{FACTORS[best]}: {change:+.3f} on validation against the recipe at the same "
        f"{'seed' if seeds == 1 else f'{seeds} seeds'}, where the recipe's seed sd is {number(sd)}"
    )
    if change > sd and seeds >= 2:
        return (
            f"A one-factor change reads higher on validation than the recipe's seed spread ({measured}): "
            "the row is not yet at the best validated setting."
        )
    if change > 0 and seeds < 2:
        return (
            "No one-factor change in the gap study below is shown to beat the recipe on validation: the largest "
            f"rise ({measured}) was read on one seed, which cannot tell it from seed noise; a second seed decides."
        )
    return (
        "The recipe is the best validated setting at this budget: no one-factor change in the gap study below raised "
        f"held-out 4's validation AUPRC beyond the recipe's seed spread (the most, {measured})."
    )


def no_detector_sentence(columns: dict[int, dict]) -> str:
    """The digits whose reading is no detector: below chance (while a score with no model reads
    higher), or above chance but no higher than the score with no model."""
    said = []
    for digit, column in columns.items():
        means = column["means"]
        if means["ours"] is None or means["chance"] is None:
            continue
        if means["ours"] >= means["chance"]:
            if means["no_model"] is not None and means["ours"] <= means["no_model"]:
                said.append(
                    f"Held-out {digit} reads above chance but no higher than a score with no model "
                    f"({number(means['ours'])} against {number(means['no_model'])}): at this budget the model "
                    "detects it no better than no model."
                )
            continue
        paper = means["paper"]
        like = f", as the paper's {number(paper)} does," if paper is not None and paper < means["chance"] else ""
        no_model = f" while a score with no model reads {number(means['no_model'])}" if means["no_model"] else ""
        said.append(
            f"Held-out {digit} reads below chance ({number(means['ours'])} against {number(means['chance'])}){like}"
            f"{no_model}: it measures no detector."
        )
    return " ".join(said)


def row_section(records: list[dict], published: list[dict]) -> list[str]:
    """The section's lines: a column per held-out digit, a row per reading (:data:`ROWS`); nothing
    when no digit has a record."""
    runs = {digit: runs_of(records, digit) for digit in DIGITS}
    columns = {digit: digit_column(runs[digit], paper_value(published, digit)) for digit in DIGITS}
    if not any(runs.values()):
        return []
    short = [digit for digit in DIGITS if len(runs[digit]) < SEEDS_WANTED]
    whole = (
        f"Every digit has {SEEDS_WANTED} seeds."
        if not short
        else f"Held-out {', '.join(map(str, short))} have fewer than {SEEDS_WANTED} seeds so far."
    )
    lines = [
        "## LatentEBM on Pang et al. 2020, Table 3: the whole row",
        "",
        "The recipe (`latent_ebm/mnist_anomaly_offline` on the 70,000-digit pool: 20% of the evaluation digits "
        "for validation, `ngf 32`, CPU, one thread), one run per held-out digit and seed, every run read at its "
        f"checkpoints up to update {BUDGET:,}. " + setting_sentence(records) + " The paper's selection is shown "
        "beside ours; it reads the test split many times, ours once. "
        + whole
        + " "
        + no_detector_sentence(columns)
        + " Commands: [the gap log](results/log/2026-11-28-latent-ebm-gap-factors.md).",
        "",
        "| AUPRC | " + " | ".join(f"held-out {digit}" for digit in DIGITS) + " |",
        "|---|" + "---|" * len(DIGITS),
    ]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(columns[digit][key] for digit in DIGITS) + " |")
    lines += ["", f"Records: `docs/results/latent_ebm_{RECIPE}.json`, `published/lebm_paper_table3.json`.", ""]
    return lines
