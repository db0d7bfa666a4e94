"""``trainer.precision="64-true"`` for the whole run, not only inside the steps.

Lightning's 64-bit precision casts the nets to float64 and makes float64 torch's default dtype inside
``training_step``, ``validation_step`` and the other steps. The work a run does outside them (the
callbacks' epoch-end pictures and metrics: ``generate``, ``infer``, a chain's noise start, DAMC's
amortizer condition) would draw its tensors in float32 and meet float64 nets.
:class:`RunDefaultDtype` makes float64 the default dtype from the start of the run's loop to its end
(normal or by an exception), so every path creates its tensors in the nets' dtype, and gives the
previous default back after. It starts once Lightning has cast the nets (``on_fit_start`` and the
other stages' starts), not at set-up, where the method's checks still meet float32 nets.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback

#: The Trainer precision whose nets are float64, and the default dtype a run of it keeps.
DOUBLE_PRECISION = "64-true"


class RunDefaultDtype(Callback):
    """float64 as torch's default dtype for the whole of a ``64-true`` run (see the module); no
    effect at any other precision."""

    def __init__(self) -> None:
        self._before: torch.dtype | None = None

    def _take(self, trainer: Any) -> None:
        if str(getattr(trainer, "precision", "")) != DOUBLE_PRECISION or self._before is not None:
            return
        self._before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._take(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._take(trainer)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._take(trainer)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._take(trainer)

    def _give_back(self) -> None:
        if self._before is not None:
            torch.set_default_dtype(self._before)
            self._before = None

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._give_back()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._give_back()
