"""The one place lebm touches a private name of Lightning (none of jsonargparse's).

Everything else in lebm uses public APIs only (``tests/test_compat.py`` greps the source for
Lightning's and jsonargparse's private names and allows them here alone). Each function below
says which private name it reads and why no public way exists; ``tests/test_compat.py`` checks
each against the installed Lightning, so a release that moves one fails a fast test, not a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L

__all__ = ["attached_trainer", "logging_as_hook"]


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or None (public: ``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


@contextmanager
def logging_as_hook(module: L.LightningModule, hook: str) -> Iterator[None]:
    """``module.log`` inside the block records its values as if called from ``hook``.

    Private name: ``LightningModule._current_fx_name``, the hook Lightning files a logged value
    under. lebm hands a training step's values over late, from ``on_train_batch_end``, on the
    step after which training stops (:mod:`lebm.models.cadence`); filed under that hook, they would
    be a second, separate value of the same name (Lightning keys its results by hook and name).
    Lightning has no public way to log on behalf of another hook.
    """
    previous = module._current_fx_name
    module._current_fx_name = hook
    try:
        yield
    finally:
        module._current_fx_name = previous
