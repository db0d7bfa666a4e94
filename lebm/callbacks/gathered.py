"""Logging a value every rank already holds (gathered from every rank's examples, then computed),
without Lightning's advice to log it with ``sync_dist=True``."""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.utilities.warnings import PossibleUserWarning

__all__ = ["log_gathered"]

#: The names logged after every rank's examples were gathered (torchmetrics' ``compute``, FID's and
#: the text metrics' gather-score-broadcast), for which Lightning's advice is silenced.
GATHERED: set[str] = set()


def log_gathered(pl_module: L.LightningModule, name: str, value: Any) -> None:
    """Log ``value``, computed from every rank's examples, under ``name`` without a second reduction;
    Lightning's advice to log it with ``sync_dist=True`` (printed under DDP) is silenced for it, since
    every rank already holds the same number."""
    if name not in GATHERED:
        GATHERED.add(name)
        advice = re.escape(f"It is recommended to use `self.log({name!r}, ..., sync_dist=True)`")
        warnings.filterwarnings("ignore", message=advice, category=PossibleUserWarning)
    pl_module.log(name, value, sync_dist=False)
