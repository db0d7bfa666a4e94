"""When a callback runs: the stage being evaluated and where training stands (Lightning's state)."""

from __future__ import annotations

import lightning as L

from lebm.training.training_end import training_stops

__all__ = ["STAGES", "epoch_ends", "evaluation_stage", "grid_epoch", "last_epoch", "training_stops"]

#: The evaluation stages a metric callback reports under.
STAGES = ("val", "test")


def evaluation_stage(trainer: L.Trainer) -> str:
    """``"test"`` while testing, ``"val"`` otherwise (validation inside or outside ``fit``)."""
    return "test" if trainer.testing else "val"


def epoch_ends(trainer: L.Trainer) -> bool:
    """Whether the running training epoch has reached its last batch (True outside an epoch)."""
    progress = getattr(trainer.fit_loop.epoch_loop, "batch_progress", None)
    return bool(getattr(progress, "is_last_batch", True))


def last_epoch(trainer: L.Trainer) -> bool:
    """Whether the training epoch that ends now is the run's last (``max_epochs``, ``max_steps`` or a
    granted stop)."""
    return (trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs) or training_stops(
        trainer
    )


def grid_epoch(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether a periodic output (grids, curves) is drawn now: at the end of every
    ``every_n_epochs``-th training epoch and of the last one (``max_epochs``, ``max_steps`` or a
    granted stop), on global rank 0."""
    return trainer.is_global_zero and ((trainer.current_epoch + 1) % every_n_epochs == 0 or last_epoch(trainer))
