"""A run's identity, carried by every checkpoint it writes.

A run is made when a fit starts from scratch; a fit resumed from one of its checkpoints goes on as
the same run. Every checkpoint keeps, under :data:`CHECKPOINT_KEY`:

- ``id``: the run's id, drawn once by rank 0 when the run starts and shared with every rank;
- ``step``: the optimiser updates the checkpoint holds;
- ``data``: the fingerprint of the data it trains on (:func:`lebm.data.fingerprint.data_fingerprint`:
  which examples each split holds), or None for a DataModule that declares none.

So a checkpoint says which run wrote it and on what data wherever it is copied: ``lebm fit
--ckpt_path last|auto`` picks among the run's own checkpoints by these, and ``test``, ``validate``,
``predict`` and a resume compare the data they read with the fingerprint.
"""

from __future__ import annotations

import uuid
from typing import Any

from lebm.checkpoints import RUN_KEY as CHECKPOINT_KEY
from lebm.data.fingerprint import Fingerprint, data_fingerprint


def new_run_id() -> str:
    """A fresh run id: 12 hexadecimal digits of a random UUID."""
    return uuid.uuid4().hex[:12]


def identity_record(run_id: str, step: int, datamodule: Any) -> dict[str, Any]:
    """What a checkpoint keeps of its run: ``{"id", "step", "data"}``."""
    return {"id": run_id, "step": int(step), "data": data_fingerprint(datamodule)}


def run_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The identity a loaded checkpoint carries (None: written before lebm kept one)."""
    record = checkpoint.get(CHECKPOINT_KEY)
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def trained_fingerprint(checkpoint: dict[str, Any]) -> Fingerprint | None:
    """The data fingerprint a loaded checkpoint carries (None: unknown)."""
    record = run_identity(checkpoint)
    data = None if record is None else record.get("data")
    return data if isinstance(data, dict) else None
