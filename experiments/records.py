"""What every experiment runner writes into its result records, which checkpoint of a run it reads,
and how it shows its progress."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

REPO = Path(__file__).resolve().parents[1]

#: ``lebm fit`` arguments of a runner's runs: no progress bar (its carriage returns fill a log) but a
#: line per epoch with its time, the time left and the metrics (``lebm.callbacks.EpochProgress``).
EPOCH_LINES = ["--trainer.enable_progress_bar", "false", "--trainer.callbacks+=lebm.callbacks.EpochProgress"]

Item = TypeVar("Item")


def with_progress(items: Sequence[Item], what: str) -> Iterator[Item]:
    """Yield ``items``, printing before each ``what i/n | elapsed | left ~`` (at the mean pace so far)."""
    start = time.monotonic()
    for index, item in enumerate(items):
        elapsed = time.monotonic() - start
        left = f" | left ~{elapsed / index * (len(items) - index) / 60:.1f} min" if index else ""
        print(f"{what} {index + 1}/{len(items)} | {elapsed / 60:.1f} min{left}", file=sys.stderr, flush=True)
        yield item


def anomaly_trainer(digit: int):
    """A quiet CPU Trainer that reads a model's anomaly AUPRC and AUROC (and each score term's) with
    ``digit`` held out, through ``trainer.validate`` or ``trainer.test``."""
    import lightning as L

    from lebm.callbacks import AnomalyDetection

    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[AnomalyDetection(anomaly_classes=[digit])],
    )


def this_device() -> str:
    """The record's ``device``: the GPU's name, or the CPU and its torch threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def commit_fields(repo: Path = REPO) -> dict:
    """A record's ``commit`` (the checkout's HEAD, short) and ``commit_dirty`` (whether the code or
    recipes differed from it: uncommitted changes under ``lebm/``, ``recipes/`` or ``experiments/``);
    ``commit`` None with a ``commit_note`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "lebm", "recipes", "experiments"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "commit_note": "not a git checkout"}
    return {"commit": head, "commit_dirty": bool(changed)}


#: What every new record carries, beside what it measured (``stamped`` fills what a runner left out).
PROVENANCE = ("commit", "command", "device", "date")


def stamped(record: dict) -> dict:
    """``record`` with its provenance: the commit it was made at (:func:`commit_fields`), the command
    (this process's, when the runner named none), the device and the date; what it holds stays."""
    import datetime
    import shlex

    found = {**commit_fields()} if "commit" not in record else {}
    found.setdefault("command", shlex.join(["python", *sys.argv]))
    found.setdefault("device", this_device())
    found.setdefault("date", datetime.date.today().isoformat())
    return {**record, **{k: v for k, v in found.items() if k not in record}}


def render_results_md() -> None:
    """Regenerate docs/results.md from the records in docs/results/."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_results_md.py")], check=True)


def newest_last_checkpoint(run_dir: Path) -> Path:
    """The run's newest ``checkpoints/last*.ckpt``: when another process left a ``last.ckpt`` in the
    folder, Lightning saves the new run's as ``last-v1.ckpt``, and that is the one to read."""
    from lebm.cli.run_folder import last_checkpoint

    found = last_checkpoint(str(run_dir))
    if found is None:
        raise SystemExit(f"no last*.ckpt in {run_dir / 'checkpoints'}: the run saved no checkpoint (fit it first)")
    return Path(found)
