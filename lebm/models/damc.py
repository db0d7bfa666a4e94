"""DAMC: a latent EBM prior learned by MLE with short-run chains that start from a learned
diffusion sampler, the amortizer, which distils those chains (Yu et al., NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.estimators import mle_loss, reconstruction_loss
from lebm.models.base import batch_observations, ensure_component, optional_component, require_components
from lebm.models.latent_generator import chain_logs
from lebm.models.latent_variable import LatentVariableModel
from lebm.models.priors import Prior
from lebm.nets.diffusion import LatentDiffusionAmortizer
from lebm.recording.audit import audited_iteration
from lebm.samplers import AveragedStart, ChainInitializer, Langevin, NoiseStart, Sampler
from lebm.samplers.base import SamplerOutput
from lebm.samplers.chain import Diagnostics
from lebm.training.choices import check_choice
from lebm.training.hooks import POSTERIOR_STARTS
from lebm.training.inputs import (
    check_count,
    check_model_generation_memory,
    check_sampler,
    refuse_unused_sampler,
    warn_if_not_finite,
)
from lebm.training.optimizers import step_decay_optimizers
from lebm.training.stepping import trainer_step_settings
from lebm.user_warnings import warn_user

#: The string options and what each of their values means.
CHOICES: dict[str, dict[str, str]] = {
    "prior_start": {
        "posterior+noise": "[Q_ema(x); N(0, I)], 2B chains (train_gen_recon.py)",
        "posterior": "Q_ema(x), B chains (train_anomaly_det.py)",
        "unconditional": "Q_ema's unconditional mode, B chains",
        "noise": "N(0, I), B chains (LatentEBM)",
    },
    "unconditional_target": {
        "posterior": "the posterior chains' outputs z+ (the official code)",
        "prior": "the prior chains' outputs z- (a pre-release variant)",
    },
    "unconditional_training": {
        "masked": "each example unconditional with probability mask_probability (train_gen_recon.py)",
        "both": "both branches on every example (train_anomaly_det.py)",
    },
    "generation": {
        "amortizer": "z = Q(None): the amortizer's unconditional samples, no chain (the 'DAMC prior')",
        "amortizer+chain": "Q(None), then the generation chain",
        "ebm": "N(0, I), then the generation chain (the 'EBM prior')",
    },
    "score_reconstruction": {
        "sse": "||g(z) - x||^2, weight 1 (the official anomaly score)",
        "nll": "the decoder's -log p(x|z)",
    },
}

#: The posterior starts DAMC adds to noise and an encoder's.
AMORTIZER_STARTS = {
    "amortizer": "the amortizer's conditional samples Q(x)",
    "amortizer_ema": "its EMA copy's conditional samples Q_ema(x)",
}


#: A probability or rate this close to 0 (or 1) acts as 0 (or 1): fewer than one example a million
#: masked, or an EMA step that float32 rounds away (its smallest step beside 1 is about 6e-8).
NEVER = 1e-6


def refuse_untrained_amortizer(
    amortizer_steps: int, mask_probability: float, unconditional_training: str, generation: str, prior_start: str
) -> None:
    """Refuse, in one line naming the fix, settings under which a branch of the amortizer that the
    run reads never trains: no amortizer step at all (``Q`` starts every chain and makes
    ``generate``'s samples), a ``"masked"`` mask probability of 1 (the conditional branch, which
    starts every posterior chain, never trains), or of 0 while ``generation`` or ``prior_start``
    reads the unconditional branch (else a warning: ``generate(mode="amortizer")`` would read it)."""
    if amortizer_steps == 0:
        raise ValueError(
            "DAMC amortizer_steps=0 never trains the amortizer, whose samples start every chain and make generate(n)'s "
            "samples: set model.init_args.amortizer_steps >= 1 (the paper's 6); for chains started from noise, train "
            "LatentEBM instead"
        )
    if unconditional_training != "masked" or NEVER <= mask_probability <= 1 - NEVER:
        return
    given = f"mask_probability={mask_probability:g}" + ("" if mask_probability in (0, 1) else " (in effect 0 or 1)")
    if mask_probability > 1 - NEVER:
        raise ValueError(
            f"DAMC {given} masks every example, so the amortizer's conditional branch Q(x), which starts "
            "every posterior chain, never trains: set model.init_args.mask_probability below 1 (the paper's 0.2)"
        )
    readers = [f"generation={generation!r}"] if generation != "ebm" else []
    readers += [f"prior_start={prior_start!r}"] if prior_start == "unconditional" else []
    fix = "set model.init_args.mask_probability > 0 (the paper's 0.2), or unconditional_training both"
    if readers:
        raise ValueError(
            f"DAMC {given} never trains the amortizer's unconditional branch Q(None), which "
            f"{' and '.join(readers)} {'read' if len(readers) > 1 else 'reads'}: {fix}"
        )
    warn_user(
        f"DAMC {given} never trains the amortizer's unconditional branch Q(None): generate(n, "
        f"mode='amortizer') would decode untrained samples; {fix}"
    )


@audited_iteration
class DAMC(LatentVariableModel):
    """Diffusion-amortized MCMC: a generator ``x = g(z) + eps`` with a tilted prior
    ``p(z) ∝ exp(-E(z)) N(0, I)`` (LatentEBM's model), whose short-run chains start from a learned
    sampler, the amortizer ``Q``: a conditional latent diffusion model (:class:`~lebm.nets.LatentDiffusionAmortizer`)
    that is fitted to the chains' outputs, so that its samples become the long-run chains' (Yu et
    al. 2023, arXiv 2310.03218; official ``workspace/train_gen_recon.py`` and ``train_anomaly_det.py``).

    One training iteration, in the official order (every sample drawn before any update)::

        z0 = Q_ema(x)                                 # conditional, ancestral sampling (100 steps)
        z+ = posterior_chain(start z0, x)             # 30 Langevin steps, s = 0.1, target p(z|x)
        z- = prior_chain(start [z0; N(0, I)])         # 60 steps, s = 0.4, 2B chains (prior_start)
        repeat amortizer_steps (6):                   # distillation on the detached chain outputs
            Q step:  mean_i ½||eps - eps_hat(a_u z+_i + s_u eps, u, c_i)||^2,  c_i = Enc(x_i) or null
        G step:  mean_i ||g(z+_i) - x_i||^2           # SSE, the 1 / (2 sigma^2) dropped
        E step:  mean E(z+) - mean E(z-)
        every 1000 iterations: lr <- max(0.99 lr, 1e-5) for Q, G and E
        every 10 iterations:   Q_ema <- 0.005 Q + 0.995 Q_ema

    Adam(0.5, 0.999) for G (2e-4) and E (1e-4), AdamW(0.5, 0.999, weight decay 1e-4) for Q (2e-4),
    each net's gradients clipped to max-norm 100 (the recipes' ``*_grad_clip``). Evaluation
    (``infer``, ``reconstruct``, ``score``, validation) starts from the online ``Q(x)`` and refines
    with 10 noise-free posterior steps (``evaluation_sampler``); ``generate`` decodes ``Q``'s
    unconditional samples.

    Args:
        decoder: the observation model, ``GaussianDecoder(net, sigma)`` (sigma 0.1 for images,
            1.0 for MNIST anomaly).
        prior: a ``TiltedGaussianPrior`` whose ``sampler`` is the prior chain (60 steps, s = 0.4).
        amortizer: the learned chain initializer ``Q`` (a ``LatentDiffusionAmortizer``); its EMA
            copy ``Q_ema`` (``amortizer_ema``) starts the training chains.
        posterior_sampler: the training posterior chain; default ``Langevin(30, 0.1)``.
        evaluation_sampler: the posterior chain of evaluation and the user API; default
            ``Langevin(10, 0.1, noise_std=0)`` (noise off, as the official evaluation).
        generation_sampler: the prior chain of ``generate`` in the ``"ebm"`` and ``"amortizer+chain"``
            modes; default: the prior's sampler.
        prior_start: where the prior chains start (see ``CHOICES``): ``"posterior+noise"`` (images),
            ``"posterior"`` (MNIST anomaly), ``"unconditional"`` or ``"noise"``.
        unconditional_target: what the amortizer's unconditional (null-embedding) branch learns:
            the posterior chains' outputs (official) or the prior chains' (pre-release variant).
        unconditional_training: ``"masked"`` (each example's condition is the null embedding with
            probability ``mask_probability``) or ``"both"`` (a conditional and an unconditional
            loss on every example, the MNIST script).
        mask_probability: p_mask of ``"masked"`` (0.2).
        amortizer_steps: optimiser steps of ``Q`` per iteration on the same chain outputs (6).
        ema_rate: the EMA's rate ``rho`` (0.005), in ``(0, 1]``.
        ema_every: iterations between EMA updates (10).
        warmup_iterations: the first iterations run LatentEBM's noise-started chains (0: none, as
            the official code; an option for a random amortizer).
        generation: what ``generate(n)`` decodes by default (``"amortizer"``, ``"amortizer+chain"``, ``"ebm"``).
        score_reconstruction: the anomaly score's reconstruction term, ``"sse"`` (official: weight 1)
            or ``"nll"``; the score adds the prior's energy ``E(z) + ||z||^2 / 2``.
        evaluate_with_ema: evaluate with ``Q_ema`` instead of the online ``Q`` (official: False).
        evaluation_sigma: the observation noise of the evaluation chain's likelihood (``infer``
            with its default sampler: validation, test, ``score``, ``reconstruct``); None: the
            decoder's ``sigma``. The official ``eval_anomaly_det.py`` command re-scores MNIST
            held-out 1 with 0.1 (the others with 1.0, the training value).
        decoder_lr: Adam learning rate of the generator.
        prior_lr: Adam learning rate of the prior's energy net.
        amortizer_lr: AdamW learning rate of the amortizer.
        betas: the betas of the three optimisers.
        decoder_weight_decay: Adam weight decay of the generator.
        prior_weight_decay: Adam weight decay of the energy net.
        amortizer_weight_decay: AdamW weight decay of the amortizer (1e-4; MNIST 0).
        lr_decay: the learning rates' factor every ``lr_decay_every`` iterations (0.99).
        lr_decay_every: iterations between decays (1000).
        lr_floor: no decay takes a rate below it (1e-5).
        decoder_grad_clip: max-norm of the generator's gradients (the official 100 is in the
            recipes; None here, as every method's, so that the Trainer's ``gradient_clip_val``
            applies unless a net has its own).
        prior_grad_clip: max-norm of the energy net's gradients (recipes: 100).
        amortizer_grad_clip: max-norm of the amortizer's gradients (recipes: 100).
        divergence_limits: see :class:`~lebm.models.base.Method`.
        divergence_after_epoch: see :class:`~lebm.models.base.Method`.
    """

    divergence_hint = "Lower model.init_args.decoder_lr / prior_lr / amortizer_lr or the chains' step sizes."
    posterior_starts: ClassVar[Mapping[str, str]] = {**POSTERIOR_STARTS, **AMORTIZER_STARTS}

    def __init__(
        self,
        decoder: nn.Module,
        prior: Prior,
        amortizer: LatentDiffusionAmortizer,
        posterior_sampler: Sampler | None = None,
        evaluation_sampler: Sampler | None = None,
        generation_sampler: Sampler | None = None,
        prior_start: Literal["posterior+noise", "posterior", "unconditional", "noise"] = "posterior+noise",
        unconditional_target: Literal["posterior", "prior"] = "posterior",
        unconditional_training: Literal["masked", "both"] = "masked",
        mask_probability: float = 0.2,
        amortizer_steps: int = 6,
        ema_rate: float = 0.005,
        ema_every: int = 10,
        warmup_iterations: int = 0,
        generation: Literal["amortizer", "amortizer+chain", "ebm"] = "amortizer",
        score_reconstruction: Literal["sse", "nll"] = "sse",
        evaluate_with_ema: bool = False,
        evaluation_sigma: float | None = None,
        decoder_lr: float = 2e-4,
        prior_lr: float = 1e-4,
        amortizer_lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        decoder_weight_decay: float = 0.0,
        prior_weight_decay: float = 0.0,
        amortizer_weight_decay: float = 1e-4,
        lr_decay: float = 0.99,
        lr_decay_every: int = 1000,
        lr_floor: float = 1e-5,
        decoder_grad_clip: float | None = None,
        prior_grad_clip: float | None = None,
        amortizer_grad_clip: float | None = None,
        divergence_limits: Mapping[str, float] | None = None,
        divergence_after_epoch: int = 0,
    ) -> None:
        require_components(decoder=decoder, prior=prior, amortizer=amortizer)
        super().__init__(
            decoder,
            prior,
            encoder=None,
            posterior_sampler=posterior_sampler if posterior_sampler is not None else Langevin(30, 0.1),
            divergence_limits=divergence_limits,
            divergence_after_epoch=divergence_after_epoch,
        )
        self.amortizer = ensure_component(amortizer, "amortizer", LatentDiffusionAmortizer)
        self.amortizer_ema = AveragedStart(self.amortizer)
        self.evaluation_sampler = ensure_component(
            evaluation_sampler if evaluation_sampler is not None else Langevin(10, 0.1, noise_std=0.0),
            "evaluation_sampler",
            Sampler,
        )
        self.generation_chain = optional_component(generation_sampler, "generation_sampler", Sampler)
        self.save_component_hyperparameters(locals())
        for name, choices in CHOICES.items():
            check_choice(f"model.init_args.{name}", self.hparams[name], choices)
        owner = "DAMC"
        arguments.number(owner, "mask_probability", mask_probability, at_least=0, at_most=1)
        arguments.whole(owner, "amortizer_steps", amortizer_steps, at_least=0)
        refuse_untrained_amortizer(amortizer_steps, mask_probability, unconditional_training, generation, prior_start)
        if arguments.number(owner, "ema_rate", ema_rate, at_least=0, at_most=1) < NEVER:
            in_effect = "" if ema_rate == 0 else " (in float32 its step 1 - rate rounds to 1: in effect 0)"
            raise ValueError(
                f"DAMC ema_rate={ema_rate:g}{in_effect} never moves the EMA copy Q_ema from its first weights, and "
                "Q_ema starts every training chain: set model.init_args.ema_rate > 0 (the paper's 0.005)"
            )
        arguments.whole(owner, "ema_every", ema_every, at_least=1)
        arguments.whole(owner, "warmup_iterations", warmup_iterations, at_least=0)
        arguments.whole(owner, "lr_decay_every", lr_decay_every, at_least=1)
        arguments.number(owner, "lr_floor", lr_floor, at_least=0)
        arguments.flag(owner, "evaluate_with_ema", evaluate_with_ema)
        if evaluation_sigma is not None:
            arguments.scale(owner, "evaluation_sigma", evaluation_sigma)
            if not callable(getattr(self.decoder, "observation_noise", None)):
                raise ValueError(
                    f"evaluation_sigma needs a decoder with an observation noise (GaussianDecoder); "
                    f"{type(self.decoder).__name__} has none: leave model.init_args.evaluation_sigma unset"
                )
        if score_reconstruction == "sse" and not callable(getattr(self.decoder, "squared_error", None)):
            raise ValueError(
                f"score_reconstruction='sse' needs a decoder with squared_error(x, z) (GaussianDecoder); "
                f"{type(self.decoder).__name__} has none: use model.init_args.score_reconstruction nll"
            )
        if not self.learns_prior:
            raise ValueError(
                "DAMC learns a latent EBM prior: give model.init_args.prior a TiltedGaussianPrior (with an energy_net)"
            )

    # ------------------------------------------------------------------------------ checks
    def check_run(self, datamodule: Any = None) -> None:
        """Besides the latent sizes of the decoder and the prior: the amortizer's latent size, and
        its encoder reads the data (one embedding per observation)."""
        super().check_run(datamodule)
        size = self.prior.latent_dim
        if self.amortizer.latent_dim != size:
            raise ValueError(
                f"latent sizes disagree: the latent size is {size} ({self.latent_size_option}) but the amortizer "
                f"takes latent_dim={self.amortizer.latent_dim}. Set model.init_args.amortizer.init_args.latent_dim "
                f"to {size}"
            )
        device = next(iter(self.parameters()), torch.empty(0)).device
        with torch.no_grad():
            x = self.decoder.decode(torch.zeros(2, size, device=device))
            try:
                embedding = self.amortizer.condition(x, 2)
            except RuntimeError as error:
                reason = str(error).splitlines()[0]
                raise ValueError(
                    f"the amortizer's encoder ({type(self.amortizer.encoder).__name__}) cannot take the generator's "
                    f"observations {tuple(x.shape[1:])} ({reason}): make model.init_args.amortizer.init_args.encoder's "
                    "channels / image_size / in_shape agree with the data"
                ) from None
        if embedding.shape[0] != 2:
            got = tuple(embedding.shape)
            raise ValueError(f"the amortizer's encoder must return one embedding per observation, got {got}")

    def check_trainer(self, trainer: Any, stage: str | None = "fit", resuming: bool = False) -> None:
        """Besides every method's checks: several amortizer steps per iteration cannot be spread
        over accumulated micro-batches."""
        super().check_trainer(trainer, stage, resuming)
        if trainer_step_settings(trainer).accumulate > 1 and self.hparams.amortizer_steps > 1:
            raise ValueError(
                f"accumulate_grad_batches={trainer.accumulate_grad_batches} with DAMC's "
                f"amortizer_steps={self.hparams.amortizer_steps}: the amortizer steps several times on each batch's "
                "chain outputs, which accumulation cannot spread over micro-batches. Raise data.init_args.batch_size "
                "instead, or set model.init_args.amortizer_steps 1"
            )

    # --------------------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        """In ``training_step``'s order: AdamW for the amortizer, Adam for the generator and the
        prior's energy net, each with a per-iteration step decay (:func:`step_decay_optimizers`)."""
        nets = [
            ("amortizer", self.amortizer.parameters(), "adamw"),
            ("decoder", self.decoder.parameters(), "adam"),
            ("prior", self.prior.parameters(), "adam"),
        ]
        return step_decay_optimizers(self.hparams, nets)

    def schedulers_to_step(self) -> list[Any]:
        """None at the end of an epoch: DAMC decays its rates per iteration (:meth:`training_step`)."""
        return []

    @property
    def chain_starter(self) -> ChainInitializer:
        """What the training chains start from: the amortizer's EMA copy ``Q_ema``."""
        return self.amortizer_ema

    @property
    def evaluation_amortizer(self) -> ChainInitializer:
        """What evaluation and the user API start from: ``Q`` (``Q_ema`` with ``evaluate_with_ema``)."""
        return self.amortizer_ema if self.hparams.evaluate_with_ema else self.amortizer

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        amortizer_opt, decoder_opt, prior_opt = self.optimizer_list()
        stream = self.train_generator
        hp = self.hparams
        n = x.shape[0]
        warming_up = self.global_step < hp.warmup_iterations

        conditional = torch.rand(n, generator=stream, device=x.device) >= hp.mask_probability
        z0 = self.posterior_start(x, "noise" if warming_up else "amortizer_ema", stream)
        z_pos, posterior_stats = self.infer(
            x, start=z0, sampler=self.posterior_sampler, generator=stream, return_diagnostics="ends"
        )
        z_neg, prior_stats = self.prior.sample(
            self.prior_chain_count(n),
            generator=stream,
            return_diagnostics="ends",
            start=None if warming_up else self.prior_chain_start(z0, stream),
        )
        logs = {**chain_logs("train/posterior_chain", posterior_stats), **chain_logs("train/prior_chain", prior_stats)}
        logs.update(self.start_and_end_errors(x, z0, z_pos))

        target = z_pos if hp.unconditional_target == "posterior" else z_neg[:n]
        for _ in range(hp.amortizer_steps):
            amortizer_loss = self.distillation_loss(x, z_pos, target, conditional, stream)
            self.step_optimizers(amortizer_opt, amortizer_loss, clip=hp.amortizer_grad_clip)
        if hp.amortizer_steps:
            logs["train/amortizer_loss"] = amortizer_loss.detach()

        decoder_loss = self.generator_loss(x, z_pos)
        self.step_optimizers(decoder_opt, decoder_loss, clip=hp.decoder_grad_clip)
        contrast = mle_loss(self.prior.residual_energy, z_pos, z_neg)
        self.step_optimizers(prior_opt, contrast.loss, clip=hp.prior_grad_clip)

        if self.updates_this_batch and self.global_step % hp.ema_every == 0:  # counted above: this update's number
            self.amortizer_ema.update(self.amortizer, hp.ema_rate)
        logs.update(
            {
                "train/decoder_loss": decoder_loss.detach(),
                "train/prior_loss": contrast.loss.detach(),
                "train/energy_pos": contrast.energy_pos,
                "train/energy_neg": contrast.energy_neg,
            }
        )
        watch = {"train/posterior_chain_states": z_pos, "train/prior_chain_states": z_neg}
        self.finish_training_step(logs, watch, batch_idx)

    @torch.no_grad()
    def start_and_end_errors(self, x: Tensor, z0: Tensor, z_pos: Tensor) -> dict[str, Tensor]:
        """The per-value mean squared error of ``g(z)`` against ``x`` at the posterior chains' start
        (``train/amortizer_mse``: ``Q_ema``'s samples) and end (``train/posterior_mse``), before
        any update; the official README's sign of non-convergence is the start's error falling well
        below the end's. None for a decoder without ``squared_error`` (text)."""
        if not callable(getattr(self.decoder, "squared_error", None)):
            return {}
        per_value = x[0].numel()
        return {
            "train/amortizer_mse": self.decoder.squared_error(x, z0).mean() / per_value,
            "train/posterior_mse": self.decoder.squared_error(x, z_pos).mean() / per_value,
        }

    def prior_chain_count(self, n: int) -> int:
        """The number of prior chains for a batch of ``n``: ``2n`` for ``"posterior+noise"``, else ``n``."""
        return 2 * n if self.hparams.prior_start == "posterior+noise" else n

    def prior_chain_start(self, z0: Tensor, stream: torch.Generator) -> Tensor | None:
        """The prior chains' start ``(prior_chain_count(n), latent_dim)`` given the posterior chains'
        start ``z0`` ``(n, latent_dim)`` (None: the prior's own noise)."""
        choice = self.hparams.prior_start
        if choice == "noise":
            return None
        if choice == "unconditional":
            return self.chain_starter.start(z0.shape[0], generator=stream, device=z0.device)
        if choice == "posterior":
            return z0
        noise = NoiseStart(self.prior.latent_dim, self.prior.init_std).start(
            z0.shape[0], generator=stream, device=z0.device
        )
        return torch.cat([z0, noise])

    def distillation_loss(
        self, x: Tensor, z_pos: Tensor, target: Tensor, conditional: Tensor, stream: torch.Generator
    ) -> Tensor:
        """The amortizer's loss on the detached chain outputs (official ``train_gen_recon.py``): ``"masked"``: one
        diffusion loss, example ``i`` conditioned on ``Enc(x_i)`` where ``conditional[i]``, else on
        the null embedding and fitted to ``target[i]``; ``"both"``: the conditional loss on ``z_pos``
        plus the unconditional one on ``target``."""
        if self.hparams.unconditional_training == "both":
            return self.amortizer.loss(x, z_pos, generator=stream) + self.amortizer.loss(None, target, generator=stream)
        fitted = torch.where(conditional[:, None], z_pos, target)
        return self.amortizer.loss(x, fitted, conditional, generator=stream)

    def generator_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """``mean_i ||g(z_i) - x_i||^2`` (the official SSE; a decoder without ``squared_error``: its NLL)."""
        squared_error = getattr(self.decoder, "squared_error", None)
        if callable(squared_error):
            return squared_error(x, z).mean()
        return reconstruction_loss(self.decoder, x, z)

    def iteration_key(self) -> tuple[bool, bool]:
        """What an iteration reads of the host: whether it is a warm-up iteration (noise-started
        chains), and whether its update is an EMA turn (every ``ema_every``-th update, counting
        this one)."""
        step = self.global_step
        return step < self.hparams.warmup_iterations, (step + 1) % self.hparams.ema_every == 0

    def after_iteration(self) -> None:
        """After every update: the per-iteration learning-rate decay (the EMA runs in the
        iteration itself, every ``ema_every`` updates)."""
        if self.updates_this_batch:
            for scheduler in self.step_schedulers():
                scheduler.step()

    def step_schedulers(self) -> list[Any]:
        """The per-iteration learning-rate schedulers (one per optimiser)."""
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return list(schedulers) if isinstance(schedulers, (list, tuple)) else [schedulers]

    # ---------------------------------------------------------------------- chain starts
    def chain_initializer(self, start: Any) -> ChainInitializer:
        """Besides noise: ``"amortizer"`` (``Q``) and ``"amortizer_ema"`` (``Q_ema``), conditional on the data."""
        if isinstance(start, str) and start in AMORTIZER_STARTS:
            return self.amortizer if start == "amortizer" else self.amortizer_ema
        return super().chain_initializer(start)

    @property
    def default_posterior_start(self) -> str:
        """``infer(x)`` starts from the online amortizer (``Q_ema`` with ``evaluate_with_ema``)."""
        return "amortizer_ema" if self.hparams.evaluate_with_ema else "amortizer"

    # ---------------------------------------------------------------------------- user API
    def infer(
        self,
        x: Any,
        *,
        start: Any = None,
        refine: bool = True,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
    ) -> SamplerOutput:
        """Posterior latents ``(B, latent_dim)``: the amortizer's conditional samples refined by
        ``sampler`` (default :attr:`evaluation_sampler`: 10 noise-free steps, its likelihood at
        ``evaluation_sigma`` when set); the arguments are
        :meth:`~lebm.models.latent_generator.LatentGeneratorModel.infer`'s."""
        chain = check_sampler(sampler) if sampler is not None else self.evaluation_sampler
        with nullcontext() if sampler is not None else self.evaluation_likelihood():
            return super().infer(
                x, start=start, refine=refine, sampler=chain, generator=generator, return_diagnostics=return_diagnostics
            )

    def evaluation_likelihood(self) -> AbstractContextManager:
        """The decoder's likelihood as the evaluation chain reads it: at ``evaluation_sigma`` when set."""
        sigma = self.hparams.evaluation_sigma
        return nullcontext() if sigma is None else self.decoder.observation_noise(sigma)

    @property
    def generation_sampler(self) -> Sampler | None:
        """The prior chain of ``generate`` (None in the default ``"amortizer"`` mode, which runs none)."""
        if self.hparams.generation == "amortizer":
            return None
        return self.generation_chain if self.generation_chain is not None else self.prior.sampler

    @property
    def generation_source(self) -> str:
        """What ``generate(n)`` draws without a chain, as a sample grid's caption says it."""
        return f"none, the amortizer's unconditional samples ({self.amortizer.sampling_steps} ancestral steps)"

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        mode: str | None = None,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        raw: bool = False,
    ) -> Any:
        """``n`` samples ``g(z)`` ``(n, *x_shape)``; ``mode`` (default ``generation``):
        ``"amortizer"``: ``z`` the amortizer's unconditional samples (no chain, the official
        "DAMC prior" FID); ``"amortizer+chain"``: refined by the generation chain; ``"ebm"``: the
        generation chain from noise (the "EBM prior" FID). ``sampler`` replaces the chain (refused in
        the ``"amortizer"`` mode, which runs none)."""
        mode = check_choice("generate(mode=...)", mode or self.hparams.generation, CHOICES["generation"])
        if mode == "amortizer":
            refuse_unused_sampler(
                sampler,
                "generate(n, sampler=...)",
                "mode 'amortizer' decodes the amortizer's unconditional samples and runs no chain",
                "pass mode='amortizer+chain' (those samples refined by the sampler) or mode='ebm' (the sampler from "
                "noise), or leave sampler out",
            )
        chain = check_sampler(sampler) or self.generation_chain or self.prior.sampler
        with self.evaluation_statistics():
            n = check_count(n)
            check_model_generation_memory(self, n)
            if mode == "ebm":
                z = self.prior.sample(n, sampler=chain, generator=generator)
            else:
                z = self.evaluation_amortizer.start(n, generator=generator, device=self.device)
                if mode == "amortizer+chain":
                    z = self.prior.sample(n, sampler=chain, generator=generator, start=z)
            samples = self.decoder.decode(z)
        return self.presented(warn_if_not_finite(samples, "generate(n)"), raw)

    def squared_error_of(self, x: Tensor, z: Tensor, reconstruction: Tensor, nll: Tensor | None) -> Tensor:
        """``||x - g(z)||^2`` ``(B,)``: with ``score_reconstruction="sse"`` the score's reconstruction
        term already is it."""
        if self.hparams.score_reconstruction == "sse":
            return reconstruction
        return super().squared_error_of(x, z, reconstruction, nll)

    def score_reconstruction_term(self, x: Tensor, z: Tensor, nll: Tensor | None = None) -> Tensor:
        """The anomaly score's reconstruction term ``(B,)``: with ``score_reconstruction="sse"`` (the
        official ``eval_anomaly_det.py``) ``||g(z) - x||^2``, so that the score is
        ``||g(z) - x||^2 + E(z) + ||z||^2 / 2``; with ``"nll"`` every latent-variable method's
        ``-log p(x|z)``."""
        if self.hparams.score_reconstruction == "sse":
            return self.decoder.squared_error(x, z)
        return super().score_reconstruction_term(x, z, nll)

    # --------------------------------------------------------------------------- evaluation
    progress_bar_names = ("train/decoder_loss", "train/prior_loss", "train/amortizer_loss")

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """Both chains' ends, the three losses, the energies, the reconstruction errors of ``Q_ema``'s
        start and of the posterior chain's end (``train/...``); the evaluation's ``val/nll``, ``test/nll``."""
        train = (
            "train/posterior_chain_*",
            "train/prior_chain_*",
            "train/amortizer_loss",
            "train/decoder_loss",
            "train/prior_loss",
            "train/energy_pos",
            "train/energy_neg",
            "train/amortizer_mse",
            "train/posterior_mse",
        )
        return (*train, *self.evaluation_metric_names)
