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

from lebm.samplers.capture.switch import set_iteration_capture
from lebm.speed.run_switch import RunSwitch


class RecordedIterations(RunSwitch):
    """Switch recorded training iterations on or off for the run.

    Args:
        enabled: True records each training iteration once per key on CUDA devices and replays it;
            False (every run's default) runs iterations eagerly, their chains captured.
        report: at the end of training, print how many iterations were recorded, replayed, warmed
            up and run eagerly (rank 0).
    """

    setter = staticmethod(set_iteration_capture)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recorder = getattr(pl_module, "iteration_recorder", None)
        if self.report and recorder is not None:
            rank_zero_info(f"recorded iterations: {recorder.stats.as_dict()}")
