"""When a training step hands its values to Lightning.

Lightning's ``self.log`` is host work of about 0.2 ms per value (this project's 2-core CPU: 2.3 ms
of a quickstart iteration's 6.4 ms with 1-step chains, ``python benchmarks/host_work.py``), paid
at every step whether or not anything reads the value. With on-step values (every method's training
values), a logger writes only every ``trainer.log_every_n_steps`` steps, and callbacks read
``trainer.callback_metrics`` at the end of an epoch or of training. So a method hands its step
values to Lightning only on the steps where they are read:

- the steps Lightning writes to the loggers (``log_every_n_steps``; ``1`` hands over every step);
- the last batch of each epoch (what epoch-end callbacks such as ``ModelCheckpoint(monitor=...)``
  read);
- the steps near ``max_steps`` (training may end there), and a step after which training stops
  (``trainer.should_stop`` set by the method or a callback once the step is over: the method hands
  the values over in its ``on_train_batch_end``, which Lightning calls after the callbacks' and
  before it writes that step's row);
- every step, when a callback ``monitor``s one of the step's values (``ModelCheckpoint`` or
  ``EarlyStopping`` watching a ``train/`` value, which they may read after any batch or validation);
- every step of a ``fast_dev_run`` or under gradient accumulation (Lightning then writes the
  loggers on update steps), and every step when Lightning's loop cannot be read.

The divergence guard still checks every step's values: only the hand-over is skipped. A callback
of your own that reads ``trainer.callback_metrics`` after every batch without a ``monitor``
attribute needs ``--trainer.log_every_n_steps 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def step_values_read(trainer: Any, names: Iterable[str] = ()) -> bool:
    """Whether this training step's values (``names``) are read (logged, or read by callbacks): see
    the module's docstring. ``trainer``: the running Lightning Trainer, or None outside one (True)."""
    if trainer is None:
        return True
    try:
        if trainer.fast_dev_run or trainer.log_every_n_steps == 1 or trainer.accumulate_grad_batches != 1:
            return True
        names = set(names)
        if any(getattr(callback, "monitor", None) in names for callback in trainer.callbacks):
            return True
        batches = trainer.fit_loop.epoch_loop.batch_progress
        if trainer.log_every_n_steps and batches.total.ready % trainer.log_every_n_steps == 0:
            return True  # the loggers write this step (Lightning's rule; `ready` counts this batch too)
        if batches.is_last_batch or batches.current.ready >= trainer.num_training_batches:
            return True
        max_steps = trainer.max_steps
        return max_steps is not None and max_steps >= 0 and trainer.global_step + 1 >= max_steps
    except (AttributeError, TypeError):  # another Lightning, or a trainer-like object: log every step
        return True
