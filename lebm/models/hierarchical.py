"""JointHierarchicalEBM: one joint latent EBM prior over the layers of a multi-layer generator,
learned variationally with a ladder inference network (Cui, Wu & Han, ICCV 2023)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lebm.estimators import VariationalBound, variational_loss
from lebm.models.base import batch_observations, ensure_component, require_components
from lebm.models.latent_variable import LatentVariableModel
from lebm.models.prior_mle import PRIOR_MLE_METRIC_NAMES, prior_mle_step, prior_negatives
from lebm.models.priors import Prior
from lebm.nets.encoders import DiagonalGaussian, InferenceNetwork
from lebm.nets.latents import LatentGroups
from lebm.recording.audit import audited_iteration
from lebm.samplers import Sampler
from lebm.samplers.chain import frozen_parameters
from lebm.training.choices import check_choice
from lebm.training.inputs import check_count, check_sampler

UpdateOrder = Literal["generator_first", "ebm_first"]
#: The update orders and where each comes from.
UPDATE_ORDERS = {"generator_first": "the official code", "ebm_first": "the paper's Algorithm 1"}
#: The checkpoint key of the KL warm-up's iteration count.
WARMUP_KEY = "lebm_kl_warmup_iterations"


@audited_iteration
class JointHierarchicalEBM(LatentVariableModel):
    """A multi-layer generator ``p(x | z_1, ..., z_L)`` with one EBM prior on the concatenated latent,
    ``p(z) ∝ exp(-E([z_1, ..., z_L])) N(0, I)`` (``E = -f``), and a ladder encoder ``q(z|x)``.

    Posterior inference is the encoder alone (no posterior chain); prior samples come from the
    prior's short-run Langevin chain. One training iteration, in the official ``train_fid.py``'s
    order (``update_order="generator_first"``)::

        z+ = q(z|x).rsample()                                        reparameterised, one sample
        G+I:  mean_i [ nll(x_i, z+_i) + log q(z+_i|x_i) + U(z+_i) ]   the negative ELBO (single-sample KL)
              = Gfactor * SSE / B + sum_l mean[log q(z_l|x) - log N(z_l; 0, I)] - mean f(z+)
        z- = prior_chain(N(0, I) noise)                               100 steps, s = 0.3 (SVHN)
        EBM:  mean E(z+) - mean E(z-)                                 = mean f(z-) - mean f(z+)

    ``nll = SSE / (2 sigma^2)``, so ``Gfactor = 1 / (2 sigma^2)``: the official Gfactor 10 is the
    ``GaussianDecoder``'s sigma ``sqrt(0.05)``. ``U`` is the prior's total energy, so the EBM term
    ``-f(z+)`` reaches the encoder through ``z+`` while only the generator's and the encoder's
    optimiser steps on this loss (the prior is frozen while it is computed). ``log Z`` of the tilted
    prior is constant in the generator and the encoder and is dropped. ``update_order="ebm_first"``
    is the paper's Algorithm 1 (prior chain and EBM update first, then G+I with the updated EBM).

    One Adam for the generator and the encoder (lr 3e-4, betas (0, 0.9), weight decay 5e-4), one
    for the EBM (lr 2e-6, betas (0, 0.9)), ExponentialLR(0.998) per epoch. A prior without
    parameters (``GaussianPrior``) switches the EBM off: the same model is then a VLAE (no chain,
    no EBM update, exact prior samples).

    User API: ``generate(n)``; ``infer(x)`` the encoder's mean ``(B, latent_dim)``, ``infer(x,
    by_layer=True)`` one ``(B, size_l)`` tensor per layer (bottom first); ``sample_layer(layer,
    n)`` hierarchical sampling; ``reconstruct(x)``; ``score(x) = -log p(x, z)`` at the encoder's
    mean, or averaged over ``score_samples`` draws of ``q(z|x)`` (higher = more anomalous).
    ``latent_groups`` is the per-layer layout.

    Args:
        decoder: the observation model, e.g. ``GaussianDecoder(HierarchicalGenerator(...), sigma)``.
        prior: ``TiltedGaussianPrior`` over the concatenated latent (its ``sampler`` is the prior
            chain; its ``groups`` may state the layout), or ``GaussianPrior`` for the VLAE baseline.
        encoder: the inference network ``q(z|x)`` (``LadderEncoder``).
        update_order: ``"generator_first"`` (official code) or ``"ebm_first"`` (paper, Algorithm 1).
        decoder_lr: Adam learning rate of the generator and the encoder (one optimiser).
        prior_lr: Adam learning rate of the EBM.
        betas: Adam betas of both optimisers.
        decoder_weight_decay: weight decay of the generator and the encoder.
        prior_weight_decay: weight decay of the EBM.
        lr_decay: ExponentialLR gamma, stepped at the end of each epoch.
        decoder_grad_clip: optional max-norm clipping of the generator's and encoder's parameter
            gradients (off in the official code).
        prior_grad_clip: optional max-norm clipping of the EBM's parameter gradients (off in the
            official code).
        score_samples: the anomaly score ``-log p(x, z)`` (and each of its terms) averaged over this
            many latents drawn from ``q(z|x)`` (paper §5.4: "latent samples from the learned
            inference model"); 0 (default) scores at the encoder's mean.
        kl_warmup_steps: ``tau`` of a KL warm-up: the G+I loss weighs its KL term by
            ``1 - exp(-t / tau)`` at training iteration ``t`` (VLAE's MNIST code uses ``tau = 15000``);
            0 (default, the official ``train_fid.py``) weighs it 1 from the start. Training only:
            evaluation and scores use the whole bound.
        divergence_limits: see :class:`~lebm.models.base.Method` (the official code has no abort
            rule; a non-finite value always stops).
        divergence_after_epoch: see :class:`~lebm.models.base.Method`.
    """

    divergence_hint = "Lower model.init_args.decoder_lr / prior_lr or the prior chain's step size."

    def __init__(
        self,
        decoder: nn.Module,
        prior: Prior,
        encoder: InferenceNetwork,
        update_order: UpdateOrder = "generator_first",
        decoder_lr: float = 3e-4,
        prior_lr: float = 2e-6,
        betas: Sequence[float] = (0.0, 0.9),
        decoder_weight_decay: float = 5e-4,
        prior_weight_decay: float = 0.0,
        lr_decay: float = 0.998,
        decoder_grad_clip: float | None = None,
        prior_grad_clip: float | None = None,
        score_samples: int = 0,
        kl_warmup_steps: float = 0.0,
        divergence_limits: Mapping[str, float] | None = None,
        divergence_after_epoch: int = 0,
    ) -> None:
        require_components(decoder=decoder, prior=prior, encoder=encoder)
        super().__init__(
            decoder,
            prior,
            encoder=ensure_component(encoder, "encoder", InferenceNetwork),
            posterior_sampler=None,
            divergence_limits=divergence_limits,
            divergence_after_epoch=divergence_after_epoch,
        )
        self.save_component_hyperparameters(locals())
        if isinstance(score_samples, bool) or not isinstance(score_samples, int) or score_samples < 0:
            raise ValueError(f"model.init_args.score_samples must be an integer >= 0, got {score_samples!r}")
        self.score_samples = score_samples
        if isinstance(kl_warmup_steps, bool) or not isinstance(kl_warmup_steps, int | float) or kl_warmup_steps < 0:
            raise ValueError(
                f"model.init_args.kl_warmup_steps must be a number >= 0 (the warm-up's time constant in steps; "
                f"0 = no warm-up), got {kl_warmup_steps!r}"
            )
        # the iterations so far: saved in checkpoints beside the weights (WARMUP_KEY), not as a weight, so
        # that checkpoints with and without a warm-up hold the same architecture
        self.register_buffer("kl_warmup_iterations", torch.zeros((), dtype=torch.long), persistent=False)
        check_choice("model.init_args.update_order", update_order, UPDATE_ORDERS)

    # ------------------------------------------------------------------------- the layout
    @property
    def latent_groups(self) -> LatentGroups:
        """The per-layer layout of the flat latent: the prior's ``groups``, else the generator's,
        else the encoder's (``check_run`` checks that those that state one agree); one group if none does."""
        declared = self._declared_groups()
        return declared[0][1] if declared else LatentGroups([self.prior.latent_dim], names=["z"])

    def _declared_groups(self) -> list[tuple[str, LatentGroups]]:
        parts = [
            ("the prior", "model.init_args.prior.init_args.groups", self.prior),
            ("the generator", "model.init_args.decoder.init_args.net.init_args.group_sizes", self.decoder_net),
            ("the encoder", "model.init_args.encoder.init_args.group_sizes", self.encoder),
        ]
        return [(f"{name} ({option})", part.groups) for name, option, part in parts if _groups_of(part) is not None]

    @property
    def decoder_net(self) -> nn.Module:
        """The generator inside the decoder (the decoder itself if it has none)."""
        return self.decoder.generator_net()

    def check_run(self, datamodule: Any = None) -> None:
        """The latent sizes and data shape (see :class:`LatentVariableModel`), and the per-layer
        group sizes of the prior, the generator and the encoder agree."""
        super().check_run(datamodule)
        declared = self._declared_groups()
        for name, groups in declared[1:]:
            first_name, first = declared[0]
            if groups.sizes != first.sizes:
                raise ValueError(
                    f"latent groups disagree: {first_name} has layers {first.sizes} but {name} has {groups.sizes}; "
                    "give every part the same group sizes, bottom layer first"
                )

    # ---------------------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        """One Adam for the generator and the encoder together (the official code), one for the EBM."""
        return self.decoder_and_prior_optimizers([*self.decoder.parameters(), *self.encoder.parameters()])

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        optimizers = self.optimizer_list()
        stream = self.train_generator
        logs: dict[str, Tensor] = {}
        watch: dict[str, Tensor] = {}
        q = self.encoder(x)
        z_pos = q.rsample(stream)
        if self.hparams.update_order == "ebm_first":
            self._ebm_update(optimizers, z_pos.detach(), x.shape[0], stream, logs, watch)
        kl_weight = self.kl_weight()
        bound = self.variational_bound(x, q=q, z=z_pos, kl_weight=kl_weight)
        if self.hparams.kl_warmup_steps and self.updates_this_batch:  # counts updates, not accumulated batches
            self.kl_warmup_iterations += 1
        self.step_optimizers(optimizers[0], bound.loss, clip=self.hparams.decoder_grad_clip)
        logs["train/loss"] = bound.loss.detach()
        logs["train/nll"] = bound.nll.mean()
        logs["train/kl"] = bound.kl.mean()
        if self.hparams.kl_warmup_steps:
            logs["train/kl_weight"] = torch.as_tensor(kl_weight)
        watch["train/posterior_samples"] = z_pos.detach()
        if self.hparams.update_order == "generator_first":
            self._ebm_update(optimizers, z_pos.detach(), x.shape[0], stream, logs, watch)
        self.finish_training_step(logs, watch, batch_idx)

    def variational_bound(
        self,
        x: Tensor,
        *,
        q: DiagonalGaussian | None = None,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
        kl_weight: float | Tensor = 1.0,
    ) -> VariationalBound:
        """The negative ELBO of ``x`` ``(B, *x_shape)`` with one reparameterised sample
        ``z ~ q(z|x)`` (drawn from ``generator`` unless given): ``loss`` (batch mean, what the
        generator and the encoder descend), per-example ``nll`` and ``kl`` ``(B,)`` (the single-sample
        KL to the tilted prior, up to its ``log Z``), the KL weighed by ``kl_weight`` in ``loss``.
        The prior's parameters get no gradient."""
        q = self.encoder(x) if q is None else q
        z = q.rsample(generator) if z is None else z
        with frozen_parameters([self.prior]):  # the bound reaches the EBM through U; only G and I step on it
            return variational_loss(self.decoder, x, q, z, self.prior, kl_weight=kl_weight)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[WARMUP_KEY] = int(self.kl_warmup_iterations)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.kl_warmup_iterations.fill_(int(checkpoint.get(WARMUP_KEY, 0)))

    def kl_weight(self) -> Tensor | float:
        """The KL term's weight at this iteration: ``1 - exp(-t / kl_warmup_steps)`` (``t`` the
        training iterations so far; a 0-d tensor on the model's device, read without a host
        synchronisation), or 1 without a warm-up."""
        tau = float(self.hparams.kl_warmup_steps)
        return 1.0 - torch.exp(-self.kl_warmup_iterations.double() / tau).float() if tau > 0 else 1.0

    def _ebm_update(
        self,
        optimizers: list[Any],
        z_pos: Tensor,
        n: int,
        stream: torch.Generator,
        logs: dict[str, Tensor],
        watch: dict[str, Tensor],
    ) -> None:
        """Prior chain from noise, then the EBM step on ``mean E(z+) - mean E(z-)``
        (:mod:`lebm.models.prior_mle`)."""
        if not self.learns_prior:
            return
        negatives = prior_negatives(self.prior, n, stream)
        mle_logs = prior_mle_step(self, optimizers[1], z_pos, negatives.z, clip=self.hparams.prior_grad_clip)
        logs.update({**negatives.logs, **mle_logs})
        watch.update(negatives.watch)

    # ---------------------------------------------------------------------------- user API
    def infer(self, x: Tensor, *, by_layer: bool = False, **kwargs: Any) -> Any:
        """Posterior latents: the encoder's mean ``(B, latent_dim)`` (``start="sample"``: a
        reparameterised sample); ``by_layer=True``: one ``(B, size_l)`` tensor per layer, bottom first."""
        z = super().infer(x, **kwargs)
        if not by_layer:
            return z
        if isinstance(z, tuple):
            raise ValueError("infer: by_layer=True and return_diagnostics=True cannot be combined")
        return self.latent_groups.split(z)

    @torch.no_grad()
    def sample_layer(
        self,
        layer: int | str,
        n: int,
        *,
        conditional: bool = False,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_latents: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Hierarchical sampling: ``n`` samples ``(n, *x_shape)`` that share every layer's latent
        but ``layer``'s (an index, bottom first, or a name such as ``"z2"``).

        ``z ~ p(z)`` for ``n`` chains; every sample takes the first chain's latents, except layer
        ``layer``, which varies across the batch (the official ``train_hs.py``): with
        ``conditional=False`` it takes each chain's own ``z_layer``; with ``conditional=True`` it
        is drawn from the prior's conditional ``p(z_layer | other layers)`` by the prior's chain
        (``sampler`` replaces it) run on that layer alone. ``return_latents``: also return the
        latents ``(n, latent_dim)``.
        """
        groups = self.latent_groups
        columns = groups.columns(layer)
        z = self.prior.sample(check_count(n, "sample_layer"), sampler=check_sampler(sampler), generator=generator)
        base = z[:1].expand(n, -1)
        if conditional:
            varied = self._conditional_layer(base, groups.index(layer), sampler, generator)
        else:
            varied = z[:, columns]
        latents = groups.replace(base, layer, varied)
        images = self.decoder.decode(latents)
        return (images, latents) if return_latents else images

    def _conditional_layer(
        self, base: Tensor, index: int, sampler: Sampler | None, generator: torch.Generator | None
    ) -> Tensor:
        """Samples ``(n, size)`` of ``p(z_index | the other layers of base)`` by the prior's chain."""
        noise = torch.randn(base.shape[0], self.latent_groups.sizes[index], device=base.device, generator=generator)
        if self.prior.residual_energy(base[:1]) is None:  # a Gaussian prior: the layers are independent
            return noise * self.prior.reference_precision**-0.5
        start = noise * float(getattr(self.prior, "init_std", 1.0))
        chain = sampler if sampler is not None else self.prior.sampler
        layer = self.latent_groups.columns(index)
        columns = torch.arange(layer.start, layer.stop, device=base.device)
        return chain(
            self.layer_conditional_energy,
            start,
            inputs=(base.detach(), columns),
            reference_precision=self.prior.reference_precision,
            freeze=[self.prior],
            generator=generator,
        )

    def layer_conditional_energy(self, z_layer: Tensor, base: Tensor, columns: Tensor) -> Tensor:
        """``E(base with its columns replaced by z_layer)`` ``(n,)``: the energy of the conditional
        ``p(z_layer | the other layers of base)`` without its Gaussian reference term (the other
        layers' reference terms are constant). ``z_layer`` ``(n, size)``, ``base`` ``(n, latent_dim)``,
        ``columns`` ``(size,)`` the layer's column indices."""
        return self.prior.residual_energy(base.index_copy(1, columns, z_layer))

    progress_bar_names = ("train/loss", "train/kl", "train/prior_loss")

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """The variational bound (loss, NLL, KL, the KL's warm-up weight) and, with a learned prior,
        its chain and MLE step (``train/...``); the evaluation's ``val/nll``, ``test/nll``."""
        prior = PRIOR_MLE_METRIC_NAMES if self.learns_prior else ()
        train = ("train/loss", "train/nll", "train/kl", "train/kl_weight")
        return (*train, *prior, *self.evaluation_metric_names)


def _groups_of(part: Any) -> LatentGroups | None:
    groups = getattr(part, "groups", None)
    return groups if isinstance(groups, LatentGroups) else None
