"""How many CPU threads torch's operators use, chosen for the size of the nets.

Small nets (the quickstart's MLPs, the latent EBMs) are dominated by per-operator overhead: a
second intra-op thread gains nothing on a quiet machine and, on a busy one (a laptop with a
browser, a CI runner, a second training run), makes every operator wait for a descheduled worker.
Measured on a 2-core machine (``docs/performance.md``): the quickstart iteration took the same
time with 1 and 2 threads when the machine was quiet (0.092-0.102 s) and 3.3x longer with 2
threads when two other processes were running (0.54 against 0.16 s). Convolutional nets at batch
100 do gain from every core.

:class:`CPUThreads` sets ``torch.set_num_threads`` once per run, on CPU runs only:

- ``threads: auto`` (the recipes' default): 1 thread when the model has fewer than
  ``small_model_parameters`` parameters, torch's own default otherwise; an explicit
  ``OMP_NUM_THREADS`` in the environment always wins;
- ``threads: N``: N threads;
- ``threads: null``: leave torch's setting alone.
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import torch

#: Models below this many parameters run on one thread under ``threads: auto`` (the quickstart
#: has 0.2M; the 28-px offline MNIST recipes 0.8-3.3M gain from a second thread).
SMALL_MODEL_PARAMETERS = 500_000


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameter elements of ``module``."""
    return sum(parameter.numel() for parameter in module.parameters())


def auto_threads(n_parameters: int, small_model_parameters: int = SMALL_MODEL_PARAMETERS) -> int | None:
    """The ``auto`` choice: 1 for a small model, None (torch's default) otherwise, and None when
    ``OMP_NUM_THREADS`` is set (the user's choice stands)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if n_parameters < small_model_parameters else None


class CPUThreads(L.Callback):
    """Set torch's intra-op thread count for a CPU run (see the module docstring).

    Args:
        threads: ``"auto"``, a number of threads >= 1, or None (leave it).
        small_model_parameters: the ``auto`` threshold, in parameters.
    """

    def __init__(
        self, threads: int | Literal["auto"] | None = "auto", small_model_parameters: int = SMALL_MODEL_PARAMETERS
    ) -> None:
        super().__init__()
        if not (threads is None or threads == "auto" or (isinstance(threads, int) and threads >= 1)):
            raise ValueError(f"CPUThreads threads must be 'auto', an int >= 1 or null, got {threads!r}")
        self.threads = threads
        self.small_model_parameters = int(small_model_parameters)
        self.chosen: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Choose and set the thread count, unless the run is not on a CPU."""
        if trainer.strategy.root_device.type != "cpu" or self.threads is None:
            return
        if self.threads == "auto":
            self.chosen = auto_threads(parameter_count(pl_module), self.small_model_parameters)
        else:
            self.chosen = int(self.threads)
        if self.chosen is not None:
            torch.set_num_threads(self.chosen)
