"""The recipe line for recorded training iterations (:mod:`lebm.models.recorded_iteration`).

With chains captured, a GPU still waits on the host for every net's update. Recording whole
training iterations (chains, losses, backward passes, clipping, optimiser steps) as CUDA graphs is
on by default on CUDA devices; this callback sets it for one run, from ``setup`` to ``teardown``
(or the exception that ends the run), and gives the process its previous setting back::

    lebm fit -c recipes/damc/svhn.yaml -c recipes/speed/eager_iterations.yaml     # off for this run

In Python, the same switch is ``lebm.samplers.capture.iteration_capture(False)`` (a context
manager) or ``set_iteration_capture(False)``; from a shell, ``LEBM_RECORDED_ITERATIONS=0``. On a
CPU it changes nothing: iterations run eagerly.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.samplers.capture.switch import set_iteration_capture
from lebm.speed.run_switch import RunSwitch


class RecordedIterations(RunSwitch):
    """Switch recorded training iterations on or off for the run.

    Args:
        enabled: True (lebm's default without this callback) records each training iteration once
            per key on CUDA devices and replays it; False runs iterations eagerly, their chains captured.
        report: at the end of training, print how many iterations were recorded, replayed, warmed
            up and run eagerly (rank 0).
    """

    setter = staticmethod(set_iteration_capture)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recorder = getattr(pl_module, "iteration_recorder", None)
        if self.report and recorder is not None:
            rank_zero_info(f"recorded iterations: {recorder.stats.as_dict()}")
