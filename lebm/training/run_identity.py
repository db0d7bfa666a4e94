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

import os
import uuid
from typing import Any

from lebm.checkpoints import RUN_KEY as CHECKPOINT_KEY
from lebm.checkpoints import CheckpointError, run_id_held
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


def same_run(path: str, checkpoint: dict[str, Any]) -> bool:
    """Whether the checkpoint file at ``path`` was written by the run of the loaded ``checkpoint``
    (both carry one run id; an unreadable file, or either without an id, is not vouched for)."""
    identity = run_identity(checkpoint)
    try:
        held = run_id_held(path)
    except CheckpointError:
        return False
    return identity is not None and held is not None and held == identity["id"]


def follow_a_moved_run_folder(checkpoint: dict[str, Any], checkpoint_callbacks: list[Any]) -> None:
    """A run folder copied or moved, then resumed: each ``ModelCheckpoint``'s state in
    ``checkpoint`` names the folder it was saved in, and Lightning reloads none of it for another
    folder, so the resumed run would keep ``last-v1.ckpt`` beside its own ``last.ckpt``. Where the
    callback's folder holds the file the state calls its last checkpoint, written by the same run
    (:func:`same_run`: never another run's folder), the state is rewritten in place (before the
    callbacks read it) to name the same files in this folder."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        return
    for callback in checkpoint_callbacks:
        state = states.get(getattr(callback, "state_key", None))
        new = getattr(callback, "dirpath", None)
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not (isinstance(old, str) and isinstance(new, str)) or os.path.abspath(old) == os.path.abspath(new):
            continue

        def here(path: Any, old: str = old, new: str = new) -> Any:
            return os.path.join(new, os.path.relpath(path, old)) if isinstance(path, str) and path else path

        last_here = str(here(state.get("last_model_path")))
        if not os.path.exists(last_here) or not same_run(last_here, checkpoint):
            continue  # another run's folder (or its own files gone), not a copy of this one
        state["dirpath"] = new
        for key in ("last_model_path", "best_model_path", "kth_best_model_path"):
            state[key] = here(state.get(key))
        state["best_k_models"] = {here(path): score for path, score in (state.get("best_k_models") or {}).items()}
