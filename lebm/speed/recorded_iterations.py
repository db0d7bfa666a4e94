"""The recipe line for recorded training iterations (:mod:`lebm.models.recorded_iteration`).

With chains captured, a GPU still waits on the host for every net's update. This callback turns on
recording whole training iterations (chains, losses, backward passes, clipping, optimiser steps) as
CUDA graphs, from ``setup`` to ``teardown`` (or the exception that ends the run)::

    lebm fit -c recipes/damc/svhn.yaml -c recipes/speed/recorded_iterations.yaml

It is opt-in until a lent GPU has run the ``gpu`` tier and the suite with it on. In Python, the
same switch is ``lebm.samplers.capture.iteration_capture(True)`` (a context manager) or
``set_iteration_capture(True)``. On a CPU it changes nothing: iterations run eagerly.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.arguments import flag
from lebm.samplers.capture.switch import set_iteration_capture


class RecordedIterations(L.Callback):
    """Switch recorded training iterations on or off for the run.

    Args:
        enabled: True records each training iteration once per key on CUDA devices and replays it;
            False (every run's default) runs iterations eagerly, their chains captured.
        report: at the end of training, print how many iterations were recorded, replayed, warmed
            up and run eagerly (rank 0).
    """

    def __init__(self, enabled: bool = True, report: bool = False) -> None:
        super().__init__()
        self.enabled = flag("RecordedIterations", "enabled", enabled)
        self.report = flag("RecordedIterations", "report", report)
        self._previous: bool | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        previous = set_iteration_capture(self.enabled)
        if self._previous is None:
            self._previous = previous

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning skips teardown when a run raises

    def _restore(self) -> None:
        if self._previous is not None:
            set_iteration_capture(self._previous)
            self._previous = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recorder = getattr(pl_module, "iteration_recorder", None)
        if self.report and recorder is not None:
            rank_zero_info(f"recorded iterations: {recorder.stats.as_dict()}")
