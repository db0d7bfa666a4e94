"""The recipe line for whole-chain CUDA-graph capture (:mod:`lebm.samplers.capture`).

On a CUDA device lebm's samplers record each chain once as a CUDA graph and replay it, while the
run-wide switch :mod:`lebm.samplers.capture.switch` is on (the default). This callback sets that
switch for the run, from ``setup`` to ``teardown`` (or the exception that ends it), so one line of
a recipe turns capture off for every chain (the model's and those of other callbacks, such as an
FID callback's own sampler)::

    lebm fit -c recipes/latent_ebm/svhn.yaml -c recipes/speed/eager_chains.yaml

which adds ``lebm.speed.ChainCapture`` with ``enabled: false``. It writes no sampler's attributes.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.samplers.capture.cache import capture_stats, samplers_of
from lebm.samplers.capture.switch import set_chain_capture
from lebm.speed.run_switch import RunSwitch


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
