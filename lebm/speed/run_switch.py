"""A run-wide switch as a Lightning callback: set for the run, the process's setting given back after it."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import lightning as L

from lebm.arguments import flag


class RunSwitch(L.Callback):
    """Sets a process-wide switch (``setter``: sets it, returns the old value) from ``setup`` to
    ``teardown``, or to the exception that ends the run (Lightning skips teardown then), and gives
    the process its previous setting back.

    Args:
        enabled: the run's setting.
        report: at the end of training, print the switch's counters (rank 0; see each subclass).
    """

    #: Sets the process's switch and returns its previous value.
    setter: ClassVar[Callable[[bool], bool]]

    def __init__(self, enabled: bool = True, report: bool = False) -> None:
        super().__init__()
        self.enabled = flag(type(self).__name__, "enabled", enabled)
        self.report = flag(type(self).__name__, "report", report)
        self._previous: bool | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        previous = type(self).setter(self.enabled)
        if self._previous is None:
            self._previous = previous

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning skips teardown when a run raises

    def _restore(self) -> None:
        if self._previous is not None:
            type(self).setter(self._previous)
            self._previous = None
