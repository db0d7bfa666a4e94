"""Lightning's progress bars without ``v_num``, the bar lebm's commands show.

Lightning's bar ends with ``v_num``: the last four characters of the loggers' versions joined by
``_``. A lebm run logs to W&B and to its ``metrics.csv`` (whose version is empty), so the bar read
``v_num=8a9_``: three characters of the W&B run id and the separator, which names nothing a user can
look up. The run is named by its folder, which the command line gave and the closing line repeats
with the whole W&B id. The ``lebm`` commands swap Lightning's own bar (the one it adds when the
Trainer is given none) for the same bar without ``v_num``
(:func:`without_version_fragment`); a bar the user gives is kept as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

__all__ = ["RunProgressBar", "RunRichProgressBar", "without_version_fragment"]

#: The name Lightning gives the loggers' version among the bar's values.
VERSION_KEY = "v_num"


class _WithoutVersion:
    """Drops ``v_num`` from the values a Lightning progress bar shows."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        metrics.pop(VERSION_KEY, None)
        return metrics


class RunProgressBar(_WithoutVersion, TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` without ``v_num`` (same arguments)."""


class RunRichProgressBar(_WithoutVersion, RichProgressBar):
    """Lightning's ``RichProgressBar`` without ``v_num`` (same arguments; needs ``rich``)."""


def without_version_fragment(callbacks: list[Any], given: Sequence[Any]) -> None:
    """Replace, in place, the progress bar Lightning added to ``callbacks`` (a Trainer's list) by
    lebm's bar of the same kind. ``given``: the callbacks the run named; a bar among them, or of a
    class of the user's own, stays."""
    given_ids = {id(callback) for callback in given}
    swaps = {TQDMProgressBar: RunProgressBar, RichProgressBar: RunRichProgressBar}
    for index, callback in enumerate(callbacks):
        if id(callback) not in given_ids and type(callback) in swaps:
            callbacks[index] = swaps[type(callback)]()
