"""MultiStageNCE: the latent EBM prior learned by adaptive multi-stage density-ratio estimation
(Xiao & Han, NeurIPS 2022).

There is no public code: the training iteration is our reconstruction from the paper's abstract and
Figure 1 caption (arXiv 2209.08739), and every unconfirmed choice is an argument (the
"Multi-stage NCE" guide, ``docs/multistage_nce.md``, lists them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lebm.estimators import nce_loss, reconstruction_loss
from lebm.models.base import batch_observations
from lebm.models.latent_generator import chain_logs
from lebm.models.latent_variable import LatentVariableModel
from lebm.models.stages import ProductOfRatiosPrior
from lebm.recording.audit import audited_iteration
from lebm.samplers import Langevin, Sampler
from lebm.training.choices import check_choice
from lebm.training.optimizers import adam_with_decay
from lebm.training.stepping import planned_iterations, trainer_step_settings

#: The string options and their values.
CHOICES = {
    "earlier_ratios": ("freeze", "finetune"),
    "decoder_training": ("every_stage", "first_stage"),
    "posterior_prior": ("current", "base"),
    "anomaly_score": ("joint", "nll"),
}


@audited_iteration
class MultiStageNCE(LatentVariableModel):
    """Generator ``x = g(z) + eps`` with a product-of-ratios prior
    ``p_K(z) ∝ N(0, sigma_p^2 I) * exp(sum_k h_k(z))`` learned stage by stage by NCE.

    Stage ``k`` (``T_k`` iterations) trains the classifier ``h_k`` to tell the aggregate
    posterior ``q_k`` (positives) from the current prior ``p_k`` (negatives); at its optimum
    ``h_k = log q_k - log p_k``. Then ``p_{k+1} = p_k * exp(h_k)``. One iteration::

        z+ = posterior_langevin(N(0, I) noise, x)   # under p_k (posterior_prior="current")
        z- ~ p_k                                     # k = 0: exact N(0, I); k > 0: prior.sampler
        decoder step:  mean_i -log p(x_i | z+_i)     # q_k moves with the generator ("adaptive")
        ratio step:    E_q[softplus(-h_k(z+))] + E_p[softplus(h_k(z-))]    # nce_loss
        after T_k iterations: fold h_k into the prior; after the last stage: stop training

    Posterior inference: noise + Langevin. Both chains run before either update (LEBM's order)
    and draw from the rank's training stream. Adam(0.5, 0.999) per net (one per stage for the
    ratios), ExponentialLR stepped per epoch.

    Args:
        decoder: the observation model (e.g. ``GaussianDecoder(DCGANGenerator(...), 0.3)``).
        prior: a ``ProductOfRatiosPrior``: the number of stages, the ratio nets and the prior
            chain (``Langevin`` for short-run negatives, ``PersistentChains`` for persistent ones).
        posterior_sampler: the posterior chain; default ``Langevin(20, 0.1)`` (LEBM's).
        posterior_init_std: the posterior chains start from ``N(0, posterior_init_std^2 I)``.
        stage_iterations: ``T_k``: one number for every stage, a list with one per stage, or
            ``None`` to split the run's training iterations (``max_epochs`` x batches per epoch)
            evenly over the stages when training starts. Saved in checkpoints.
        earlier_ratios: ``"freeze"`` (default) keeps ``h_j``, ``j < k``, fixed in stage ``k``;
            ``"finetune"`` also updates them with the stage-``k`` loss, through a logit
            ``h_k + sum_{j<k} (h_j - stopgrad(h_j))`` whose value is ``h_k`` (so the loss is
            unchanged) while the gradient reaches the whole product.
        decoder_training: ``"every_stage"`` (default) or ``"first_stage"`` (the generator is
            frozen after stage 0, so later stages chase a fixed aggregate posterior).
        posterior_prior: the prior of the posterior chains: ``"current"`` (default: ``p_k``) or
            ``"base"`` (``N(0, sigma_p^2 I)`` only).
        anomaly_score: ``"joint"`` (default: ``-log p(x, z)`` under the product prior, as LEBM)
            or ``"nll"`` (the decoder's ``-log p(x|z)`` alone).
        decoder_lr: Adam learning rate of the decoder (LEBM SVHN's 1e-4 by default).
        ratio_lr: Adam learning rate of the ratio nets (LEBM SVHN's 2e-5 by default).
        betas: Adam betas for every optimiser.
        decoder_weight_decay: Adam weight decay of the decoder.
        ratio_weight_decay: Adam weight decay of the ratio nets.
        lr_decay: ExponentialLR gamma, stepped at the end of each epoch for every optimiser.
        decoder_grad_clip: optional max-norm clipping of the decoder's parameter gradients.
        ratio_grad_clip: optional max-norm clipping of the ratio nets' parameter gradients.
        divergence_limits: ``{logged quantity: largest |value|}`` that stops training (a
            non-finite value always stops it); see ``LatentEBM``.
        divergence_after_epoch: the first epoch at which ``divergence_limits`` apply.
    """

    divergence_hint = "Lower model.init_args.decoder_lr / ratio_lr or the chains' step sizes."

    prior: ProductOfRatiosPrior

    def __init__(
        self,
        decoder: nn.Module,
        prior: ProductOfRatiosPrior,
        posterior_sampler: Sampler | None = None,
        posterior_init_std: float = 1.0,
        stage_iterations: int | list[int] | None = None,
        earlier_ratios: Literal["freeze", "finetune"] = "freeze",
        decoder_training: Literal["every_stage", "first_stage"] = "every_stage",
        posterior_prior: Literal["current", "base"] = "current",
        anomaly_score: Literal["joint", "nll"] = "joint",
        decoder_lr: float = 1e-4,
        ratio_lr: float = 2e-5,
        betas: Sequence[float] = (0.5, 0.999),
        decoder_weight_decay: float = 0.0,
        ratio_weight_decay: float = 0.0,
        lr_decay: float = 0.998,
        decoder_grad_clip: float | None = None,
        ratio_grad_clip: float | None = None,
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
        for name, choices in CHOICES.items():
            check_choice(f"model.init_args.{name}", self.hparams[name], choices)
        if not isinstance(self.prior, ProductOfRatiosPrior):
            raise TypeError(f"MultiStageNCE needs a ProductOfRatiosPrior, got {type(self.prior).__name__}")
        # T_k per stage; all zeros until decided (a buffer so that checkpoints keep it, mirrored
        # by a Python list so that reading it never syncs a device)
        self.register_buffer("stage_schedule_state", torch.zeros(self.prior.n_stages, dtype=torch.long))
        self._stage_schedule: list[int] | None = None
        self.stage_schedule = _resolve_schedule(stage_iterations, self.prior.n_stages)

    # ---------------------------------------------------------------- user API
    @property
    def posterior_includes_tilt(self) -> bool:  # type: ignore[override]
        """Posterior chains under the current product prior, or the base (``posterior_prior``)."""
        return self.hparams.posterior_prior == "current"

    def anomaly_score(self, nll: Tensor, z: Tensor, prior_energy: Tensor | None = None) -> Tensor:
        """``-log p(x, z)`` (``anomaly_score="joint"``) or the decoder NLL alone (``"nll"``), ``(B,)``."""
        if self.hparams.anomaly_score == "nll":
            return nll
        return super().anomaly_score(nll, z, prior_energy)

    @property
    def stage(self) -> int:
        """The stage in progress (``n_stages`` once all are completed)."""
        return self.prior.completed_stages

    # --------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        """One Adam for the decoder, then one per stage's ratio net (``ratio_lr``)."""
        nets = [("decoder", self.decoder.parameters())]
        nets += [("ratio", ratio.parameters()) for ratio in self.prior.ratios]
        return adam_with_decay(self.hparams, nets)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.stage_schedule is None:
            self.stage_schedule = self._even_schedule()
        if self.prior.finished:
            rank_zero_warn(f"MultiStageNCE: all {self.prior.n_stages} stages are already completed; nothing to train")

    def check_trainer(self, trainer: Any, stage: str | None = "fit", resuming: bool = False) -> None:
        """Also, before anything is built or written: without ``stage_iterations``, the run must be
        bounded (``max_epochs`` or ``max_steps``) and its iterations, as far as the Trainer's settings
        bound them (an integer ``limit_train_batches``, ``max_steps``), must fill every stage. A resumed
        run keeps the schedule its checkpoint saved, and an evaluation trains none: not checked."""
        super().check_trainer(trainer, stage, resuming)
        if self.stage_schedule is not None or stage != "fit" or resuming:
            return
        limit = trainer.limit_train_batches
        batches = limit if isinstance(limit, int) and not isinstance(limit, bool) else math.inf
        total = planned_iterations(trainer, batches, trainer_step_settings(trainer))
        if total != math.inf:  # inf: an epoch's length is known once the data are set up (on_train_start)
            self._split_over_stages(total)

    def _even_schedule(self) -> list[int]:
        """``T_k`` from an even split of the run's training iterations (updates: one per
        ``accumulate_grad_batches`` batches, up to ``max_steps``) over the stages."""
        total = planned_iterations(self.trainer, None, self.step_settings)
        return self._split_over_stages(None if total == math.inf else total)

    def _split_over_stages(self, total: float | None) -> list[int]:
        """``[T] * n_stages`` with ``T = total // n_stages``; ``ValueError`` when ``total`` is None
        (an unbounded run) or too small for one iteration a stage."""
        if total is None:
            raise ValueError(
                "MultiStageNCE cannot split an unbounded run over its stages: set trainer.max_epochs or "
                "trainer.max_steps, or give model.init_args.stage_iterations (iterations per stage, one number or "
                "one per stage)"
            )
        per_stage = int(total) // self.prior.n_stages
        if per_stage < 1:
            raise ValueError(
                f"MultiStageNCE: {int(total)} training iterations cannot fill {self.prior.n_stages} stages; raise "
                "trainer.max_epochs (or limit_train_batches, max_steps), lower model.init_args.prior.init_args."
                "n_stages, or give model.init_args.stage_iterations"
            )
        return [per_stage] * self.prior.n_stages

    def skip_iteration(self) -> bool:
        """After the last stage: stop training, run nothing."""
        if self.prior.finished:
            self.trainer.should_stop = True
            return True
        return False

    def iteration_key(self) -> tuple[int]:
        """The stage being learned (which classifier steps, which ratios a negative chain reads)."""
        return (self.prior.completed_stages,)

    def after_iteration(self) -> None:
        """Count the update towards the stage's ``T_k`` (a stage counts updates, not accumulated batches)."""
        if self.updates_this_batch:
            self._advance_stage()

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        hp = self.hparams
        stage = self.prior.completed_stages
        x = batch_observations(batch)
        optimizers = self.optimizer_list()
        stream = self.train_generator

        z_pos, posterior_stats = self.infer(x, start="noise", generator=stream, return_diagnostics="ends")
        z_neg, prior_stats = self.prior.sample(x.shape[0], generator=stream, return_diagnostics="ends")
        logs = chain_logs("train/posterior_chain", posterior_stats)
        logs.update(chain_logs("train/prior_chain", prior_stats))
        watch = {"train/posterior_chain_states": z_pos, "train/prior_chain_states": z_neg}

        if stage == 0 or hp.decoder_training == "every_stage":
            decoder_loss = reconstruction_loss(self.decoder, x, z_pos)
            self.step_optimizers(optimizers[0], decoder_loss, clip=hp.decoder_grad_clip)
            logs["train/decoder_nll"] = decoder_loss.detach()

        logistic = nce_loss(self._stage_logit, z_pos, z_neg)
        trained = list(range(stage + 1)) if hp.earlier_ratios == "finetune" else [stage]
        self.step_optimizers([optimizers[1 + j] for j in trained], logistic.loss, clip=hp.ratio_grad_clip)
        logs["train/nce_loss"] = logistic.loss.detach()
        logs["train/logit_pos"] = logistic.logit_pos  # estimates KL(q_k || p_k) near the optimum
        logs["train/logit_neg"] = logistic.logit_neg  # estimates -KL(p_k || q_k)
        logs["train/stage"] = torch.full((), float(stage), device=self.device)  # a tensor: each replay hands it over
        self.finish_training_step(logs, watch, batch_idx)

    def _stage_logit(self, z: Tensor) -> Tensor:
        """The stage-``k`` classifier's logit ``h_k(z)`` ``(B,)``; with ``earlier_ratios="finetune"``
        plus ``h_j - stopgrad(h_j)`` for ``j < k`` (value unchanged, gradient to every ratio)."""
        stage = self.prior.completed_stages
        logit = self.prior.ratios[stage](z)
        if self.hparams.earlier_ratios == "finetune":
            for ratio in self.prior.ratios[:stage]:
                earlier = ratio(z)
                logit = logit + (earlier - earlier.detach())
        return logit

    def _advance_stage(self) -> None:
        """Count the iteration; fold the stage into the prior after ``T_k``; stop after the last."""
        assert self.stage_schedule is not None
        self.prior.record_iteration()
        if self.prior.stage_iteration >= self.stage_schedule[self.prior.completed_stages]:
            self.prior.complete_stage()
            if self.prior.finished:
                self.trainer.should_stop = True

    def schedulers_to_step(self) -> list[Any]:
        """The decoder's and those of the stages started so far: a stage's classifier starts at
        ``ratio_lr`` and decays from then on."""
        started = self.prior.completed_stages + (1 if self.prior.stage_iteration > 0 else 0)
        return super().schedulers_to_step()[: 1 + started]

    def on_fit_end(self) -> None:
        if not self.prior.finished:
            rank_zero_warn(
                f"MultiStageNCE: training ended with {self.stage} of {self.prior.n_stages} stages completed "
                f"({self.prior.stage_iteration} iterations into stage {self.stage}, counting from 0); the prior "
                "is the product of the completed stages. Resume with --ckpt_path last (and a larger "
                "trainer.max_epochs) to finish, or call model.prior.complete_stage() to include the partial stage."
            )

    # ----------------------------------------------------------- checkpointing
    @property
    def stage_schedule(self) -> list[int] | None:
        """``T_k`` for every stage, or ``None`` until training starts with ``stage_iterations=None``."""
        return self._stage_schedule

    @stage_schedule.setter
    def stage_schedule(self, schedule: list[int] | None) -> None:
        self._stage_schedule = None if schedule is None else [int(t) for t in schedule]
        values = self._stage_schedule or [0] * self.prior.n_stages
        self.stage_schedule_state.copy_(torch.tensor(values, dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        saved = state_dict.get(prefix + "stage_schedule_state")
        if saved is not None and self.hparams.stage_iterations is None:  # an explicit schedule wins
            values = [int(t) for t in saved.tolist()]
            self.stage_schedule = values if all(t > 0 for t in values) else None
        else:
            self.stage_schedule = self._stage_schedule  # keep the explicit one in the buffer too

    progress_bar_names = ("train/decoder_nll", "train/nce_loss", "train/stage")

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """Both chains' ends, the decoder's NLL, the stage's NCE loss and logits, the stage index
        (``train/...``); the evaluation's ``val/nll``, ``test/nll``."""
        train = ("train/posterior_chain_*", "train/prior_chain_*", "train/decoder_nll", "train/nce_loss")
        return (*train, "train/logit_pos", "train/logit_neg", "train/stage", *self.evaluation_metric_names)


def _resolve_schedule(stage_iterations: int | list[int] | None, n_stages: int) -> list[int] | None:
    """``T_k`` for each of ``n_stages`` stages from an int, a list or ``None`` (decided later)."""
    if stage_iterations is None:
        return None
    if isinstance(stage_iterations, int):
        schedule = [stage_iterations] * n_stages
    else:
        schedule = [int(t) for t in stage_iterations]
        if len(schedule) != n_stages:
            raise ValueError(
                f"MultiStageNCE stage_iterations has {len(schedule)} entries but the prior has "
                f"{n_stages} stages: give one number per stage, a single number, or null"
            )
    if any(t < 1 for t in schedule):
        raise ValueError(f"MultiStageNCE stage_iterations must be >= 1, got {stage_iterations}")
    return schedule
