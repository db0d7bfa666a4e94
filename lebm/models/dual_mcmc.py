"""DualMCMC: a data-space EBM, a generator and an inference network learned jointly by dual-MCMC
teaching (Cui & Han, NeurIPS 2023)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lebm.estimators import generator_teaching_loss, inference_teaching_loss, mle_loss
from lebm.models.base import batch_observations, ensure_component, require_components
from lebm.models.latent_generator import LatentGeneratorModel, chain_logs
from lebm.models.priors import GaussianPrior, Prior
from lebm.nets.encoders import InferenceNetwork
from lebm.nets.layers import batch_statistics
from lebm.recording.audit import audited_iteration
from lebm.recording.torch_internals import is_spectral_normed
from lebm.samplers import Langevin, Sampler
from lebm.samplers.chain import Diagnostics, modules_in_mode
from lebm.samplers.initializers import NetworkStart
from lebm.training.choices import check_choice
from lebm.training.inputs import api_call, check_sampler, refuse_unused_sampler, warn_if_not_finite
from lebm.training.migrations import encoder_optimizer_of_earlier_checkpoints, upsampling_of_earlier_checkpoints
from lebm.training.optimizers import adam_with_decay

#: The official abort rule: training stops when the EBM's contrast |errE| exceeds this.
OFFICIAL_CONTRAST_LIMIT = 1e4

EBMNegatives = Literal["revised_again", "revised", "generator"]
#: The string options and what each of their values means.
CHOICES: dict[str, dict[str, str]] = {
    "ebm_negatives": {
        "revised_again": "the official fine_tune",
        "revised": "this iteration's revised samples",
        "generator": "the updated generator's samples",
    },
    "generator_loss": {"sse": "the official squared error", "nll": "the decoder's nll"},
    "evaluation_batchnorm": {"batch": "batch statistics, as the official code", "running": "running statistics"},
}


@audited_iteration
class DualMCMC(LatentGeneratorModel):
    """Dual-MCMC teaching: an EBM ``pi(x) ∝ exp(-E(x))`` on data, a generator ``p(x|z) p(z)``
    (``z ~ N(0, I)``) and an inference network ``q(z|x)``.

    Beside :class:`~lebm.models.LatentVariableModel` on their shared base
    (:class:`~lebm.models.latent_generator.LatentGeneratorModel`: the decoder, the prior, posterior
    inference ``infer`` = encoder + Langevin, ``reconstruct``, the input checks and the evaluation
    step): the model of the data is the EBM, so ``generate`` revises the generator's samples by the
    data chain and ``score`` is the energy.

    Two chains revise what the models propose, and the revisions teach them. One training
    iteration, in the official code's order::

        z ~ N(0, I);  x~ = data_chain(E, g(z))            # 30 steps, s = 0.5, n = 1e-3, no reference term
        z~ = posterior_chain(-log p(x, z), z0 ~ q(z|x))   # 10 steps, s = n = 0.1, from a reparameterised sample
        generator:  Gfactor * mean r(x, z~) + Sfactor * mean r(x~, z)          r = ||x - g(z)||^2
        inference:  Gfactor * mean -log q(z~|x) + Ifactor * mean -log q(z|x~)
        x~' = data_chain(E, g'(z))                        # redone with the updated generator
        EBM:        (mean E(x) - mean E(x~')) / T,  T = (n / s)^2 of the data chain

    Adam with betas (0, 0.9) for the three nets, learning rates 3e-4 (generator), 1e-4 (inference
    network, EBM), weight decay 5e-4 (generator, inference network), ExponentialLR(0.998) per
    epoch; training stops when ``|mean E(x) - mean E(x~')| > 1e4`` or anything is non-finite.

    **BatchNorm** (the generator's): the official code never calls ``eval()``, so the generator
    normalises with batch statistics everywhere. Here too: in training every chain runs with the
    nets in train mode (the posterior chain's generator calls update the running statistics, as
    there), and evaluation (``generate``, ``infer``, ``reconstruct``, ``score``, validation)
    uses batch statistics without updating them (``evaluation_batchnorm="batch"``);
    ``"running"`` uses the running statistics instead (``eval()`` as usual in PyTorch).

    **Spectral norm at test time** (the EBM's): for the same reason the official code's data
    chains always run the spectral norm's power iteration (one step per energy evaluation,
    updating the ``_u``/``_v`` vectors), also when it samples for FID. PyTorch stops it in eval
    mode. With ``evaluation_power_iteration=True`` (default) the data chains run outside training
    (``generate``, ``revise`` on a model in eval mode, the FID callbacks' samples) switch the
    energy net's spectral-norm layers, and only those, to train mode, so the iteration runs as
    there; the vectors it updates are buffers of the model, so sampling changes them (as in the
    official code). ``False``: eval-mode spectral norm, the stored vectors unchanged. Training is
    not affected (the nets are in train mode anyway), nor ``score`` (one energy evaluation, no
    chain).

    User API: ``generate(n)`` EBM-revised samples by the test-time chain (70 steps, s = 0.4,
    n = 1e-3), ``generate(n, revise=False)`` raw generator samples; ``infer(x)`` the encoder's mean
    refined by the posterior chain ("Inf + L=10"), ``infer(x, refine=False)`` the mean alone
    ("Inf"); ``reconstruct(x)``; ``score(x)`` the energy ``E(x)`` (higher = more anomalous).

    Args:
        decoder: the generator with its likelihood, ``GaussianDecoder(SNGANGenerator(...), sigma)``.
            The official posterior chain descends ``||g(z) - x||^2 / sigma^2`` with sigma 0.3:
            the Gaussian likelihood with ``sigma = 0.3 / sqrt(2)``, which the recipes state.
        energy_net: ``E``: ``(B, *x_shape) -> (B,)``, an energy on data (``SNResNetEnergy``).
        encoder: the inference network ``q(z|x)`` (``ConvEncoder``).
        prior: the generator's latent prior; default ``N(0, I)`` of the encoder's latent size.
        data_sampler: the training data chain; default ``Langevin(30, 0.5, noise_std=1e-3)``.
        posterior_sampler: the latent chain; default ``Langevin(10, 0.1)`` (noise = step = 0.1).
        test_data_sampler: the data chain of ``generate``; default ``Langevin(70, 0.4, noise_std=1e-3)``.
        ebm_negatives: the EBM's negatives: ``"revised_again"`` (the official ``fine_tune``: the
            data chain is run again from the updated generator's ``g(z)``), ``"revised"`` (this
            iteration's ``x~``: one data chain per iteration) or ``"generator"`` (the official
            code without ``fine_tune``: the updated generator's raw ``g(z)``).
        temperature: the EBM loss is divided by it; ``"auto"``: the data chain's
            ``noise^2 / (2 drift)`` (``(n / s)^2`` in the code form); 1 turns the scaling off.
        generator_loss: ``"sse"``: the generator's residual is ``||x - g(z)||^2`` (the official
            code); ``"nll"``: the decoder's ``nll`` (the same direction scaled by ``1 / (2 sigma^2)``,
            which changes the weight decay's relative strength).
        data_weight: Gfactor, the weight of the real-data terms of the generator and inference losses.
        sample_weight: Sfactor, the weight of the generator's revised-sample term (50 CIFAR-10, 70 CelebA-64).
        inference_sample_weight: Ifactor, the weight of the inference network's revised-sample term.
        energy_lr: Adam learning rate of the EBM.
        decoder_lr: Adam learning rate of the generator.
        encoder_lr: Adam learning rate of the inference network.
        betas: Adam betas of the three optimisers.
        energy_weight_decay: Adam weight decay of the EBM.
        decoder_weight_decay: Adam weight decay of the generator.
        encoder_weight_decay: Adam weight decay of the inference network.
        lr_decay: ExponentialLR gamma, stepped at the end of each epoch.
        evaluation_batchnorm: ``"batch"`` or ``"running"`` statistics for the generator's
            BatchNorm outside training (see above).
        evaluation_power_iteration: run the energy net's spectral-norm power iteration in the
            data chains outside training, as the official code (see above).
        divergence_limits: ``{logged quantity: largest |value|}``; None: the official
            ``{"train/ebm_contrast": 1e4}``; ``{}`` keeps only the non-finite check.
        divergence_after_epoch: the first epoch at which ``divergence_limits`` apply.
    """

    latent_size_option = "model.init_args.encoder.init_args.latent_dim"
    divergence_hint = (
        "Lower model.init_args.energy_lr / decoder_lr or the data chain's step size "
        "(model.init_args.data_sampler.init_args.step_size)."
    )

    def __init__(
        self,
        decoder: nn.Module,
        energy_net: nn.Module,
        encoder: InferenceNetwork,
        prior: Prior | None = None,
        data_sampler: Sampler | None = None,
        posterior_sampler: Sampler | None = None,
        test_data_sampler: Sampler | None = None,
        ebm_negatives: EBMNegatives = "revised_again",
        temperature: float | str = "auto",
        generator_loss: Literal["sse", "nll"] = "sse",
        data_weight: float = 1.0,
        sample_weight: float = 50.0,
        inference_sample_weight: float = 0.1,
        energy_lr: float = 1e-4,
        decoder_lr: float = 3e-4,
        encoder_lr: float = 1e-4,
        betas: Sequence[float] = (0.0, 0.9),
        energy_weight_decay: float = 0.0,
        decoder_weight_decay: float = 5e-4,
        encoder_weight_decay: float = 5e-4,
        lr_decay: float = 0.998,
        evaluation_batchnorm: Literal["batch", "running"] = "batch",
        evaluation_power_iteration: bool = True,
        divergence_limits: Mapping[str, float] | None = None,
        divergence_after_epoch: int = 0,
    ) -> None:
        require_components(decoder=decoder, energy_net=energy_net, encoder=encoder)
        encoder = ensure_component(encoder, "encoder", InferenceNetwork)
        super().__init__(
            decoder,
            prior if prior is not None else GaussianPrior(encoder.latent_dim),
            encoder=encoder,
            posterior_sampler=posterior_sampler if posterior_sampler is not None else Langevin(10, 0.1),
            divergence_limits=(
                {"train/ebm_contrast": OFFICIAL_CONTRAST_LIMIT} if divergence_limits is None else divergence_limits
            ),
            divergence_after_epoch=divergence_after_epoch,
        )
        self.energy_net = ensure_component(energy_net, "energy_net")
        self.data_sampler = ensure_component(
            data_sampler if data_sampler is not None else Langevin(30, 0.5, noise_std=1e-3), "data_sampler", Sampler
        )
        self.test_data_sampler = ensure_component(
            test_data_sampler if test_data_sampler is not None else Langevin(70, 0.4, noise_std=1e-3),
            "test_data_sampler",
            Sampler,
        )
        self.save_component_hyperparameters(locals())
        for name, choices in CHOICES.items():
            check_choice(f"model.init_args.{name}", self.hparams[name], choices)
        if not isinstance(evaluation_power_iteration, bool):
            raise ValueError(
                f"model.init_args.evaluation_power_iteration must be true or false, got {evaluation_power_iteration!r}"
            )
        if generator_loss == "sse" and not callable(getattr(self.decoder, "squared_error", None)):
            raise ValueError(
                f"generator_loss='sse' needs a decoder with squared_error(x, z) (GaussianDecoder); "
                f"{type(self.decoder).__name__} has none: use model.init_args.generator_loss nll"
            )
        self.temperature = resolve_temperature(temperature, self.data_sampler)
        for name, weight in (
            ("data_weight", data_weight),
            ("sample_weight", sample_weight),
            ("inference_sample_weight", inference_sample_weight),
        ):
            if not weight >= 0:
                raise ValueError(f"model.init_args.{name} must be a number >= 0, got {weight}")

    @property
    def evaluation_outputs(self) -> tuple[str, ...]:
        return ("nll", "score", "mse", "mse_inf")

    # ------------------------------------------------------------------------------ checks
    def check_run(self, datamodule: Any = None) -> None:
        """Besides the latent sizes and the generator's output shape: the energy net takes the
        generator's images and returns one energy per image."""
        super().check_run(datamodule)
        device = next(iter(self.parameters()), torch.empty(0)).device
        with torch.no_grad(), modules_in_mode([self], "eval"):
            images = self.decoder.decode(torch.zeros(2, self.prior.latent_dim, device=device))
            try:
                energy = self.energy_net(images)
            except RuntimeError as error:
                reason = str(error).splitlines()[0]
                raise ValueError(
                    f"the energy net ({type(self.energy_net).__name__}) cannot take the generator's images "
                    f"{tuple(images.shape[1:])} ({reason}): make model.init_args.energy_net.init_args.channels / "
                    "image_size agree with the generator's"
                ) from None
        if energy.shape != (2,):
            raise ValueError(
                f"the energy net ({type(self.energy_net).__name__}) must return one energy per image, shape (B,); "
                f"it returned {tuple(energy.shape)} for 2 images"
            )

    # --------------------------------------------------------------------------- training
    def configure_optimizers(self) -> Any:
        """One Adam per net, in ``training_step``'s order: generator, inference network, EBM."""
        nets = [
            ("decoder", self.decoder.parameters()),
            ("encoder", self.encoder.parameters()),
            ("energy", self.energy_net.parameters()),
        ]
        return adam_with_decay(self.hparams, nets)

    def revise(
        self,
        x: Tensor,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: Diagnostics = False,
    ) -> Any:
        """EBM-revised observations ``(B, *x_shape)``: the data chain (``sampler``, default the
        training one) on ``E`` started at ``x`` ``(B, *x_shape)`` (checked as every method's input
        is, :meth:`observations`); no Gaussian reference term. Outside training, with
        ``evaluation_power_iteration``, the energy net's spectral norm iterates as in training."""
        chain = check_sampler(sampler) if sampler is not None else self.data_sampler
        with self.user_input(x, "revise(x)") as x, self.evaluation_spectral_norm():
            return chain(
                self.energy_net,
                x,
                inputs=(),
                freeze=[self.energy_net],
                generator=generator,
                return_diagnostics=return_diagnostics,
            )

    def training_iteration(self, batch: Any, batch_idx: int) -> None:
        x = batch_observations(batch)
        decoder_opt, encoder_opt, energy_opt = self.optimizer_list()
        stream = self.train_generator
        hp = self.hparams

        z = self.prior.sample(x.shape[0], generator=stream)
        proposals = self.data_start.start(context=z, generator=stream)
        x_revised, data_stats = self.revise(proposals, generator=stream, return_diagnostics="ends")
        z_revised, posterior_stats = self.infer(x, start="sample", generator=stream, return_diagnostics="ends")
        logs = {**chain_logs("train/data_chain", data_stats), **chain_logs("train/posterior_chain", posterior_stats)}

        residual = self.decoder.squared_error if hp.generator_loss == "sse" else self.decoder.nll
        generator = generator_teaching_loss(
            residual, x, z_revised, x_revised, z, data_weight=hp.data_weight, sample_weight=hp.sample_weight
        )
        self.step_optimizers(decoder_opt, generator.loss)

        inference = inference_teaching_loss(
            self.encoder(x),
            z_revised,
            self.encoder(x_revised),
            z,
            data_weight=hp.data_weight,
            sample_weight=hp.inference_sample_weight,
        )
        self.step_optimizers(encoder_opt, inference.loss)

        negatives = self.ebm_negatives(z, x_revised, stream)
        contrast = mle_loss(self.energy_net, x, negatives)
        self.step_optimizers(energy_opt, contrast.loss / self.temperature)

        logs.update(
            {
                "train/generator_loss": generator.loss.detach(),
                "train/generator_data_term": generator.data_term,
                "train/generator_sample_term": generator.sample_term,
                "train/inference_loss": inference.loss.detach(),
                "train/inference_data_term": inference.data_term,
                "train/inference_sample_term": inference.sample_term,
                "train/energy_data": contrast.energy_pos,
                "train/energy_samples": contrast.energy_neg,
                "train/ebm_contrast": contrast.loss.detach(),
            }
        )
        watch = {"train/revised_samples": x_revised, "train/revised_latents": z_revised, "train/negatives": negatives}
        self.finish_training_step(logs, watch, batch_idx)

    @property
    def data_start(self) -> NetworkStart:
        """Where the data chains start: the generator's ``g(z)`` ``(B, *x_shape)`` of latents ``z``
        (the context), no gradient (:class:`~lebm.samplers.NetworkStart`)."""
        return NetworkStart(self.decoder.decode)

    def ebm_negatives(self, z: Tensor, x_revised: Tensor, stream: torch.Generator) -> Tensor:
        """The EBM's negatives ``(B, *x_shape)`` after the generator's update (``ebm_negatives``)."""
        choice = self.hparams.ebm_negatives
        if choice == "revised":
            return x_revised
        proposals = self.data_start.start(context=z, generator=stream)
        return proposals if choice == "generator" else self.revise(proposals, generator=stream)

    # ---------------------------------------------------------------------------- user API
    @contextlib.contextmanager
    def evaluation_statistics(self) -> Iterator[None]:
        """Outside training with ``evaluation_batchnorm="batch"``: the generator's BatchNorm uses
        batch statistics (as the official code, which never calls ``eval()``), running statistics
        untouched. In training, or with ``"running"``, nothing changes."""
        if self.training or self.hparams.evaluation_batchnorm == "running":
            yield
            return
        with batch_statistics(self.decoder):
            yield

    @contextlib.contextmanager
    def evaluation_spectral_norm(self) -> Iterator[None]:
        """Outside training with ``evaluation_power_iteration``: the energy net's spectral-norm
        layers in train mode (power iteration on, as the official code, which never calls
        ``eval()``), everything else as it is. In training, or with the option off, nothing changes."""
        if self.training or not self.hparams.get("evaluation_power_iteration", True):
            yield
            return
        with spectral_norm_power_iteration(self.energy_net):
            yield

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        revise: bool = True,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` samples ``(n, *x_shape)``: ``g(z)``, ``z ~ N(0, I)``, revised by the test-time data
        chain (``sampler`` replaces it; the energy net's spectral norm iterates, see
        ``evaluation_power_iteration``); ``revise=False``: the raw generator samples."""
        if not revise:
            refuse_unused_sampler(
                sampler,
                "generate(n, revise=False, sampler=...)",
                "without revision no chain runs",
                "pass revise=True (the sampler revises the samples), or leave sampler out",
            )
        proposals = self.decoded_prior_samples(n, generator=generator)
        if not revise:
            return warn_if_not_finite(proposals, "generate(n)")
        chain = check_sampler(sampler) or self.test_data_sampler
        with api_call(self):  # the generator's own samples: revise does not check them as a user's input
            revised = self.revise(proposals, sampler=chain, generator=generator)
        return warn_if_not_finite(revised, "generate(n)")

    @torch.no_grad()
    def score(self, x: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """The energy ``E(x)`` ``(B,)`` of observations ``x`` ``(B, *x_shape)`` (checked as every
        method's input is, :meth:`observations`): higher = less probable under the EBM = more
        anomalous. ``generator`` is taken as every method's ``score`` takes it, and unused: the
        energy draws nothing."""
        with self.user_input(x, "score(x)") as x:
            return warn_if_not_finite(self.energy_net(x), "score(x)")

    # --------------------------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Besides the random streams (resuming): checkpoints of earlier lebm versions run as they
        were trained. An ``SNGANGenerator`` whose recorded arguments lack ``align_corners`` (the
        option came later; before it the up-sampling had ``align_corners=False``) is switched to
        ``False``; an encoder whose heads had no bias gets zero biases (``ConvEncoder`` fills them
        when the state dict loads) and, when training resumes, optimiser slots for them."""
        super().on_load_checkpoint(checkpoint)
        upsampling_of_earlier_checkpoints(self, checkpoint)
        encoder_optimizer_of_earlier_checkpoints(self, checkpoint)

    # --------------------------------------------------------------------------- evaluation
    #: The evaluation step logs ``{stage}/nll`` and ``{stage}/energy`` (the batch mean of ``score``).
    logged_evaluation_values = {"nll": "nll", "energy": "score"}
    progress_bar_names = ("train/generator_loss", "train/inference_loss", "train/ebm_contrast")

    @property
    def generation_sampler(self) -> Sampler:
        """The test-time data chain that revises the generator's samples in :meth:`generate`."""
        return self.test_data_sampler

    def evaluation_values(self, x: Tensor) -> dict[str, Tensor]:
        """Per-example ``(B,)`` ``nll`` and ``mse`` at the refined latents ("Inf + L=10", the chain
        drawing from the evaluation stream), ``mse_inf`` at the encoder's mean ("Inf") and
        ``score`` = ``E(x)``."""
        z_inf = self.infer(x, refine=False)
        z = self.infer(x, generator=self.eval_generator)
        with torch.no_grad():
            return {
                "nll": self.decoder.nll(x, z),
                "score": self.energy_net(x),
                "mse": self.decoder.metrics(x, z)["mse"],
                "mse_inf": self.decoder.metrics(x, z_inf)["mse"],
            }

    @property
    def logged_metric_names(self) -> tuple[str, ...] | None:
        """Both chains' ends, the three teaching losses with their terms (``train/...``); the
        evaluation's ``val/nll``, ``val/energy`` (and ``test/``)."""
        losses = [
            f"train/{net}_{part}" for net in ("generator", "inference") for part in ("loss", "data_term", "sample_term")
        ]
        train = ("train/data_chain_*", "train/posterior_chain_*", "train/energy_data", "train/energy_samples")
        return (*train, *losses, "train/ebm_contrast", *self.evaluation_metric_names)


def resolve_temperature(temperature: float | str, sampler: Sampler) -> float:
    """The EBM loss's temperature: a number > 0, or ``"auto"``: the data chain's stationary
    temperature ``noise^2 / (2 drift)`` (``(n / s)^2`` for code-form Langevin)."""
    if temperature == "auto":
        drift, noise = getattr(sampler, "drift", None), getattr(sampler, "noise", None)
        if not isinstance(drift, float) or not isinstance(noise, float) or drift <= 0 or noise <= 0:
            raise ValueError(
                f"temperature 'auto' reads the data chain's drift and noise, which {type(sampler).__name__} does not "
                "state (or are 0): give model.init_args.temperature as a number (1 turns the scaling off)"
            )
        return noise**2 / (2 * drift)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"model.init_args.temperature must be 'auto' or a number > 0, got {temperature!r}")
    return float(temperature)


@contextlib.contextmanager
def spectral_norm_power_iteration(module: nn.Module) -> Iterator[None]:
    """Put the spectral-norm layers of ``module`` in train mode inside the block (their power
    iteration runs at every forward), every other submodule's mode untouched; restored after.

    Covers ``torch.nn.utils.parametrizations.spectral_norm`` (the parametrization module iterates
    in train mode) and the older ``torch.nn.utils.spectral_norm`` hook (the wrapped layer's mode
    decides; a Conv/Linear behaves the same in both modes otherwise)."""
    switched = []
    for sub in module.modules():
        if is_spectral_normed(sub) and not sub.training:
            sub.training = True
            switched.append(sub)
    try:
        yield
    finally:
        for sub in switched:
            sub.training = False
