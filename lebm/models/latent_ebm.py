"""LatentEBM: latent-space EBM prior learned by MLE with short-run Langevin (Pang et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lebm.estimators import mle_loss, reconstruction_loss
from lebm.models.base import batch_observations, ensure_component
from lebm.models.priors import Prior
from lebm.models.short_run import ShortRunPosteriorModel, chain_logs
from lebm.samplers import Langevin, Sampler


class LatentEBM(ShortRunPosteriorModel):
    """Generator ``x = g(z) + eps`` with a tilted prior ``p(z) ∝ exp(-E(z)) N(0, sigma_p^2 I)``.

    One training iteration (official ``train_svhn.py``)::

        z+ = posterior_langevin(N(0, I) noise, x)    # K1 = 20 steps, s = 0.1, target p(z|x)
        z- = prior_langevin(N(0, I) noise)           # K0 = 60 steps, s = 0.4, target p(z)
        decoder step:  mean_i -log p(x_i | z+_i)     # = SSE / (2 sigma^2 B)
        prior step:    mean E(z+) - mean E(z-)        # MLE: posterior minus prior moments

    Both chains run before either update; Adam(0.5, 0.999), lr 1e-4 (decoder) and 2e-5
    (prior), ExponentialLR(0.998) stepped per epoch. Optimisation is manual.

    Args:
        decoder: the observation model (e.g. ``GaussianDecoder(DCGANGenerator(...), 0.3)``).
        prior: a ``TiltedGaussianPrior`` (its ``sampler`` is the prior chain). A prior without
            parameters (``GaussianPrior``) gives the alternating back-propagation baseline:
            the same posterior chain and decoder update, no prior chain or prior update.
        posterior_sampler: the posterior chain; default ``Langevin(20, 0.1)``.
        posterior_init_std: the posterior chains start from ``N(0, posterior_init_std^2 I)``.
        decoder_lr, prior_lr: Adam learning rates.
        betas: Adam betas for both optimisers.
        decoder_weight_decay, prior_weight_decay: Adam weight decay.
        lr_decay: ExponentialLR gamma, stepped at the end of each epoch.
        decoder_grad_clip, prior_grad_clip: optional max-norm clipping of parameter gradients
            (the official code's clamp, 100, is off by default).
        abort_sse: stop training with an error when the decoder's per-example sum of squared
            errors exceeds this after ``abort_after_epoch`` (the official SVHN script uses 300).
        abort_after_epoch: see ``abort_sse``.
    """

    def __init__(
        self,
        decoder: nn.Module,
        prior: Prior,
        posterior_sampler: Sampler | None = None,
        posterior_init_std: float = 1.0,
        decoder_lr: float = 1e-4,
        prior_lr: float = 2e-5,
        betas: Sequence[float] = (0.5, 0.999),
        decoder_weight_decay: float = 0.0,
        prior_weight_decay: float = 0.0,
        lr_decay: float = 0.998,
        decoder_grad_clip: float | None = None,
        prior_grad_clip: float | None = None,
        abort_sse: float | None = None,
        abort_after_epoch: int = 10,
    ) -> None:
        super().__init__()
        self.save_component_hyperparameters(locals())
        self.automatic_optimization = False
        self.decoder = ensure_component(decoder, "decoder")
        self.prior = ensure_component(prior, "prior", Prior)
        if posterior_sampler is None:
            posterior_sampler = Langevin(n_steps=20, step_size=0.1)
        self.posterior_sampler = ensure_component(posterior_sampler, "posterior_sampler", Sampler)
        self.posterior_init_std = posterior_init_std

    # --------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decoder_opt = torch.optim.Adam(
            self.decoder.parameters(), lr=hp.decoder_lr, betas=tuple(hp.betas), weight_decay=hp.decoder_weight_decay
        )
        optimizers = [decoder_opt]
        if self.learns_prior:
            optimizers.append(
                torch.optim.Adam(
                    self.prior.parameters(), lr=hp.prior_lr, betas=tuple(hp.betas), weight_decay=hp.prior_weight_decay
                )
            )
        schedulers = [torch.optim.lr_scheduler.ExponentialLR(opt, gamma=hp.lr_decay) for opt in optimizers]
        return optimizers, schedulers

    @property
    def learns_prior(self) -> bool:
        """Whether the prior has parameters to learn (False for the Gaussian-prior baseline)."""
        return any(True for _ in self.prior.parameters())

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        optimizers = self._optimizer_list()
        z_pos, posterior_stats = self.infer(x, return_diagnostics=True)
        logs = chain_logs("train/posterior_chain", posterior_stats)
        if self.learns_prior:
            z_neg, prior_stats = self.prior.sample(x.shape[0], return_diagnostics=True)
            logs.update(chain_logs("train/prior_chain", prior_stats))

        decoder_loss = reconstruction_loss(self.decoder, x, z_pos)
        self._optimizer_step(optimizers[0], decoder_loss, self.decoder, self.hparams.decoder_grad_clip)
        logs["train/decoder_nll"] = decoder_loss.detach()

        if self.learns_prior:
            contrastive = mle_loss(self.prior.residual_energy, z_pos, z_neg)
            self._optimizer_step(optimizers[1], contrastive.loss, self.prior, self.hparams.prior_grad_clip)
            logs["train/prior_loss"] = contrastive.loss.detach()
            logs["train/energy_pos"] = contrastive.energy_pos
            logs["train/energy_neg"] = contrastive.energy_neg

        self._check_divergence(decoder_loss)
        self.log_dict(logs)
