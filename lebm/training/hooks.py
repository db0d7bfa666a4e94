"""Every hook a method overrides, in one place, with its default.

A method is a :class:`lebm.models.Method` (``MethodHooks`` + Lightning); a model with a decoder, a
latent prior and posterior inference builds on :class:`lebm.models.latent_generator.LatentGeneratorModel`
(``LatentGeneratorHooks`` on top), and one whose prior and decoder are the model of the data (scored by
``-log p(x, z)``) on :class:`lebm.models.LatentVariableModel` (``LatentVariableHooks`` on top of
that). Besides Lightning's own ``configure_optimizers()`` and lebm's ``training_iteration(batch,
batch_idx)`` (Lightning's ``training_step`` is the base's: it runs the iteration eagerly or recorded,
:mod:`lebm.recording.recorded_iteration`), which every method writes, these are the places a method
changes behaviour; everything else (optimiser steps, the divergence guard, random streams,
checkpoints, evaluation loops, the CLI) comes from the bases. ``docs/extending.md`` ("Writing a
method") shows a method that overrides a few of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lebm.compat import attached_trainer
from lebm.samplers.initializers import ChainInitializer, NetworkStart, NoiseStart, check_start
from lebm.training.choices import check_choice
from lebm.training.inputs import read_latents

#: Where a posterior chain starts: ``N(0, posterior_init_std^2 I)`` noise, or the encoder's sample or mean.
PosteriorStart = Literal["noise", "sample", "mean"]
POSTERIOR_STARTS = {
    "noise": "N(0, posterior_init_std^2 I)",
    "sample": "a reparameterised sample of q(z|x)",
    "mean": "the mean of q(z|x)",
}


def as_list(value: Any) -> list[Any]:
    """``None`` -> ``[]``, a list -> itself, anything else -> ``[value]``."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class MethodHooks:
    """The hooks of every method (mixed into :class:`lebm.models.Method`)."""

    #: What to lower when training diverges: a sentence that the guard's message puts before the way
    #: back (resume from the last checkpoint, or run again when none was written).
    divergence_hint: ClassVar[str] = "Lower the learning rates or the chains' step sizes."

    def check_run(self, datamodule: Any = None) -> None:
        """Check, before training, that the method's parts fit together and fit the data (shapes,
        sizes); raise ``ValueError`` naming both sides and the option to change. The ``lebm`` CLI
        calls it when the run is built, and :meth:`setup` before any loop. Methods extend it."""

    def iteration_key(self) -> Any:
        """What a training iteration reads of the host besides its modules, hyperparameters and
        optimisers (a warm-up switch, a stage, whether an EMA update is due): values (numbers,
        bools, tuples) a recorded iteration is keyed by, computed before the iteration runs
        (:mod:`lebm.recording.recorded_iteration`). Reading ``self.global_step`` or
        ``self.current_epoch`` here declares it: the iteration may read it too (a recording that
        reads one undeclared is refused, and the iterations run eagerly, with one line). The
        method's modules, attributes (public and private), hyperparameters and optimisers are in
        the key already."""
        return ()

    def skip_iteration(self) -> bool:
        """Whether this training batch runs no iteration at all (host work only; default False)."""
        return False

    def after_iteration(self) -> None:
        """Host work after every training iteration, recorded or eager (a per-iteration scheduler
        step, a stage count); device work belongs in ``training_iteration``."""

    def schedulers_to_step(self) -> list[Any]:
        """The learning-rate schedulers stepped at the end of an epoch (default: all of them)."""
        return as_list(self.lr_schedulers())

    @property
    def evaluation_outputs(self) -> tuple[str, ...]:
        """Names of the per-example values ``(B,)`` the validation/test step returns (what the
        metric callbacks can read, e.g. ``score``, ``nll``, ``mse``)."""
        return ()

    def generate(self, n: int, **kwargs: Any) -> Any:
        """``n`` samples from the model."""
        raise NotImplementedError(f"{type(self).__name__} does not implement generate(n)")

    def infer(self, x: Tensor, **kwargs: Any) -> Any:
        """Latent representations of ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer(x)")

    def reconstruct(self, x: Tensor, **kwargs: Any) -> Any:
        """Reconstructions of ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement reconstruct(x)")

    def score(self, x: Tensor, **kwargs: Any) -> Tensor:
        """Anomaly scores ``(B,)``: higher means more anomalous."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score(x)")

    def evaluation_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        """The validation/test step: log ``{stage}/...`` and return the per-example values named
        in :attr:`evaluation_outputs`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluation_step(batch, stage)")

    #: The method's main training values, shown in Lightning's progress bar (the rest go to the
    #: loggers only); the evaluation's ``val/`` values join them after each validation.
    progress_bar_names: ClassVar[tuple[str, ...]] = ()

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """The names the method gives ``self.log`` (what ``ModelCheckpoint``/``EarlyStopping`` can
        ``monitor``), every stage's; ``*`` stands for a family (``train/posterior_chain_*``). None: not
        declared, so a monitored name cannot be checked before the run (:mod:`lebm.training.monitoring`).
        Each method of lebm lists its own; a subclass that logs more extends it."""
        return None


class LatentGeneratorHooks:
    """The hooks of a method with a decoder, a latent prior and posterior inference (mixed into
    :class:`lebm.models.latent_generator.LatentGeneratorModel`)."""

    #: Whether posterior chains include the prior's tilt (residual energy); False: the Gaussian reference only.
    posterior_includes_tilt: bool = True

    @property
    def learns_prior(self) -> bool:
        """Whether the prior has parameters to learn (False for a plain Gaussian prior: LatentEBM's
        alternating back-propagation baseline, the joint hierarchical EBM's VLAE, DualMCMC)."""
        return any(True for _ in self.prior.parameters())

    def posterior_start(
        self, x: Tensor, start: PosteriorStart | ChainInitializer, generator: torch.Generator | None = None
    ) -> Tensor:
        """The chains' initial latents ``(B, latent_dim)``: :meth:`chain_initializer`'s start for
        ``start`` (a name, or a :class:`~lebm.samplers.ChainInitializer` of the user's), given the
        observations ``x`` ``(B, *x_shape)`` and drawing from ``generator``; a tensor (or array)
        ``(B, latent_dim)`` is the start itself, checked as every latent input is
        (:func:`~lebm.training.inputs.read_latents`: type, shape, dtype; finite, outside a Trainer's loop)."""
        if not isinstance(start, (str, ChainInitializer)):
            trainer = attached_trainer(self)
            return read_latents(
                start,
                batch=x.shape[0],
                latent_dim=self.prior.latent_dim,  # type: ignore[attr-defined]
                device=self.device,  # type: ignore[attr-defined]
                dtype=self.input_dtype,  # type: ignore[attr-defined]
                what="infer(x, start=...)",
                name="start",
                check_finite=trainer is None or trainer.state.stage is None,
            ).detach()
        initializer = self.chain_initializer(start)
        owner = f"infer(x, start={type(initializer).__name__}(...))"
        try:
            z0 = initializer.start(x.shape[0], context=x, generator=generator)
        except RuntimeError as error:  # a net made for other observations (shape, dtype): torch's error, deep down
            if not isinstance(start, ChainInitializer) or isinstance(error, torch.OutOfMemoryError):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"{owner}: the initializer could not start from observations {tuple(x.shape)} ({reason}): give an "
                "initializer made for this model's observations and latent size"
            ) from None
        return check_start(z0, x.shape[0], owner, (self.prior.latent_dim,), self.input_dtype)  # type: ignore[attr-defined]

    def chain_initializer(self, start: PosteriorStart | ChainInitializer) -> ChainInitializer:
        """The initializer a posterior chain named ``start`` starts from: ``"noise"``
        (:class:`~lebm.samplers.NoiseStart` of ``posterior_init_std``), ``"sample"``/``"mean"``
        (:class:`~lebm.samplers.NetworkStart` over the encoder ``q(z|x)``); an initializer is
        itself. A method with a learned initializer adds its names (DAMC's ``"amortizer"``)."""
        if isinstance(start, ChainInitializer):
            return start
        check_choice("posterior start", start, self.posterior_starts)
        if start == "noise":
            return NoiseStart(self.prior.latent_dim, self.posterior_init_std)
        if self.encoder is None:
            raise ValueError(f"start={start!r} needs an encoder, but {type(self).__name__} has none")
        return NetworkStart(self.encoder, output=start)

    #: The posterior starts :meth:`chain_initializer` knows by name, and what each means.
    posterior_starts: ClassVar[Mapping[str, str]] = POSTERIOR_STARTS

    @contextlib.contextmanager
    def evaluation_statistics(self) -> Iterator[None]:
        """The block in which the user API and the evaluation step decode and infer: where a
        method's decoder normalises differently outside training (DualMCMC's batch statistics).
        Default: nothing changes."""
        yield

    @property
    def generation_sampler(self) -> Any:
        """The chain :meth:`generate` runs by default (the prior's sampler); None when the prior is
        sampled exactly (a Gaussian prior, a multi-stage prior before its first stage)."""
        return getattr(self.prior, "sampler", None) if self.prior.samples_by_chains else None

    @property
    def generation_chain_pending(self) -> bool:
        """Whether :meth:`generate` runs no chain yet but will once training moves on (a multi-stage
        prior before its first completed stage): a sampler given for a whole run applies from then."""
        return not self.prior.samples_by_chains and getattr(self.prior, "sampler", None) is not None

    #: ``{logged name: evaluation value}``: the values of :meth:`evaluation_values` whose batch
    #: means the evaluation step logs as ``{stage}/<logged name>``.
    logged_evaluation_values: ClassVar[Mapping[str, str]] = {"nll": "nll"}

    @property
    def evaluation_metric_names(self) -> tuple[str, ...]:
        """The names the evaluation step logs: ``val/<name>`` and ``test/<name>`` for each of
        :attr:`logged_evaluation_values` (part of a method's ``logged_metric_names``)."""
        return tuple(f"{stage}/{name}" for stage in ("val", "test") for name in self.logged_evaluation_values)

    def evaluation_values(self, x: Tensor) -> dict[str, Tensor]:
        """The per-example values ``(B,)`` of a held-out batch ``x`` ``(B, *x_shape)`` named in
        :attr:`evaluation_outputs` (run inside :meth:`evaluation_statistics`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluation_values(x)")

    def chain_capture_owner_key(self) -> tuple[bool]:
        """What the chain energies bound to this module (:meth:`posterior_chain_energy`, a
        hierarchical layer's conditional) read of it besides the decoder and the prior, which the
        chains freeze and the capture key fingerprints: whether the posterior includes the prior's
        tilt. (The rest of a LightningModule, its trainer and loggers, is never read by a chain.)"""
        return (bool(self.posterior_includes_tilt),)


class LatentVariableHooks:
    """The hooks of a latent-variable method, whose decoder and prior model the data (mixed into
    :class:`lebm.models.LatentVariableModel`)."""

    def score_reconstruction_term(self, x: Tensor, z: Tensor, nll: Tensor | None = None) -> Tensor:
        """The anomaly score's reconstruction term ``(B,)`` of observations ``x`` at latents ``z``:
        the decoder's ``-log p(x|z)`` (``nll`` when the caller has it already). DAMC's official
        score reads the squared error instead."""
        return self.decoder.nll(x, z) if nll is None else nll

    def anomaly_score(self, nll: Tensor, z: Tensor, prior_energy: Tensor | None = None) -> Tensor:
        """The anomaly score ``(B,)`` of examples with decoder NLL ``nll`` ``(B,)`` at latents ``z``:
        ``-log p(x, z) = nll + U_prior(z)`` (LEBM's ``log p(x, z)`` ranking, sign flipped);
        ``prior_energy`` ``(B,)``: ``U_prior(z)`` when the caller has it already."""
        return nll + (self.prior.energy(z) if prior_energy is None else prior_energy)

    #: Latent samples of ``q(z|x)`` the anomaly score is averaged over (0: the score at ``infer(x)``).
    score_samples: int = 0

    def samples_inference_network(self, samples: int) -> bool:
        """Whether a score over ``samples`` latents draws them from ``q(z|x)`` (``samples > 0`` and
        the model has an inference network) rather than taking them from ``infer(x)``."""
        return samples > 0 and self.encoder is not None
