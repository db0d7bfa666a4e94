"""Shared plumbing of the methods that infer latents by short-run posterior Langevin from noise
and optimise several nets manually (LatentEBM, MultiStageNCE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lebm.models.base import LatentVariableModel
from lebm.samplers import Sampler


class ShortRunPosteriorModel(LatentVariableModel):
    """A latent variable model whose posterior samples come from short-run Langevin.

    Subclasses set ``self.posterior_sampler`` and ``self.posterior_init_std`` and save the
    hyperparameters ``abort_sse`` and ``abort_after_epoch``. Optimisation is manual: each net has
    an Adam optimiser with an ExponentialLR schedule stepped once per epoch.
    """

    posterior_sampler: Sampler
    posterior_init_std: float

    def infer(
        self, x: Tensor, *, sampler: Sampler | None = None, return_diagnostics: bool = False
    ) -> Any:
        """Posterior latents ``(B, latent_dim)`` by short-run Langevin on ``-log p(x, z)``, started
        from ``N(0, posterior_init_std^2 I)`` noise (``(z, diagnostics)`` with ``return_diagnostics``)."""
        z0 = torch.randn(x.shape[0], self.prior.latent_dim, device=x.device) * self.posterior_init_std
        chain = sampler if sampler is not None else self.posterior_sampler
        return chain(
            self.posterior_energy(x),
            z0,
            reference_precision=self.prior.reference_precision,
            freeze=[self.decoder, self.prior],
            return_diagnostics=return_diagnostics,
        )

    def _optimizer_step(
        self, optimizers: Any | Sequence[Any], loss: Tensor, modules: nn.Module | Sequence[nn.Module], clip: float | None
    ) -> None:
        """One update of one or several nets from one ``loss``: ``zero_grad`` every optimiser,
        one backward pass, optional max-norm clipping of each module's gradients separately, then
        step every optimiser."""
        optimizers = list(optimizers) if isinstance(optimizers, Sequence) else [optimizers]
        modules = list(modules) if isinstance(modules, Sequence) else [modules]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if clip is not None:
            for module in modules:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        for optimizer in optimizers:
            optimizer.step()

    def _check_divergence(self, decoder_loss: Tensor) -> None:
        """Stop with an error when the per-example SSE exceeds ``abort_sse`` (official scripts)."""
        abort_sse = self.hparams.abort_sse
        if abort_sse is None or self.current_epoch < self.hparams.abort_after_epoch:
            return
        sse = float(decoder_loss) * 2 * getattr(self.decoder, "sigma", 2**-0.5) ** 2
        if sse > abort_sse:
            raise RuntimeError(
                f"training diverged: decoder SSE per example {sse:.1f} > abort_sse={abort_sse} at epoch "
                f"{self.current_epoch}; lower the learning rates or raise/disable model.abort_sse"
            )

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def _optimizer_list(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]


def chain_logs(prefix: str, stats: dict[str, Tensor]) -> dict[str, Tensor]:
    """Energy and gradient norm at the first and last step of a chain (no host sync)."""
    logs: dict[str, Tensor] = {}
    for name, per_step in stats.items():
        if len(per_step):
            logs[f"{prefix}_{name}_first"] = per_step[0]
            logs[f"{prefix}_{name}_last"] = per_step[-1]
    return logs
