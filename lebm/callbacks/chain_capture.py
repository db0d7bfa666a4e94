"""The recipe switch for whole-chain CUDA-graph capture (``lebm.samplers.capture``).

On a CUDA device lebm's samplers record each chain once as a CUDA graph and replay it (on by
default: the ``cuda_graph`` option of ``Langevin`` and ``PersistentChains``). This callback sets
that option for every sampler of the model and of the run's other callbacks (an FID callback's own
prior sampler, say) before the first batch, so one line of a recipe turns capture off::

    lebm fit -c recipes/latent_ebm/svhn.yaml -c recipes/speed/eager_chains.yaml

which adds ``lebm.callbacks.ChainCapture`` with ``enabled: false``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.samplers.capture import capture_stats, set_chain_capture


class ChainCapture(L.Callback):
    """Switch whole-chain capture on or off for every sampler of the run.

    Args:
        enabled: True captures chains on CUDA devices (the samplers' default), False runs every
            chain eagerly. Chains on other devices run eagerly either way.
        report: at the end of training, print how many chains were captured, how many calls were
            served by a replay and how many ran eagerly (rank 0).
    """

    def __init__(self, enabled: bool = True, report: bool = False) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        self.report = bool(report)
        self.samplers: list = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        others = [callback for callback in trainer.callbacks if callback is not self]
        self.samplers = set_chain_capture(self.enabled, pl_module, *others)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report:
            rank_zero_info(f"chain capture: {capture_stats(self.samplers)} over {len(self.samplers)} samplers")
