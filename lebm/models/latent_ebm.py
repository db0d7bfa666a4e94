"""LatentEBM: latent-space EBM prior learned by MLE with short-run Langevin (Pang et al. 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from lebm.estimators import reconstruction_loss
from lebm.models.base import batch_observations
from lebm.models.latent_generator import chain_logs
from lebm.models.latent_variable import LatentVariableModel
from lebm.models.prior_mle import PRIOR_MLE_METRIC_NAMES, prior_mle_step, prior_negatives
from lebm.models.priors import Prior
from lebm.recording.audit import audited_iteration
from lebm.samplers import Langevin, Sampler


@audited_iteration
class LatentEBM(LatentVariableModel):
    """Generator ``x = g(z) + eps`` with a tilted prior ``p(z) ∝ exp(-E(z)) N(0, sigma_p^2 I)``.

    Posterior inference: noise + Langevin. One training iteration (official ``train_svhn.py``)::

        z+ = posterior_langevin(N(0, I) noise, x)    # K1 = 20 steps, s = 0.1, target p(z|x)
        z- = prior_langevin(N(0, I) noise)           # K0 = 60 steps, s = 0.4, target p(z)
        decoder step:  mean_i -log p(x_i | z+_i)     # = SSE / (2 sigma^2 B)
        prior step:    mean E(z+) - mean E(z-)        # MLE: posterior minus prior moments

    Both chains run before either update and draw from the rank's training stream;
    Adam(0.5, 0.999), lr 1e-4 (decoder) and 2e-5 (prior), ExponentialLR(0.998) stepped per epoch.

    Args:
        decoder: the observation model (e.g. ``GaussianDecoder(DCGANGenerator(...), 0.3)``).
        prior: a ``TiltedGaussianPrior`` (its ``sampler`` is the prior chain). A prior without
            parameters (``GaussianPrior``) gives the alternating back-propagation baseline:
            the same posterior chain and decoder update, no prior chain or prior update.
        posterior_sampler: the posterior chain; default ``Langevin(20, 0.1)``.
        posterior_init_std: the posterior chains start from ``N(0, posterior_init_std^2 I)``.
        decoder_lr: Adam learning rate of the decoder.
        prior_lr: Adam learning rate of the prior's energy net.
        betas: Adam betas for both optimisers.
        decoder_weight_decay: Adam weight decay of the decoder.
        prior_weight_decay: Adam weight decay of the prior's energy net.
        lr_decay: ExponentialLR gamma, stepped at the end of each epoch.
        decoder_grad_clip: optional max-norm clipping of the decoder's parameter gradients
            (the official code's clamp, 100, is off by default).
        prior_grad_clip: optional max-norm clipping of the prior's parameter gradients (off by
            default).
        divergence_limits: ``{logged quantity: largest |value|}`` that stops training (a
            non-finite value always does). The official SVHN script stops when the SSE per
            example exceeds 300 after epoch 10: ``{"train/decoder_nll": 1666.7}`` at sigma 0.3
            (``nll = SSE / (2 sigma^2)``) with ``divergence_after_epoch: 10``.
        divergence_after_epoch: the first epoch at which ``divergence_limits`` apply.
    """

    divergence_hint = "Lower model.init_args.decoder_lr / prior_lr or the chains' step sizes."

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
        divergence_limits: Mapping[str, float] | None = None,
        divergence_after_epoch: int = 0,
    ) -> None:
        super().__init__(
            decoder,
            prior,
            encoder=None,
            posterior_sampler=posterior_sampler if posterior_sampler is not None else Langevin(20, 0.1),
            posterior_init_std=posterior_init_std,
            divergence_limits=divergence_limits,
            divergence_after_epoch=divergence_after_epoch,
        )
        self.save_component_hyperparameters(locals())

    # --------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        return self.decoder_and_prior_optimizers(self.decoder.parameters())

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        optimizers = self.optimizer_list()
        stream = self.train_generator
        z_pos, posterior_stats = self.infer(x, start="noise", generator=stream, return_diagnostics="ends")
        logs = chain_logs("train/posterior_chain", posterior_stats)
        watch = {"train/posterior_chain_states": z_pos}
        if self.learns_prior:
            negatives = prior_negatives(self.prior, x.shape[0], stream)
            logs.update(negatives.logs)
            watch.update(negatives.watch)

        decoder_loss = reconstruction_loss(self.decoder, x, z_pos)
        self.step_optimizers(optimizers[0], decoder_loss, clip=self.hparams.decoder_grad_clip)
        logs["train/decoder_nll"] = decoder_loss.detach()

        if self.learns_prior:
            logs.update(prior_mle_step(self, optimizers[1], z_pos, negatives.z, clip=self.hparams.prior_grad_clip))
        self.finish_training_step(logs, watch, batch_idx)

    progress_bar_names = ("train/decoder_nll", "train/prior_loss")

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """The posterior chain's ends, the decoder's NLL and, with a learned prior, its chain and
        MLE step (``train/...``); the evaluation's ``val/nll``, ``test/nll``."""
        prior = PRIOR_MLE_METRIC_NAMES if self.learns_prior else ()
        return ("train/posterior_chain_*", "train/decoder_nll", *prior, *self.evaluation_metric_names)
