"""The shared base of the methods with a latent generator: a decoder ``p(x|z)``, a latent prior
``p(z)`` and posterior inference (``LatentVariableModel`` and its methods, ``DualMCMC``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.compat import attached_trainer
from lebm.models.base import Method, batch_observations, ensure_component, optional_component, require_components
from lebm.models.priors import Prior
from lebm.nets.decoders import Decoder
from lebm.nets.encoders import InferenceNetwork
from lebm.randomness import rng_devices
from lebm.samplers import Sampler
from lebm.samplers.base import SamplerOutput
from lebm.samplers.chain import Diagnostics, ModuleMode, modules_in_mode
from lebm.samplers.initializers import ChainInitializer
from lebm.training.hooks import LatentGeneratorHooks, PosteriorStart
from lebm.training.inputs import (
    api_call,
    check_count,
    check_model_generation_memory,
    check_sampler,
    read_latents,
    read_observations,
    warn_if_not_finite,
)
from lebm.training.prediction import with_text


class LatentGeneratorModel(LatentGeneratorHooks, Method):
    """A generator ``p(x|z)`` (``self.decoder``) with a latent prior ``p(z)`` (``self.prior``), an
    optional inference network ``q(z|x)`` (``self.encoder``) and posterior inference.

    **Posterior inference is a start plus an optional sampler**::

        z0 = N(0, posterior_init_std^2 I) noise                   start="noise"
           | q(z|x) reparameterised sample, or its mean           start="sample" | "mean" (needs an encoder)
           | a learned initializer's start                        start="amortizer" (DAMC) | a ChainInitializer
        z  = posterior_sampler(U(z) = -log p(x, z), z0)           when a posterior sampler is set

    What a method on this base gets besides :class:`~lebm.models.base.Method`: the run checks
    (latent sizes across the parts, the data's kind and shape against the decoder's), the
    decoder's per-batch training noise, the user-input contract (:meth:`observations`, which every
    method's ``infer``, ``reconstruct``, ``score`` and prediction go through), ``infer(x)``
    ``(B, latent_dim)``, ``reconstruct(x)`` ``(B, *x_shape)`` = ``decode(infer(x))``, the
    evaluation step, which logs the batch means of :attr:`logged_evaluation_values` and returns
    :meth:`evaluation_values`, and prediction (:meth:`predict_observations`: one inference per
    batch gives its latents, reconstructions and scores; ``docs/predict.md``). ``generate``,
    ``score`` and what the evaluation returns are the method's:
    :class:`~lebm.models.LatentVariableModel` scores ``-log p(x, z)``, ``DualMCMC`` its data-space
    energy. Inference and decoding in the user API, the evaluation step and prediction run inside
    :meth:`evaluation_statistics`.

    Args:
        decoder: the observation model (owns the likelihood: ``nll``, ``decode``, ``metrics``).
        prior: the latent prior.
        encoder: an inference network ``q(z|x)`` (None: chains start from noise).
        posterior_sampler: the posterior chain (None: the encoder's latents are the posterior).
        posterior_init_std: standard deviation of the noise that posterior chains start from.
        divergence_limits: see :class:`~lebm.models.base.Method`.
        divergence_after_epoch: see :class:`~lebm.models.base.Method`.
    """

    decoder: Decoder
    prior: Prior
    encoder: InferenceNetwork | None
    posterior_sampler: Sampler | None
    #: train/eval mode of the decoder and prior during the posterior chain (None: unchanged).
    posterior_chain_mode: ModuleMode | None = None
    #: the option that sets the latent size (named when a net's latent size disagrees).
    latent_size_option: str = "model.init_args.prior.init_args.latent_dim"

    def __init__(
        self,
        decoder: nn.Module,
        prior: Prior,
        encoder: InferenceNetwork | None = None,
        posterior_sampler: Sampler | None = None,
        posterior_init_std: float = 1.0,
        divergence_limits: Mapping[str, float] | None = None,
        divergence_after_epoch: int = 0,
    ) -> None:
        super().__init__(divergence_limits, divergence_after_epoch)
        require_components(decoder=decoder, prior=prior)
        self.decoder = ensure_component(decoder, "decoder")
        if not isinstance(self.decoder, Decoder):
            raise TypeError(
                f"`decoder` must be a lebm.nets.Decoder, got {type(self.decoder).__name__}: subclass "
                "lebm.nets.Decoder (nll and decode are required, its other members have defaults; "
                "docs/extending.md)"
            )
        self.prior = ensure_component(prior, "prior", Prior)
        self.encoder = optional_component(encoder, "encoder", InferenceNetwork)
        self.posterior_sampler = optional_component(posterior_sampler, "posterior_sampler", Sampler)
        if self.encoder is None and self.posterior_sampler is None:
            raise ValueError(
                f"{type(self).__name__} needs posterior inference: an encoder, a posterior_sampler, or both"
            )
        if posterior_init_std <= 0:
            raise ValueError(f"posterior_init_std must be > 0, got {posterior_init_std}")
        self.posterior_init_std = float(posterior_init_std)

    # ------------------------------------------------------------------------------ checks
    def check_run(self, datamodule: Any = None) -> None:
        """The latent size agrees across prior, generator, energy net and encoder, and the decoder
        makes observations of the data's shape (``datamodule.sample_shape`` when known) and kind
        (sentences for a decoder that reads token ids, arrays for the others)."""
        if datamodule is not None:
            sentences = hasattr(datamodule, "vocabulary")  # TextDataModule, or a user's text datamodule
            arrays = not sentences and getattr(datamodule, "sample_shape", None) is not None
            if (sentences or arrays) and sentences != bool(self.decoder.reads_tokens):
                data = "sentences (token ids)" if sentences else "arrays (images or vectors)"
                wanted = "token ids" if self.decoder.reads_tokens else "arrays (images or vectors)"
                fix = "a text recipe, e.g. recipes/latent_ebm/text_quickstart.yaml" if sentences else "an image recipe"
                raise ValueError(
                    f"the data ({type(datamodule).__name__}) are {data}, but the decoder "
                    f"({type(self.decoder).__name__}) models {wanted}: use {fix}, or a datamodule of the decoder's kind"
                )
        size = self.prior.latent_dim
        prior_option = self.latent_size_option
        parts = [
            (
                "the generator",
                self.decoder.generator_net(),
                "latent_dim",
                "model.init_args.decoder.init_args.net.init_args.latent_dim",
            )
        ]
        for name, net in latent_nets(self.prior):
            parts.append((name, net, "in_dim", f"model.init_args.prior.init_args.{name.split()[-1]}.init_args.in_dim"))
        if self.encoder is not None:
            parts.append(("the encoder", self.encoder, "latent_dim", "model.init_args.encoder.init_args.latent_dim"))
        for name, net, attribute, option in parts:
            if option == prior_option:  # the net whose option defines the latent size agrees with itself
                continue
            declared = getattr(net, attribute, None)
            if isinstance(declared, int) and declared != size:
                raise ValueError(
                    f"latent sizes disagree: the latent size is {size} ({prior_option}) but {name} "
                    f"({type(net).__name__}) takes {attribute}={declared}. Set {option} to {size} "
                    f"(or {prior_option} to {declared})"
                )
        if datamodule is not None:  # e.g. a text decoder takes the data's vocabulary
            self.decoder.bind_data(datamodule)
        device = next(iter(self.parameters()), torch.empty(0)).device
        z = torch.zeros(2, size, device=device, dtype=self.input_dtype)  # float64 nets after a 64-true fit
        with torch.no_grad(), modules_in_mode([self], "eval"):  # probes leave BatchNorm/spectral-norm state alone
            decoded = self._probe("the generator", lambda: self.decoder.decode(z), size)
            self._probe("the prior's energy net", lambda: self.prior.energy(z), size)
        shape = getattr(datamodule, "sample_shape", None)
        if shape is not None and tuple(decoded.shape[1:]) != tuple(shape):
            raise ValueError(
                f"the data are {tuple(shape)} per example but the decoder's generator "
                f"({type(self.decoder.generator_net()).__name__}) makes {tuple(decoded.shape[1:])}: make "
                "them agree (data.init_args.channels / image_size, or the generator's channels / image_size / "
                "out_shape under model.init_args.decoder.init_args.net.init_args)"
            )

    @staticmethod
    def _probe(name: str, work: Callable[[], Tensor], size: int) -> Tensor:
        try:
            return work()
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise ValueError(
                f"{name} cannot take latents of the prior's size {size} ({reason}): its input size must equal "
                "model.init_args.prior.init_args.latent_dim"
            ) from None

    # ------------------------------------------------------------------- posterior inference
    @property
    def default_posterior_start(self) -> str:
        """Where :meth:`infer` starts its chain unless told: the encoder's mean when there is an
        encoder, else noise (DAMC: its amortizer)."""
        return "noise" if self.encoder is None else "mean"

    def posterior_energy(self, x: Tensor, *, with_prior_tilt: bool = True) -> Callable[[Tensor], Tensor]:
        """The posterior's energy ``z -> -log p(x, z)`` ``(B,)`` *without* the prior's Gaussian
        reference term, which chains add analytically (``reference_precision``).
        ``with_prior_tilt=False`` leaves out the prior's residual energy too (posterior under the
        Gaussian reference alone)."""
        if x.is_inference():  # a batch from an inference-mode loop: chains need a normal tensor
            with torch.inference_mode(False):
                x = x.clone()
        tilt = with_prior_tilt and self.posterior_includes_tilt
        return lambda z: self.joint_chain_energy(z, x, tilt)

    def posterior_chain_energy(self, z: Tensor, x: Tensor) -> Tensor:
        """``-log p(x, z)`` ``(B,)`` without the reference term, as the posterior chains call it:
        ``energy_fn(z, x)``, one function for every batch, the batch passed as the chain's input
        (so that a captured chain replays on each new batch)."""
        return self.joint_chain_energy(z, x, self.posterior_includes_tilt)

    def joint_chain_energy(self, z: Tensor, x: Tensor, with_prior_tilt: bool) -> Tensor:
        """``nll(x|z)`` plus, when ``with_prior_tilt``, the prior's residual energy ``(B,)``."""
        nll = self.decoder.nll(x, z)
        residual = self.prior.residual_energy(z) if with_prior_tilt else None
        return nll if residual is None else nll + residual

    def infer(
        self,
        x: Any,
        *,
        start: PosteriorStart | str | ChainInitializer | None = None,
        refine: bool = True,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
    ) -> SamplerOutput:
        """Posterior latents ``(B, latent_dim)`` (``(z, diagnostics)`` with ``return_diagnostics``),
        inside :meth:`evaluation_statistics`.

        Args:
            x: observations ``(B, *x_shape)`` (or what the decoder's ``prepare`` takes: sentences,
                a bare string being one), checked by :meth:`observations`.
            start: where the chain starts: ``"noise"``, ``"sample"`` or ``"mean"`` (a method
                with a learned initializer adds its names: :attr:`posterior_starts`), or a
                :class:`~lebm.samplers.ChainInitializer` (:meth:`chain_initializer`), or the start
                itself, a tensor ``(B, latent_dim)``; default: :attr:`default_posterior_start`.
            refine: run the posterior chain from the start (False: the start is the answer).
            sampler: a chain to use instead of ``posterior_sampler``.
            generator: random stream (None: torch's global RNG).
        """
        with self.user_input(x, "infer(x)") as x, self.evaluation_statistics():
            if start is None:
                start = self.default_posterior_start
            z0 = self.posterior_start(x, start, generator)
            chain = check_sampler(sampler) if sampler is not None else self.posterior_sampler
            if not arguments.flag("infer", "refine", refine) or chain is None:  # "no" would read as true
                return (z0, {}) if return_diagnostics else z0
            return chain(
                self.posterior_chain_energy,
                z0,
                inputs=(x,),
                reference_precision=self.prior.reference_precision,
                freeze=[self.decoder, self.prior],
                module_mode=self.posterior_chain_mode,
                generator=generator,
                return_diagnostics=return_diagnostics,
            )

    # ------------------------------------------------------------------- per-batch noise
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Hold the decoder's training noise for this batch (its ``hold_noise``, e.g. the text
        decoder's word dropout): drawn once from the per-rank training stream, so the
        posterior chain's energy ``-log p(x, z)`` stays one function through all its steps and
        the decoder's update, and the draws differ across ranks and resume exactly."""
        super().on_train_batch_start(batch, batch_idx)
        self.decoder.hold_noise(batch_observations(batch), generator=self.train_generator)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.decoder.release_noise()
        super().on_train_batch_end(outputs, batch, batch_idx)

    # ---------------------------------------------------------------------------- user API
    def joint_energy(self, x: Any, z: Any) -> Tensor:
        """``-log p(x, z) + const`` ``(B,)``: ``nll(x|z) + U_prior(z)``, for observations ``x``
        ``(B, *x_shape)`` (checked as every method's input is, :meth:`observations`) and their
        latents ``z`` ``(B, latent_dim)`` (:func:`~lebm.training.inputs.read_latents`)."""
        with self.user_input(x, "joint_energy(x, z)") as x:
            z = read_latents(
                z,
                batch=x.shape[0],
                latent_dim=self.prior.latent_dim,
                device=self.device,
                dtype=self.input_dtype,
                what="joint_energy(x, z)",
            )
            return self.decoder.nll(x, z) + self.prior.energy(z)

    def observations(self, data: Any, what: str | None = None) -> Tensor:
        """User input as the tensor ``(B, *x_shape)`` the decoder reads, checked: the one input
        contract of every method and of prediction (:func:`lebm.training.inputs.read_observations`:
        type, at least one example, the per-example shape against :meth:`observation_shape`, the
        decoder's ``check_observations`` (values, range, token ids), the model's dtype, and a
        warning for empty or unknown sentences). ``what`` (``"score(x)"``) starts the messages.
        Raises ``TypeError``/``ValueError`` in one line naming the fix."""
        return read_observations(
            self.decoder,
            data,
            device=self.device,
            dtype=self.input_dtype,
            shape=self.observation_shape(),
            what=what,
        )

    @contextlib.contextmanager
    def user_input(self, data: Any, what: str) -> Iterator[Tensor]:
        """The block of a user-API call on observations ``data`` (``what``: ``"infer(x)"``), which
        it yields as the tensor ``(B, *x_shape)`` the decoder reads: checked by :meth:`observations`
        when the call is the outermost on this model (:func:`lebm.training.inputs.api_call`) and runs
        outside a training or evaluation loop; else, a batch of a loop or the input of an outer
        call that checked it, only prepared (the decoder's ``prepare``) and, when it holds numbers,
        cast to :attr:`input_dtype` (a callback's batch read from its data in float32, during a
        ``64-true`` run)."""
        with api_call(self) as outermost:
            trainer = attached_trainer(self)
            in_a_loop = trainer is not None and trainer.state.stage is not None
            if outermost and not in_a_loop:
                yield self.observations(data, what)
            else:
                prepared = self.decoder.prepare(data, self.device)
                if isinstance(prepared, Tensor) and prepared.is_floating_point():
                    prepared = prepared.to(self.input_dtype)
                yield prepared

    @property
    def input_dtype(self) -> torch.dtype:
        """The floating dtype of the decoder's parameters (the model's default's when it has none):
        what observations of numbers are cast to."""
        floats = (p.dtype for p in self.decoder.parameters() if p.is_floating_point())
        return next(floats, torch.get_default_dtype())

    def observation_shape(self) -> tuple[int, ...] | None:
        """The per-example shape ``x_shape`` of the observations the model reads, e.g. ``(1, 8, 8)``:
        the decoder's ``observation_shape`` for latents ``(2, latent_dim)`` of the prior's size (by
        default the shape its generator makes), probed once as the user API decodes (without
        gradients, in eval mode, inside :meth:`evaluation_statistics`; no running statistics move,
        torch's RNG untouched) and kept while the decoder, its generator and the latent size stay;
        None: any shape (sentences)."""
        key = (id(self.decoder), id(self.decoder.generator_net()), self.prior.latent_dim)
        cached = self.__dict__.get("_observation_shape")
        if cached is not None and cached[0] == key:
            return cached[1]
        z = torch.zeros(2, self.prior.latent_dim, device=self.device, dtype=self.input_dtype)
        with (
            torch.no_grad(),
            torch.random.fork_rng(devices=rng_devices(self.device)),
            modules_in_mode([self.decoder], "eval"),
            self.evaluation_statistics(),
        ):
            try:
                shape = self.decoder.observation_shape(z)
            except (RuntimeError, ValueError, TypeError):  # a decoder check_run would refuse: no shape to hold to
                shape = None
        self.__dict__["_observation_shape"] = (key, shape)
        return shape

    def presented(self, x: Tensor, raw: bool) -> Any:
        """Decoded observations in the user's form: the decoder's ``present`` (strings for text;
        by default the tensor itself) unless ``raw``."""
        return x if raw else self.decoder.present(x)

    def decoded_prior_samples(
        self, n: int, *, sampler: Sampler | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``g(z)`` ``(n, *x_shape)`` for ``z ~ prior`` ``(n, latent_dim)`` (drawn by ``sampler``
        instead of the prior's own, when given), inside :meth:`evaluation_statistics`; no gradients."""
        with torch.no_grad(), self.evaluation_statistics():
            n = check_count(n)
            check_model_generation_memory(self, n)
            z = self.prior.sample(n, sampler=check_sampler(sampler), generator=generator)
            return self.decoder.decode(z)

    def reconstruct(self, x: Any, *, raw: bool = False, **infer_kwargs: Any) -> Any:
        """``g(infer(x))`` ``(B, *x_shape)``, decoded inside :meth:`evaluation_statistics`; text in,
        text out (``B`` strings; a bare string is one sentence; ``raw=True``: token ids ``(B, T)``);
        ``infer_kwargs`` go to :meth:`infer`."""
        with self.user_input(x, "reconstruct(x)") as x:
            z = self.infer(x, **infer_kwargs)
            with torch.no_grad(), self.evaluation_statistics():
                return self.presented(warn_if_not_finite(self.decoder.decode(z), "reconstruct(x)"), raw)

    # --------------------------------------------------------------------------- evaluation
    def evaluation_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        """Inside :meth:`evaluation_statistics`, the method's :meth:`evaluation_values` of a
        held-out batch (its chains draw from the evaluation stream); logs ``{stage}/<name>``, the
        batch mean of each value :attr:`logged_evaluation_values` names, and returns the values ``(B,)``."""
        x = batch_observations(batch)
        with self.evaluation_statistics():
            values = self.evaluation_values(x)
        for name, value in self.logged_evaluation_values.items():
            shown = stage == "val"  # the latest validation reading beside the training losses
            self.log(f"{stage}/{name}", values[value].mean(), sync_dist=True, batch_size=len(x), prog_bar=shown)
        return values

    # --------------------------------------------------------------------------- prediction
    def prediction_input(self, data: Any) -> Tensor:
        """Observations ``(B, *x_shape)`` as the decoder reads them, checked by the user API's
        contract (:meth:`observations`), also inside a predict loop (``ValueError``/``TypeError``
        naming the fix)."""
        return self.observations(data)

    def score_at(self, x: Tensor, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The anomaly scores ``(B,)`` of observations ``x`` whose posterior latents ``z``
        ``(B, latent_dim)`` are known: ``score(x)`` without inferring again. Default: ``score(x)``
        (a method whose score does not read latents, as DualMCMC's energy)."""
        return self.score(x, generator=generator)

    def predict_observations(self, x: Tensor, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """One posterior inference (``infer``, chains drawing from ``generator``) and what follows
        from it: ``{"inputs": x (B, *x_shape), "latents": z (B, latent_dim), "reconstructions":
        decode(z) (B, *x_shape), "scores": score_at(x, z) (B,)}``, decoded inside
        :meth:`evaluation_statistics`; a text decoder adds ``"input_text"`` and
        ``"reconstruction_text"`` (:func:`lebm.training.prediction.with_text`)."""
        z = self.infer(x, generator=generator)
        with torch.no_grad():
            with self.evaluation_statistics():
                reconstructions = warn_if_not_finite(self.decoder.decode(z), "predict: reconstructions")
            scores = warn_if_not_finite(self.score_at(x, z, generator=generator), "predict: scores")
        prediction = {"inputs": x, "latents": z, "reconstructions": reconstructions, "scores": scores}
        return with_text(self.decoder, prediction)

    def predict_samples(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``{"samples": generate(n) (n, *x_shape)}`` drawn from ``generator``; a text decoder adds
        ``"sample_text"``."""
        return with_text(self.decoder, {"samples": self.generate(n, generator=generator)})


def latent_nets(prior: Prior) -> list[tuple[str, nn.Module]]:
    """The nets of a prior that read latents: ``("the prior's energy_net", net)``, or its ratio nets."""
    found = []
    if isinstance(getattr(prior, "energy_net", None), nn.Module):
        found.append(("the prior's energy_net", prior.energy_net))
    for net in getattr(prior, "ratios", ()):
        found.append(("the prior's ratio_net", net))
    return found


def chain_logs(prefix: str, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Energy and gradient norm (and any other per-step series) at the first and last step of a
    chain; a Metropolis-adjusted chain's acceptance as its mean over the steps (no host sync)."""
    logs: dict[str, Tensor] = {}
    for name, per_step in stats.items():
        if name == "acceptance" and len(per_step):
            logs[f"{prefix}_acceptance"] = per_step.mean()
        elif len(per_step):
            logs[f"{prefix}_{name}_first"] = per_step[0]
            logs[f"{prefix}_{name}_last"] = per_step[-1]
    return logs
