"""What every row of an anomaly table states beside its AUPRC: how the figure was selected, the
updates behind it with the untrained flag, and its seeds (several seeds of one setting as one row,
n with the mean and the sample standard deviation).

The untrained flag uses lebm's threshold (``lebm.callbacks.metrics.UNTRAINED_BELOW``): a reading
before that many updates measures the untrained generator's output level, not a model.
"""

from __future__ import annotations

import re
import statistics

from lebm.callbacks.metrics import UNTRAINED_BELOW

#: Training digits of the offline pool's disjoint split (records ``training_digits``), for records
#: that give their budget in epochs: one epoch is this many digits over the batch.
OFFLINE_TRAINING_DIGITS = 10_692
#: A figure taken from readings of the test split (the papers' way) says so.
ON_THE_TEST_SPLIT = "read on the test split, as the papers did"


def updates_of(record: dict) -> int | None:
    """The updates the reading's weights hold: the record's ``updates`` (the last, for a list), the
    budget's "N updates", or, on the offline pool, its epochs times the updates of one epoch at its
    batch size (``OFFLINE_TRAINING_DIGITS // batch``); None when the record says neither."""
    kept = record.get("updates")
    if isinstance(kept, list) and kept:
        return int(max(kept))
    if isinstance(kept, (int, float)):
        return int(kept)
    budget = str(record.get("budget", ""))
    named = re.search(r"(\d[\d,]*) updates", budget)
    if named:
        return int(named.group(1).replace(",", ""))
    epochs = re.search(r"(\d+) epochs?\b", budget)
    batch = re.search(r"batch (\d+)", budget)
    offline = "offline" in str(record.get("experiment", "")) or "offline pool" in budget
    subset = "pool_" in str(record.get("setting", ""))  # a fraction of the pool: another epoch length
    if epochs and batch and offline and not subset:
        return int(epochs.group(1)) * (OFFLINE_TRAINING_DIGITS // int(batch.group(1)))
    return None


#: How a validation-selected record names its selection (``experiments/anomaly_protocols.py``).
VALIDATION_SELECTED = "test, at the checkpoint of the highest validation"


def selected_update(record: dict) -> int | None:
    """The update of the checkpoint a validation-selected figure was read at; None for a figure
    selected another way (it holds the run's updates)."""
    chosen = record.get("validation_selected")
    if isinstance(chosen, dict) and str(record.get("split", "")).startswith(VALIDATION_SELECTED):
        return int(chosen["update"])
    return None


def updates_cell(record: dict, group: list[dict] | None = None) -> str:
    """The run's updates, "untrained" under :data:`UNTRAINED_BELOW`, or the budget's epochs when the
    updates are not known (then whether it is trained is not known either). A validation-selected
    figure adds the update of the checkpoint it was read at, seed by seed for a ``group`` of seeds,
    and names the seeds whose checkpoint is untrained (their reading measures the untrained level)."""
    updates = updates_of(record)
    if updates is None:
        epochs = re.search(r"(\d+) epochs?\b", str(record.get("budget", "")))
        return f"{epochs.group(0)} (updates not recorded)" if epochs else "not recorded"
    cell = f"{updates:,}" + (f" (untrained: under {UNTRAINED_BELOW})" if updates < UNTRAINED_BELOW else "")
    members = group or [record]
    picked = [selected_update(member) for member in members]
    if updates < UNTRAINED_BELOW or any(update is None for update in picked):
        return cell
    cell += "; read at " + ", ".join(f"{update:,}" for update in picked)
    untrained = [str(m.get("seed")) for m, update in zip(members, picked, strict=True) if update < UNTRAINED_BELOW]
    if untrained and len(members) == 1:
        cell += f" (untrained: under {UNTRAINED_BELOW})"
    elif untrained:
        cell += f" (untrained, under {UNTRAINED_BELOW}: seed {', '.join(untrained)})"
    return cell


def selection_of(record: dict) -> str:
    """How the figure was selected: validation-selected (test read once), the mean of the last k
    readings of a split, or one reading; a figure read from the test split's readings says so (the
    best of N test readings, DAMC's selection, is in the readings table of the records that keep
    every reading)."""
    split = str(record.get("split") or "test (the protocol)")
    if split.startswith(VALIDATION_SELECTED):
        return "validation-selected (test read once)"
    n = record.get("n_evaluations")
    if split.startswith("validation"):
        how = f"mean of the last {n} validation readings" if n else "one validation reading"
        return how + ("; test read once" if record.get("test_auprc") is not None else "")
    if n and n > 1:
        return f"mean of the last {n} test readings ({ON_THE_TEST_SPLIT})"
    return "one test reading"


def seed_groups(records: list[dict]) -> list[list[dict]]:
    """The records in groups that differ only by seed (one group per record without a seed)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("seed") is None:
            groups[("single", id(record))] = [record]
            continue
        key = (record["method"], record.get("setting"), record.get("digit"), record.get("data_split"), record["metric"])
        groups.setdefault(key, []).append(record)
    return list(groups.values())


def seeds_cell(group: list[dict]) -> str:
    """The seeds of a group: "1 seed" (which), or "n seeds (1, 2, 3)"."""
    seeds = [r["seed"] for r in group if r.get("seed") is not None]
    if not seeds:
        return "1 run"
    names = ", ".join(str(s) for s in sorted(seeds))
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({names})"


def mean_and_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)
