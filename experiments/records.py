"""What every experiment runner writes into its result records, and which checkpoint of a run it reads."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def this_device() -> str:
    """The record's ``device``: the GPU's name, or the CPU and its torch threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


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
