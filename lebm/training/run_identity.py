"""A run's identity, carried by every checkpoint it writes.

A run is made when a fit starts from scratch; a fit resumed from one of its checkpoints goes on as
the same run. Every checkpoint keeps, under :data:`CHECKPOINT_KEY`:

- ``id``: the run's id, drawn once by rank 0 when the run starts and shared with every rank;
- ``step``: the optimiser updates the checkpoint holds;
- ``data``: the fingerprint of the data it trains on (:func:`lebm.data.fingerprint.data_fingerprint`:
  which examples each split holds, and a digest of their content), or None without a DataModule;
- ``folder``: the run folder it was written in (``trainer.default_root_dir``);
- ``wandb_id``: the W&B run the fit logs to (None without a ``WandbLogger``).

A checkpoint without this record (an older lebm's, or one edited) is not trusted blindly
(:func:`trained_data_of_checkpoint`): the data settings Lightning stores with every checkpoint
(``datamodule_hyper_parameters``) stand in, and a line says what could not be checked; a record that
disagrees with them is refused as inconsistent.

So a checkpoint says which run wrote it and on what data wherever it is copied: ``lebm fit
--ckpt_path last|auto`` picks among the run's own checkpoints by these, and ``test``, ``validate``,
``predict`` and a resume compare the data they read with the fingerprint.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from lebm.checkpoints import RUN_KEY as CHECKPOINT_KEY
from lebm.data.fingerprint import (
    Fingerprint,
    comparable,
    data_fingerprint,
    importable_class,
    lightning_fingerprint,
    normal_settings,
    same_class,
    split_settings,
)


def new_run_id() -> str:
    """A fresh run id: 12 hexadecimal digits of a random UUID."""
    return uuid.uuid4().hex[:12]


def identity_record(
    run_id: str, step: int, datamodule: Any, folder: str | None = None, wandb_id: str | None = None
) -> dict[str, Any]:
    """What a checkpoint keeps of its run: ``{"id", "step", "data", "folder", "wandb_id"}``."""
    return {
        "id": run_id,
        "step": int(step),
        "data": data_fingerprint(datamodule),
        "folder": None if folder is None else os.path.abspath(folder),
        "wandb_id": wandb_id,
    }


def run_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The identity a loaded checkpoint carries (None: written before lebm kept one, or malformed)."""
    record = checkpoint.get(CHECKPOINT_KEY)
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def trained_fingerprint(checkpoint: dict[str, Any]) -> Fingerprint | None:
    """The data fingerprint a loaded checkpoint's identity carries (None: unknown)."""
    record = run_identity(checkpoint)
    data = None if record is None else record.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        return None
    return data if isinstance(data.get("class_path"), str) else None


@dataclass(frozen=True)
class TrainedData:
    """What a checkpoint says of the data it was trained on.

    Attributes:
        fingerprint: the fingerprint to compare with the data a command reads (the run identity's,
            else one read from Lightning's stored DataModule arguments); None: nothing to compare.
        unchecked: one line on what could not be checked (no identity, a malformed one, no content
            digest), or None.
        inconsistent: one line naming how the identity disagrees with Lightning's stored arguments
            (an edited or mixed file), or None.
    """

    fingerprint: Fingerprint | None
    unchecked: str | None = None
    inconsistent: str | None = None


def trained_data_of_checkpoint(checkpoint: dict[str, Any], where: str = "the checkpoint") -> TrainedData:
    """The data ``checkpoint`` (a loaded checkpoint, read from ``where``) was trained on, with what
    could not be checked and any inconsistency between its lebm identity and the DataModule
    arguments Lightning stored beside it (``datamodule_hyper_parameters``)."""
    record = checkpoint.get(CHECKPOINT_KEY)
    lightning = lightning_fingerprint(checkpoint)
    fingerprint = trained_fingerprint(checkpoint)
    if fingerprint is None:
        if record is None:
            why = "carries no lebm run identity (written by an older lebm, or stripped)"
        elif isinstance(record, dict) and isinstance(record.get("id"), str) and record.get("data") is None:
            return TrainedData(None)  # trained without a DataModule (dataloaders): nothing was recorded
        else:
            why = "carries a malformed lebm run identity (edited?)"
        if lightning is None:
            return TrainedData(None, f"{where} {why} and no DataModule arguments: its data could not be checked")
        return TrainedData(
            lightning,
            f"{where} {why}: its data settings were compared with the DataModule arguments Lightning stored in it; "
            "its data's content could not be checked",
        )
    kind = importable_class(fingerprint.get("class_path"))
    foreign = [name for name in fingerprint["settings"] if kind is not None and name not in split_settings(kind)]
    if foreign:
        return TrainedData(
            fingerprint,
            inconsistent=f"{where}'s lebm identity names the DataModule {fingerprint['class_path']}, which has no "
            f"split setting {', '.join(foreign[:3])}",
        )
    if lightning is not None:
        stored_class = lightning.get("class_path")
        if stored_class is not None and not same_class(fingerprint["class_path"], stored_class):
            return TrainedData(
                fingerprint,
                inconsistent=f"{where}'s lebm identity names the DataModule {fingerprint['class_path']}, but the "
                f"arguments Lightning stored with it name {stored_class}",
            )
        ours = normal_settings(kind, fingerprint["settings"])
        theirs = normal_settings(kind, lightning["settings"])
        differing = [
            f"{name} {comparable(ours[name])} against {comparable(theirs[name])}"
            for name in fingerprint["settings"]
            if name in theirs and comparable(ours[name]) != comparable(theirs[name])
        ]
        if differing:
            return TrainedData(
                fingerprint,
                inconsistent=f"{where}'s lebm identity disagrees with the DataModule arguments Lightning stored "
                f"with it ({'; '.join(differing)})",
            )
    if "content" not in fingerprint:  # None: a DataModule whose settings alone make its data
        return TrainedData(
            fingerprint,
            f"{where} records its data's settings but no content digest (an older lebm): content not checked",
        )
    return TrainedData(fingerprint)


def wandb_id_of(trainer: Any) -> str | None:
    """The id of the W&B run ``trainer`` logs to (its ``WandbLogger``'s; None without one), read
    without starting the W&B run."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, WandbLogger):
            version = logger.version
            return str(version) if version else None
    return None
