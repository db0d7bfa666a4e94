"""lebm's table of logged numbers (``lebm.loggers.MetricsTable``): a row per step, the values of a
step's several calls in one row, written whole and atomically, resumed runs continuing the table.
Device: CPU."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from lebm.loggers import MetricsTable
from lebm.metrics_table import read_table


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_one_row_per_step_with_the_values_of_every_call(tmp_path: Path) -> None:
    table = MetricsTable(str(tmp_path), write_every_s=0)
    table.log_metrics({"train/loss": torch.tensor(2.5), "epoch": 0}, step=9)
    table.log_metrics({"train/loss": 1.5, "epoch": 0}, step=19)
    table.log_metrics({"val/nll": 80.25, "epoch": 0, "note": "text"}, step=19)  # the validation, same step
    table.finalize("success")
    written = rows(tmp_path / "metrics.csv")
    assert list(written[0]) == ["step", "epoch", "train/loss", "val/nll"]  # no column for a non-number
    assert [(r["step"], r["train/loss"], r["val/nll"]) for r in written] == [("9", "2.5", ""), ("19", "1.5", "80.25")]
    assert table.series("val/nll") == ([19], [80.25])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "metrics.csv").st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it


def test_the_file_waits_for_its_interval_and_the_end_writes_it(tmp_path: Path) -> None:
    table = MetricsTable(str(tmp_path), write_every_s=3600)
    table.log_metrics({"train/loss": 1.0}, step=0)
    table.save()  # the first write is due at once
    table.log_metrics({"train/loss": 0.5}, step=1)
    table.save()  # within the interval: not yet
    assert len(rows(tmp_path / "metrics.csv")) == 1
    table.finalize("success")
    assert len(rows(tmp_path / "metrics.csv")) == 2
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_resumed_run_keeps_the_earlier_rows_and_replaces_the_redone_ones(tmp_path: Path) -> None:
    first = MetricsTable(str(tmp_path), write_every_s=0)
    for step in (9, 19, 29):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/nll": 5.0}, step=29)
    first.finalize("success")
    resumed = MetricsTable(str(tmp_path), write_every_s=0)  # resumed from the checkpoint at step 14
    resumed.log_metrics({"train/loss": -19.0}, step=19)
    resumed.finalize("success")
    assert read_table(str(tmp_path / "metrics.csv")) == {9: {"train/loss": 9.0}, 19: {"train/loss": -19.0}}
    fresh = MetricsTable(str(tmp_path), write_every_s=0)  # a new run in the folder starts at step 0
    fresh.log_metrics({"train/loss": 1.0}, step=0)
    fresh.finalize("success")
    assert read_table(str(tmp_path / "metrics.csv")) == {0: {"train/loss": 1.0}}


def test_an_evaluation_only_run_cuts_no_row(tmp_path: Path) -> None:
    fit = MetricsTable(str(tmp_path), write_every_s=0)
    fit.log_metrics({"train/loss": 2.0}, step=9)
    fit.finalize("success")
    evaluation = MetricsTable(str(tmp_path), write_every_s=0)  # trainer.validate on a new Trainer: step 0
    evaluation.log_metrics({"val/nll": 3.0}, step=0)
    evaluation.finalize("success")
    assert read_table(str(tmp_path / "metrics.csv")) == {0: {"val/nll": 3.0}, 9: {"train/loss": 2.0}}


def test_a_saved_checkpoint_writes_the_table_at_once(tmp_path: Path) -> None:
    table = MetricsTable(str(tmp_path), write_every_s=3600)
    table.log_metrics({"train/loss": 1.0}, step=0)
    table.save()
    table.log_metrics({"train/loss": 0.5}, step=1)
    table.after_save_checkpoint(None)  # ModelCheckpoint calls it after each save
    assert len(rows(tmp_path / "metrics.csv")) == 2


def test_a_failed_write_warns_once_and_keeps_the_rows(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    table = MetricsTable(str(tmp_path / "a_file" / "run"), write_every_s=0)  # cannot be made: a file is in the way
    table.log_metrics({"train/loss": 1.0}, step=0)
    with pytest.warns(UserWarning, match="MetricsTable could not write .*its rows are kept"):
        table.save()
    table.log_metrics({"train/loss": 0.5}, step=1)
    table.finalize("failed")  # no second warning, no exception hiding the run's own
    assert table.series("train/loss") == ([0, 1], [1.0, 0.5])


@pytest.mark.parametrize("wrong", [-1, "soon", True])
def test_a_wrong_interval_is_refused_in_one_line(tmp_path: Path, wrong: object) -> None:
    with pytest.raises(ValueError, match="write_every_s must be a number of seconds >= 0"):
        MetricsTable(str(tmp_path), write_every_s=wrong)


def test_the_header_names_each_column_once_step_and_epoch_first(tmp_path: Path) -> None:
    """Read with a plain ``csv.reader`` (a ``DictReader`` would fold a repeated column into one)."""
    table = MetricsTable(str(tmp_path), write_every_s=0)
    table.log_metrics({"val/nll": 80.0, "epoch": 0, "train/loss": 2.0}, step=9)
    table.log_metrics({"epoch": 1, "train/loss": 1.0}, step=19)
    table.finalize("success")
    with open(tmp_path / "metrics.csv", newline="") as file:
        header, *records = list(csv.reader(file))
    assert header == ["step", "epoch", "train/loss", "val/nll"]
    assert records == [["9", "0", "2", "80"], ["19", "1", "1", ""]]


def test_a_resume_drops_the_stale_values_of_its_restart_step(tmp_path: Path) -> None:
    """The killed run validated at step 19; the run resumed from the checkpoint of step 14 logs its
    training values at 19 again before it validates: the row of step 19 holds no old ``val/nll``."""
    first = MetricsTable(str(tmp_path), write_every_s=0)
    for step in (9, 19):
        first.log_metrics({"train/loss": float(step), "val/nll": 100.0 - step}, step=step)
    first.finalize("success")
    resumed = MetricsTable(str(tmp_path), write_every_s=0)
    resumed.log_metrics({"train/loss": 18.5}, step=19)
    resumed.finalize("success")
    expected = {9: {"train/loss": 9.0, "val/nll": 91.0}, 19: {"train/loss": 18.5}}
    assert read_table(str(tmp_path / "metrics.csv")) == expected


def test_a_row_logged_without_a_step_is_a_row_of_its_own(tmp_path: Path) -> None:
    """CPU. ``log_metrics`` without a step starts the next row; it never merges into the last one
    (a stepless value would otherwise overwrite or join another step's numbers)."""
    table = MetricsTable(str(tmp_path), write_every_s=0)
    table.log_metrics({"train/loss": 1.0}, step=4)
    table.log_metrics({"val/nll": 2.0})
    table.log_metrics({"val/nll": 3.0})
    assert table.rows == {4: {"train/loss": 1.0}, 5: {"val/nll": 2.0}, 6: {"val/nll": 3.0}}
