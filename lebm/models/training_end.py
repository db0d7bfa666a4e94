"""Whether a fit ends after the step that runs now: what the grids, the curves and the final
validation ask of Lightning's loop."""

from __future__ import annotations

from typing import Any


def training_stops(trainer: Any) -> bool:
    """Whether ``fit`` ends after this step: a granted stop request (``should_stop`` once
    ``min_epochs`` and ``min_steps`` are met) or ``max_steps`` reached."""
    loop = trainer.fit_loop
    met_min_epochs = not loop.min_epochs or loop.epoch_progress.current.processed >= loop.min_epochs
    met_min_steps = not loop.min_steps or trainer.global_step >= loop.min_steps
    stop_granted = trainer.should_stop and met_min_epochs and met_min_steps
    max_steps = trainer.max_steps
    return bool(stop_granted or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps))


def stop_granted_with_this_epoch(trainer: Any) -> bool:
    """Whether a stop request (``should_stop``) ends the fit once the running epoch is over: the
    epoch that runs now completes ``min_epochs`` and ``min_steps`` are met."""
    loop = trainer.fit_loop
    met_min_epochs = not loop.min_epochs or loop.epoch_progress.current.processed + 1 >= loop.min_epochs
    met_min_steps = not loop.min_steps or trainer.global_step >= loop.min_steps
    return bool(trainer.should_stop and met_min_epochs and met_min_steps)
