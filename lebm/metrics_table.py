"""Every logged number of a run as one table in its run folder: ``<run>/metrics.csv``.

A Lightning logger, given beside the recipe's own (``lebm fit`` adds it to every run that has a
logger, whichever): a row per logging step, a column per logged name (``step`` and ``epoch``
first), so a run can be read with a spreadsheet, ``pandas.read_csv`` or ``column -s, -t`` and
without a W&B account. The values a step gets from several calls (training values, then the
validation's at the same step) share its row.

The file is rewritten whole, atomically (a temporary file in the run folder, then a rename), at
most every ``write_every_s`` seconds, whenever a checkpoint is saved and at the end: a reader never
sees half a row, and the file always covers the last checkpoint. A run continues the table it
finds: the first training values it logs, at step ``s``, replace the rows from ``s`` on (a run
resumed from a checkpoint recomputes them exactly; a new run starts at step 0 and so starts a new
table). A write that fails (a full disk, a read-only folder) is a warning, not the end of the run:
the rows are kept and written at the next chance.
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from lebm.atomic import replaced_atomically

#: The table's file name inside ``save_dir``.
TABLE_FILE = "metrics.csv"
#: Columns that come first, in this order; the logged names follow sorted.
LEADING_COLUMNS = ("step", "epoch")


class MetricsTable(Logger):
    """Lightning logger writing every logged scalar to ``<save_dir>/metrics.csv``.

    Args:
        save_dir: the folder of the table (the CLI sets the run folder).
        write_every_s: the least time between two rewrites of the file (0: after every log call);
            a saved checkpoint and the end of the run always write.
    """

    def __init__(self, save_dir: str = ".", write_every_s: float = 5.0) -> None:
        super().__init__()
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"MetricsTable save_dir must be a folder path, got {save_dir!r}")
        if isinstance(write_every_s, bool) or not isinstance(write_every_s, (int, float)) or not write_every_s >= 0:
            raise ValueError(f"MetricsTable write_every_s must be a number of seconds >= 0, got {write_every_s!r}")
        self._save_dir = os.fspath(save_dir)
        self.write_every_s = float(write_every_s)
        #: ``{step: {name: value}}``: the rows found in the file, then those logged here.
        self.rows: dict[int, dict[str, float]] = read_table(self.path)
        self._continued = False  # whether the first training values have cut the rows found
        self._dirty = False
        self._written_at = -math.inf
        self._warned = False

    # ------------------------------------------------------------------ Lightning's interface
    @property
    def name(self) -> str:
        """``"metrics"``."""
        return "metrics"

    @property
    def version(self) -> str:
        """``""``: one table per run folder."""
        return ""

    @property
    def save_dir(self) -> str:
        """The folder that holds the table."""
        return self._save_dir

    @property
    def path(self) -> str:
        """``<save_dir>/metrics.csv``."""
        return os.path.join(self._save_dir, TABLE_FILE)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's ``config.yaml`` holds them."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Merge ``metrics`` into the row of ``step`` (the next row when None); non-numbers are left out."""
        step = int(step) if step is not None else (max(self.rows, default=-1) + 1)
        if not self._continued and any(str(key).startswith("train/") for key in metrics):
            # training goes on from `step`: the rows found from there on are recomputed (or stale)
            self.rows = {kept: row for kept, row in self.rows.items() if kept < step}
            self._continued = True
        row = self.rows.setdefault(step, {})
        for key, value in metrics.items():
            number = _as_number(value)
            if number is not None:
                row[key] = number
        self._dirty = True

    @rank_zero_only
    def save(self) -> None:
        """Rewrite the file if rows changed and ``write_every_s`` has passed since the last write."""
        if self._dirty and time.monotonic() - self._written_at >= self.write_every_s:
            self._write_or_warn()

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Write now: the table covers every saved checkpoint, so a killed run resumed from it
        loses no row."""
        if self._dirty:
            self._write_or_warn()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is left, whatever the time since the last write."""
        if self._dirty:
            self._write_or_warn()

    def _write_or_warn(self) -> None:
        """:meth:`flush`, a failure said once as a warning (the rows stay for the next write)."""
        try:
            self.flush()
        except OSError as error:
            if not self._warned:
                warnings.warn(f"MetricsTable could not write {self.path}: {error}; its rows are kept", stacklevel=2)
                self._warned = True

    # --------------------------------------------------------------------------- the file
    def columns(self) -> list[str]:
        """``step``, ``epoch``, then every other logged name sorted."""
        names = set().union(*self.rows.values()) if self.rows else set()
        leading = [name for name in LEADING_COLUMNS if name == "step" or name in names]
        return leading + sorted(names - set(LEADING_COLUMNS))

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """The steps and values of ``name``, in step order (the rows that have it)."""
        steps = [step for step in sorted(self.rows) if name in self.rows[step]]
        return steps, [self.rows[step][name] for step in steps]

    def flush(self) -> None:
        """Write the whole table now, atomically."""
        columns = self.columns()
        with replaced_atomically(self.path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(columns)
            for step in sorted(self.rows):
                row = {**self.rows[step], "step": step}
                writer.writerow([_format(row.get(name)) for name in columns])
        self._dirty = False
        self._written_at = time.monotonic()


def read_table(path: str) -> dict[int, dict[str, float]]:
    """The rows of a table :class:`MetricsTable` wrote (``{}`` when there is no file yet)."""
    if not os.path.isfile(path):
        return {}
    rows: dict[int, dict[str, float]] = {}
    with open(path, newline="") as file:
        for record in csv.DictReader(file):
            step = int(float(record.pop("step")))
            rows[step] = {key: float(value) for key, value in record.items() if value not in ("", None)}
    return rows


def _as_number(value: Any) -> float | None:
    size = getattr(value, "numel", None) or getattr(value, "size", None)
    if hasattr(value, "item") and (size() if callable(size) else size) == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _format(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
