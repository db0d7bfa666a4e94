"""Recover from a divergence instead of stopping: the recipe line (``recipes/_recovery.yaml``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L

from lebm.models.base import Method
from lebm.training.recovery import RecoveryPolicy


class DivergenceRecovery(L.Callback):
    """When the divergence guard trips, roll back to the last good state, lower the step sizes and
    learning rates by a factor and go on, at most ``max_recoveries`` times; after that, stop as
    without this callback (``lebm.training.recovery`` has the details).

    The callback attaches a :class:`~lebm.training.recovery.RecoveryPolicy` to the method for each
    ``fit`` (any :class:`~lebm.models.Method`). Each recovery is printed on its own line, logged as
    ``recovery/count`` and recorded in the checkpoints (``lebm_divergence_recovery``): a resumed run
    keeps the lowered values, with or without this callback, and continues exactly.

    Cost: one copy of the parameters, buffers and optimiser states (Adam: three times the
    parameters) every ``snapshot_every_n_steps`` steps and at every checkpoint; the copy stays in
    memory (``snapshot_device``).

    Args:
        max_recoveries: R, the most recoveries of a run (checkpoints count the earlier ones).
        snapshot_every_n_steps: K, training steps between snapshots.
        step_size_factor: multiplies the chosen samplers' step sizes at each recovery (null: keep).
        lr_factor: multiplies every learning rate at each recovery (null: keep).
        samplers: dotted paths of the samplers to lower, e.g. ``[prior.sampler, posterior_sampler]``;
            null: every sampler the training uses that has a step size (evaluation-only ``test_*``
            samplers are left alone).
        snapshot_device: ``same`` (the model's device) or ``cpu``.
    """

    def __init__(
        self,
        max_recoveries: int = 3,
        snapshot_every_n_steps: int = 50,
        step_size_factor: float | None = 0.5,
        lr_factor: float | None = 0.5,
        samplers: Sequence[str] | None = None,
        snapshot_device: Literal["same", "cpu"] = "same",
    ) -> None:
        self.settings: dict[str, Any] = dict(
            max_recoveries=max_recoveries,
            snapshot_every_n_steps=snapshot_every_n_steps,
            step_size_factor=step_size_factor,
            lr_factor=lr_factor,
            samplers=None if samplers is None else list(samplers),
            snapshot_device=snapshot_device,
        )
        RecoveryPolicy(**self.settings)  # check the settings when the recipe is built

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What the method logs with a recovery policy attached: ``recovery/count``."""
        return ("recovery/count",)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        pl_module.divergence_recovery = self.check_method(pl_module)

    def check_method(self, pl_module: L.LightningModule) -> RecoveryPolicy:
        """The recovery policy for ``pl_module``; ``TypeError``/``ValueError`` (one line) for a model
        that is not an lebm method or samplers named that it does not have (the ``lebm`` CLI calls it
        when the run is built, ``Method.check_trainer`` when a run starts)."""
        if not isinstance(pl_module, Method):
            raise TypeError(
                f"DivergenceRecovery works with lebm methods (lebm.models.Method), not {type(pl_module).__name__}"
            )
        policy = RecoveryPolicy(**self.settings)
        policy.chosen_samplers(pl_module)  # listed samplers that do not exist fail now, not at a divergence
        return policy

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and isinstance(pl_module, Method):
            pl_module.divergence_recovery = None
