"""An exponential moving average of a method's weights, used to evaluate and sample.

The generative-modelling way to average weights (in place of Lightning's StochasticWeightAveraging,
which assumes one optimiser and its schedule): after every training iteration (``global_step``)

    theta_ema <- decay * theta_ema + (1 - decay) * theta        for every parameter

Validation, test and prediction run with ``theta_ema`` (so FID, grids drawn in those loops and
``lebm predict`` see the averaged generator and priors); training goes on with its own weights.
Only parameters are averaged: buffers (BatchNorm statistics, persistent chains, a multi-stage
prior's completed stages, step-size adaptation) stay the model's own, which averaging would break
(an average of stage counts is no stage count).

The averages are part of the callback's checkpoint state, so resuming continues them exactly;
:meth:`WeightEMA.load_average` puts them into a loaded model::

    model = lebm.load("runs/x/checkpoints/last.ckpt")
    WeightEMA.load_average(model, "runs/x/checkpoints/last.ckpt")
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lebm import arguments

__all__ = ["WeightEMA"]

#: The key of the averages in the callback's checkpoint state.
AVERAGE_KEY = "average"


class WeightEMA(L.Callback):
    """Exponential moving average of every parameter, swapped in for validation, test and predict.

    Args:
        decay: ``d`` in ``theta_ema <- d * theta_ema + (1 - d) * theta``, in [0, 1).
        start_step: the averages follow the weights exactly (``theta_ema = theta``) until this
            ``global_step``; the moving average starts after it.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0) -> None:
        self.decay = arguments.number("WeightEMA", "decay", decay)
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(
                f"WeightEMA decay must be in [0, 1) (the share of the average kept at each step, e.g. 0.999), "
                f"got {decay}"
            )
        self.start_step = arguments.whole("WeightEMA", "start_step", start_step, at_least=0)
        self.average: dict[str, Tensor] | None = None
        self.averaged_step = -1
        self._held: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------------ averaging
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.average is None:
            self.average = {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """After an iteration that updated the weights: ``theta_ema`` moves towards ``theta``."""
        step = trainer.global_step
        if self.average is None or step == self.averaged_step:
            return  # no update this batch (gradient accumulation), or averaged already
        self.averaged_step = step
        weight = 1.0 if step <= self.start_step else 1.0 - self.decay
        for name, p in pl_module.named_parameters():
            average = self.average[name]
            if average.device != p.device:
                average = self.average[name] = average.to(p.device)
            average.lerp_(p.detach(), weight)

    # ---------------------------------------------------------------- swapping for evaluation
    @torch.no_grad()
    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.average is None or self._held is not None:
            return
        self._held = {}
        for name, p in pl_module.named_parameters():
            self._held[name] = p.detach().clone()
            p.copy_(self.average[name].to(p.device))

    @torch.no_grad()
    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._held is None:
            return
        for name, p in pl_module.named_parameters():
            p.copy_(self._held[name])
        self._held = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)  # after every callback's on_validation_epoch_end (FID, grids)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._swap_out(pl_module)  # a failed evaluation leaves the model its own weights

    # ------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        average = {name: value.detach().cpu() for name, value in (self.average or {}).items()}
        return {AVERAGE_KEY: average, "averaged_step": self.averaged_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        average = state_dict.get(AVERAGE_KEY) or None
        self.average = {name: value.clone() for name, value in average.items()} if average else None
        self.averaged_step = int(state_dict.get("averaged_step", -1))

    @staticmethod
    def load_average(model: torch.nn.Module, checkpoint_path: str) -> torch.nn.Module:
        """Copy the averaged parameters a :class:`WeightEMA` saved in ``checkpoint_path`` into
        ``model`` (its buffers stay); returns ``model``. ``ValueError`` when the checkpoint has none."""
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        states = [
            state
            for key, state in (checkpoint.get("callbacks") or {}).items()
            if key.startswith("WeightEMA") and state.get(AVERAGE_KEY)
        ]
        if not states:
            raise ValueError(
                f"{checkpoint_path} holds no WeightEMA averages: the run had no lebm.callbacks.WeightEMA callback"
            )
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(states[0][AVERAGE_KEY][name].to(p.device))
        return model
