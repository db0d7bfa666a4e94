"""Where a Lightning fit stands in its training data: the epoch and the batches of it done.

Read from the trainer's loop progress, which Lightning restores from a checkpoint before it asks
the DataModule for its training loader. Values checked by experiment (Lightning 2.6) when
``train_dataloader()`` is called during ``fit(ckpt_path=...)``:

* checkpoint saved in ``on_train_batch_end`` after batch ``k`` (0-based) of epoch ``e``:
  ``fit_loop.restarting`` is True, ``current_epoch == e`` and
  ``fit_loop.epoch_loop.batch_progress.current.processed == k + 1`` (``completed == k``: Lightning
  counts that batch as completed only when it restarts). After the epoch's last batch Lightning
  goes on with epoch ``e + 1``, so a resume point of epoch ``e`` is simply not used;
* checkpoint saved in ``on_train_epoch_end`` of epoch ``e``: ``restarting`` is False
  (``current_epoch`` still reads ``e``, Lightning then trains epoch ``e + 1`` from its start);
* no checkpoint: ``restarting`` is False, every counter 0.

``processed`` is also right for a checkpoint saved between batches (``on_validation_end`` of a
mid-epoch validation: ``completed == processed``) or before a batch ran (``on_train_batch_start``:
Lightning trains that batch again, and ``processed`` does not count it).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.trainer.states import TrainerFn


def fit_position(trainer: Any) -> tuple[int, int]:
    """``(epoch, batches of it done)`` of ``trainer``'s fit on this process."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return int(trainer.current_epoch), int(done)


def mid_epoch_restart(trainer: Any) -> tuple[int, int] | None:
    """``(epoch, batches done)`` when ``trainer`` is restarting a fit inside an epoch (resuming a
    checkpoint saved before the epoch's end), else None (no trainer, not fitting, a fresh fit, or
    a checkpoint saved at an epoch's end)."""
    if trainer is None or trainer.state.fn != TrainerFn.FITTING or not trainer.fit_loop.restarting:
        return None
    epoch, done = fit_position(trainer)
    return (epoch, done) if done > 0 else None
