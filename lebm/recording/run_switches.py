"""The run's recording switches as Lightning callbacks, one recipe line each. Each sets a
process-wide switch (:mod:`lebm.recording.switch`) for the run, from ``setup`` to ``teardown`` (or
the exception that ends it, where Lightning skips teardown), and gives the process its previous
setting back. Recipes name them ``lebm.speed.ChainCapture`` and ``lebm.speed.RecordedIterations``.

- :class:`ChainCapture`: whole-chain CUDA-graph capture. On a CUDA device lebm's samplers record
  each chain once as a CUDA graph and replay it while the switch is on (the default); one line
  turns capture off for every chain, the model's and those of other callbacks (an FID callback's
  sampler), and writes no sampler's attributes::

      lebm fit -c recipes/latent_ebm/svhn.yaml -c recipes/speed/eager_chains.yaml

- :class:`RecordedIterations`: whole training iterations (chains, losses, backward passes,
  clipping, optimiser steps) of lebm's own methods recorded as CUDA graphs
  (:mod:`lebm.recording.recorded_iteration`), off by default (captured chains are the CUDA
  default, measured as fast or faster)::

      lebm fit -c recipes/damc/svhn.yaml -c recipes/speed/recorded_iterations.yaml   # on for this run

  In Python the same switch is ``lebm.recording.iteration_capture(True)`` (a context manager) or
  ``set_iteration_capture(True)``; from a shell, ``LEBM_RECORDED_ITERATIONS=1``. On a CPU it
  changes nothing: iterations run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.arguments import flag
from lebm.recording.cache import capture_stats, samplers_of
from lebm.recording.switch import set_chain_capture, set_iteration_capture

__all__ = ["ChainCapture", "RecordedIterations", "RunSwitch"]


class RunSwitch(L.Callback):
    """Sets a process-wide switch (``setter``: sets it, returns the old value) from ``setup`` to
    ``teardown``, or to the exception that ends the run (Lightning skips teardown then), and gives
    the process its previous setting back.

    Args:
        enabled: the run's setting.
        report: at the end of training, print the switch's counters (rank 0; see each subclass).
    """

    #: Sets the process's switch and returns its previous value (None: a switch's "each method's default").
    setter: ClassVar[Callable[[bool], bool | None]]

    def __init__(self, enabled: bool = True, report: bool = False) -> None:
        super().__init__()
        self.enabled = flag(type(self).__name__, "enabled", enabled)
        self.report = flag(type(self).__name__, "report", report)
        self._previous: tuple[bool | None] | None = None  # (the process's setting before setup,) while set

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        previous = type(self).setter(self.enabled)
        if self._previous is None:
            self._previous = (previous,)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning skips teardown when a run raises

    def _restore(self) -> None:
        if self._previous is not None:
            type(self).setter(self._previous[0])
            self._previous = None


class ChainCapture(RunSwitch):
    """Switch whole-chain capture on or off for the run.

    Args:
        enabled: True captures chains on CUDA devices (the default of every run), False runs every
            chain eagerly. Chains on other devices run eagerly either way.
        report: at the end of training, print how many chains were captured, how many calls were
            served by a replay and how many ran eagerly (rank 0).
    """

    setter = staticmethod(set_chain_capture)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report:
            others = [callback for callback in trainer.callbacks if callback is not self]
            samplers = samplers_of(pl_module, *others)
            rank_zero_info(f"chain capture: {capture_stats(samplers)} over {len(samplers)} samplers")


class RecordedIterations(RunSwitch):
    """Switch recorded training iterations on or off for the run.

    Args:
        enabled: True records each training iteration of lebm's own methods once per key on CUDA
            devices and replays it; False (lebm's default without this callback) runs iterations
            eagerly, their chains captured.
        report: at the end of training, print how many iterations were recorded, replayed, warmed
            up and run eagerly (rank 0).
    """

    setter = staticmethod(set_iteration_capture)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recorder = getattr(pl_module, "iteration_recorder", None)
        if self.report and recorder is not None:
            rank_zero_info(f"recorded iterations: {recorder.stats.as_dict()}")
