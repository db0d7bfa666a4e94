"""The gap study of LatentEBM's MNIST anomaly row (held-out 4, the 70,000-digit pool) for
``docs/results.md``: the recipe's reading beside each one-factor change, from the records.

The recipe's runs are the ``mnist_anomaly_selections`` records (three seeds, every 100 updates);
each factor is an experiment ``mnist_anomaly_factor_<name>`` (one record per seed) that changes one
setting of the recipe and reads its checkpoint at the same update. A factor is compared with the
recipe at the same seed (the same split and data order) and against the recipe's seed spread.
The training length is its own row: the ``mnist_anomaly_gpu_budget`` records, each read at the
checkpoint its validation split chose.
"""

from __future__ import annotations

import re

from anomaly_rows import mean_and_sd
from results_records import number

#: What each factor experiment changes from the recipe (``recipes/latent_ebm/mnist_anomaly_offline.yaml``).
FACTORS: dict[str, str] = {
    "ngf64": "generator width `ngf 64` (the official code's) instead of 32",
    "posterior40": "posterior chain 40 steps instead of 20",
    "prior100": "prior chain 100 steps instead of 60",
    "latent32": "latent size 32 instead of 100",
    "sigma0p6": "observation sigma 0.6 instead of 0.3 (as sigma 0.3 on pixels in [0, 1])",
    "lr2x": "both learning rates doubled (decoder 2e-4, prior 4e-5)",
}
RECIPE = "mnist_anomaly_selections"
LONGER = "mnist_anomaly_gpu_budget"
PREFIX = "mnist_anomaly_factor_"
DIGIT = 4
PAPER = 0.630
#: The update at which every one-factor run and the recipe's seeds are read.
UPDATE = 500
#: The score's variants (``experiments/anomaly_gap.py``) read at the longer runs' last checkpoint: its
#: records' ``run_setting`` starts with this and names the seed.
PLATEAU_SCORES = "70k pool, 16,000 updates (GPU), seed"
OWN_POSTERIOR = "(the model's)"
#: How many test images a score-variant record scored (its ``run_setting``: "..., 2000 test images").
TEST_IMAGES = re.compile(r"(\d+) test images")


def readings_at(records: list[dict]) -> dict[int, dict]:
    """Each record's reading of its checkpoint at :data:`UPDATE` (its ``val`` and ``test`` scores), by
    seed; a record without one is left out."""
    found = {}
    for record in records:
        for reading in record.get("readings") or []:
            if reading.get("update") == UPDATE and not reading.get("untrained"):
                found[record["seed"]] = reading
    return found


def ours(records: list[dict], experiment: str) -> list[dict]:
    """LatentEBM's records of ``experiment`` on held-out 4, the full pool."""
    return [
        r
        for r in records
        if r.get("method") == "LatentEBM"
        and r.get("experiment") == experiment
        and r.get("digit") == DIGIT
        and r.get("pool") == "full"
    ]


def gap_section(records: list[dict]) -> list[str]:
    """The section's lines: one row per factor with a record, the recipe's row first; nothing when
    no factor has a record. A factor experiment that :data:`FACTORS` does not describe is refused."""
    names = sorted({r["experiment"][len(PREFIX) :] for r in records if str(r.get("experiment")).startswith(PREFIX)})
    unknown = [name for name in names if name not in FACTORS]
    if unknown:
        raise SystemExit(f"scripts/results_gap.py: say what factor {unknown} changes in FACTORS")
    if not names or not ours(records, RECIPE):
        return []
    lines = [
        "## LatentEBM held-out 4: the gap to the paper, one factor at a time",
        "",
        "The recipe (`latent_ebm/mnist_anomaly_offline`, 70,000-digit pool) beside runs that change one "
        "setting, each read at the same update as the recipe's seeds; AUPRC on the validation split and on the "
        f"test split (read once). The paper reads {PAPER:.3f} (Pang et al. 2020, Table 3). "
        '"Change" compares a run with the recipe at the same seed (the same split and data order); the '
        "recipe's own seed spread is the yardstick. Commands: "
        "[the gap log](results/log/2026-11-28-latent-ebm-gap-factors.md).",
        "",
        "| factor | seeds | update | validation AUPRC | test AUPRC | test AUROC | test change, same seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    base = readings_at(ours(records, RECIPE))
    lines.append(row("the recipe (`ngf 32`)", base, None))
    for name in names:
        factor = readings_at(ours(records, PREFIX + name))
        if factor:
            lines.append(row(FACTORS[name], factor, base))
    longer = ours(records, LONGER)
    if longer:
        tests = [r["validation_selected"]["test_auprc"] for r in longer]
        aurocs = [r["validation_selected"]["test_auroc"] for r in longer]
        chosen = ", ".join(f"{u:,}" for u in sorted({r["validation_selected"]["update"] for r in longer}))
        same = [base[r["seed"]]["test"]["score"]["auprc"] for r in longer if r["seed"] in base]
        change = mean_and_sd(tests)[0] - mean_and_sd(same)[0] if same else None
        against = f" (vs the recipe at update {UPDATE:,}, same seeds)" if change is not None else ""
        lines.append(
            f"| training length: {chosen} updates (GPU), checkpoint chosen on validation "
            f"| {', '.join(str(r['seed']) for r in longer)} | {chosen} | | "
            f"{spread(tests)} | {spread(aurocs)} | {signed(change)}{against} |"
        )
    weighted = score_weight_row(records)
    if weighted:
        lines.append(weighted)
    named = f"`docs/results/latent_ebm_{PREFIX}*.json`, `latent_ebm_{RECIPE}.json`, `latent_ebm_{LONGER}.json`"
    lines += ["", f"Records: {named}.", ""]
    return lines


def plateau_scores(records: list[dict], split: str) -> dict[tuple[int, float], dict]:
    """The score-variant readings of the longer runs' 16,000-update checkpoints on held-out 4 and
    ``split`` (``"val"`` or ``"test"``) with the model's own posterior, by (seed, prior weight); two
    readings of one key are refused."""
    found: dict[tuple[int, float], dict] = {}
    for r in records:
        seed = re.match(re.escape(PLATEAU_SCORES) + r" (\d+)", str(r.get("run_setting", "")))
        on_val = str(r.get("split", "")).startswith("validation")
        if (
            r.get("experiment") == "mnist_anomaly_gap"
            and r.get("method") == "LatentEBM"
            and r.get("digit") == DIGIT
            and seed is not None
            and "(16,000 updates)" in str(r.get("budget", ""))
            and on_val == (split == "val")
            and OWN_POSTERIOR in str(r.get("posterior"))
            and r.get("prior_weight") is not None
        ):
            key = (int(seed.group(1)), float(r["prior_weight"]))
            if key in found:
                raise SystemExit(f"scripts/results_gap.py: two {split} readings of seed {key[0]} at weight {key[1]:g}")
            found[key] = r
    return found


def score_weight_row(records: list[dict]) -> str | None:
    """The row of the score's prior weight that the validation split chose at the longer runs'
    16,000-update checkpoints (the highest mean validation AUPRC over the seeds, among the weights
    read on every seed), its test reading against the recipe's weight 1 at the same checkpoints and
    on the same test images (the protocol's seeded draw, ``--limit`` of ``experiments/anomaly_gap.py``
    drawing what ``--max-examples`` of ``anomaly_protocols.py`` draws); None until both splits are read."""
    val, test = plateau_scores(records, "val"), plateau_scores(records, "test")
    seeds_read = sorted({s for s, _ in val})
    weights = sorted(w for w in {w for _, w in val} if all((s, w) in val for s in seeds_read))
    if not weights:
        return None
    mean_val = {w: mean_and_sd([val[(s, w)]["value"] for s in seeds_read])[0] for w in weights}
    chosen = max(weights, key=mean_val.__getitem__)
    seeds = sorted(s for s, w in test if w == chosen and (s, 1.0) in test)
    if chosen == 1.0 or not seeds:
        return None
    tests = [test[(s, chosen)]["value"] for s in seeds]
    aurocs = [test[(s, chosen)]["auroc"] for s in seeds]
    vals = [val[(s, chosen)]["value"] for s in seeds if (s, chosen) in val]
    at_one = [test[(s, 1.0)]["value"] for s in seeds]
    change = mean_and_sd([a - b for a, b in zip(tests, at_one, strict=True)])[0]
    sizes = sorted({m.group(1) for s in seeds if (m := TEST_IMAGES.search(test[(s, chosen)]["run_setting"]))})
    images = f"the protocol's {' / '.join(f'{int(n):,}' for n in sizes)} test images" if sizes else "the test split"
    return (
        f"| the score's prior term weighted {chosen:g} instead of 1 (chosen on validation among "
        f"{', '.join(f'{w:g}' for w in weights)}), at the 16,000-update checkpoints, rescored on {images} (the "
        f"seeded draw every reading of the recipe scores; weight 1 reads {spread(at_one)} there) "
        f"| {', '.join(map(str, seeds))} | 16,000 | {spread(vals)} "
        f"| {spread(tests)} | {spread(aurocs)} | {signed(change)} (vs weight 1, same checkpoints and images) |"
    )


def validation_changes(records: list[dict]) -> dict[str, tuple[float, int]]:
    """Each factor's mean change of held-out 4's validation AUPRC from the recipe's at the same seeds
    and the number of those seeds, by factor name (factors without a same-seed recipe reading left out)."""
    base = readings_at(ours(records, RECIPE))
    changes = {}
    for name in FACTORS:
        diffs = [
            reading["val"]["score"]["auprc"] - base[seed]["val"]["score"]["auprc"]
            for seed, reading in readings_at(ours(records, PREFIX + name)).items()
            if seed in base
        ]
        if diffs:
            changes[name] = (sum(diffs) / len(diffs), len(diffs))
    return changes


def recipe_validation_sd(records: list[dict]) -> float | None:
    """The sample sd of the recipe's held-out-4 validation AUPRC over its seeds at :data:`UPDATE`."""
    base = readings_at(ours(records, RECIPE))
    return mean_and_sd([reading["val"]["score"]["auprc"] for reading in base.values()])[1] if base else None


def row(label: str, readings: dict[int, dict], base: dict[int, dict] | None) -> str:
    """One table row of ``readings`` (seed -> reading): the seeds' mean ± sd, and (``base`` given, the
    recipe's readings) the mean change from the recipe at the same seeds."""
    val = [reading["val"]["score"]["auprc"] for reading in readings.values()]
    test = [reading["test"]["score"]["auprc"] for reading in readings.values()]
    auroc = [reading["test"]["score"]["auroc"] for reading in readings.values()]
    change = ""
    if base is not None:
        diffs = [
            reading["test"]["score"]["auprc"] - base[seed]["test"]["score"]["auprc"]
            for seed, reading in readings.items()
            if seed in base
        ]
        change = signed(sum(diffs) / len(diffs)) if diffs else "no same seed"
    seeds = ", ".join(str(seed) for seed in readings)
    return f"| {label} | {seeds} | {UPDATE:,} | {spread(val)} | {spread(test)} | {spread(auroc)} | {change} |"


def spread(values: list[float]) -> str:
    """``mean ± sd`` of several values, the value alone for one, "–" for none."""
    if not values:
        return "–"
    mean, sd = mean_and_sd(values)
    return number(mean) if sd is None else f"{number(mean)} ± {number(sd)}"


def signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"
