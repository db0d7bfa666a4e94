"""Whether a fit ends after the step that runs now: what the grids, the curves and the final
validation ask of Lightning's loop."""

from __future__ import annotations

from typing import Any


def stop_granted(trainer: Any, epochs_ending: int = 0) -> bool:
    """Whether Lightning grants the stop request (``should_stop``): ``min_steps`` are met and
    ``min_epochs`` are, counting ``epochs_ending`` running epochs as done (1: once this epoch ends)."""
    loop = trainer.fit_loop
    done = loop.epoch_progress.current.processed + epochs_ending
    met_min_epochs = not loop.min_epochs or done >= loop.min_epochs
    met_min_steps = not loop.min_steps or trainer.global_step >= loop.min_steps
    return bool(trainer.should_stop and met_min_epochs and met_min_steps)


def training_stops(trainer: Any) -> bool:
    """Whether ``fit`` ends after this step: a granted stop request (:func:`stop_granted`) or
    ``max_steps`` reached."""
    max_steps = trainer.max_steps
    return stop_granted(trainer) or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps)
