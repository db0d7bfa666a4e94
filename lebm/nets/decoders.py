"""Observation models ``p(x|z)``: a generator plus its likelihood.

:class:`Decoder` is the contract: ``nll(x, z)`` and ``decode(z)`` are required, every other member
has a default that does nothing, so the methods call them all without asking whether they exist
and never need to know whether ``x`` is an image, a vector or a sentence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.config import Configurable

#: Rounding allowed around lebm's image range [-1, 1].
IMAGE_SLACK = 1e-3


def as_observations(data: Any, device: torch.device) -> Tensor:
    """``data`` (a numpy array, nested lists of numbers) as a tensor on ``device``, integers as
    float32; what it holds is checked by :meth:`Decoder.check_observations`."""
    if not isinstance(data, Tensor):
        if isinstance(data, (str, bytes)):
            raise TypeError(
                f"observations must be a tensor (B, *x_shape), a numpy array or nested lists of numbers, got "
                f"{type(data).__name__}: this model reads arrays (images or vectors), not text (a text model's "
                "decoder is a lebm.nets.CategoricalDecoder)"
            )
        if isinstance(data, (tuple, list)) and data and isinstance(data[0], Tensor):
            raise TypeError(
                f"observations must be one tensor (B, *x_shape), got a {type(data).__name__} of "
                f"{len(data)} tensors: a batch (x, y, ...) of a loader? pass its observations x (batch[0]), or "
                "torch.stack a list of examples"
            )
        try:
            data = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"observations must be a tensor (B, *x_shape), a numpy array or nested lists of numbers, got "
                f"{type(data).__name__} ({str(error).splitlines()[0]})"
            ) from None
    return (data if data.is_floating_point() else data.float()).to(device)


class Decoder(nn.Module, Configurable):
    """The base of an observation model ``p(x|z)`` (subclass it for your own).

    Required:

    - ``nll(x, z)``: ``-log p(x|z) + const`` per example, ``(B, *x_shape), (B, D) -> (B,)``;
      differentiable in ``z`` (posterior chains) and in the parameters (the decoder's loss);
    - ``decode(z)``: the observation for latents ``z``, e.g. the mean of ``p(x|z)``, ``(B, D) ->
      (B, *x_shape)``: ``generate`` and ``reconstruct`` return it.

    Hooks with do-nothing defaults, which the methods call:

    - ``metrics(x, z)`` and ``metric_names``: per-example evaluation values ``{name: (B,)}``;
    - ``bind_data(datamodule)``: take what the data define (a text decoder takes the vocabulary),
      before training;
    - ``hold_noise(x, generator)`` / ``release_noise()``: at the start and end of every training
      batch, for a decoder that is random in training mode (draw its masks once per batch from
      the per-rank ``generator``);
    - ``prepare(data, device)`` / ``present(x)``: user input to the tensor ``nll`` reads, and decoded
      observations to the user's form (strings for text);
    - ``check_observations(x)``: refuse what users hand the Python API that the decoder cannot read;
    - ``observation_shape(z)``: the per-example shape of the observations it reads (the methods
      refuse other shapes in one line); by default that of ``decode(z)``; None for any shape;
    - ``word_counts(x)``: for a decoder of sentences, the words and unknown words of each (the
      methods warn about empty and unknown sentences); None by default.

    ``net`` is the generator ``g`` when there is one (the checks name it in their messages);
    ``normalised_likelihood`` says ``nll`` leaves out no constant (marginal likelihoods are exact).
    """

    #: the per-example metrics ``metrics(x, z)`` reports
    metric_names: tuple[str, ...] = ()
    #: ``nll`` is a normalised ``-log p(x|z)`` (no constant left out)
    normalised_likelihood: bool = False
    #: the observations are token ids ``(B, T)`` (sentences), not arrays
    reads_tokens: bool = False

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        """``-log p(x|z) + const`` ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement nll(x, z)")

    def decode(self, z: Tensor) -> Tensor:
        """The observation for latents ``z``."""
        raise NotImplementedError(f"{type(self).__name__} must implement decode(z)")

    def forward(self, z: Tensor) -> Tensor:
        """``decode(z)``: calling the decoder decodes."""
        return self.decode(z)

    def metrics(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Per-example evaluation values ``{name: (B,)}`` (none by default)."""
        return {}

    def bind_data(self, datamodule: Any) -> None:
        """Take what the data define (nothing by default)."""

    def hold_noise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Draw and hold this training batch's noise (nothing to hold by default)."""

    def release_noise(self) -> None:
        """Drop the held noise (nothing by default)."""

    def prepare(self, data: Any, device: torch.device) -> Tensor:
        """User input as the tensor ``nll`` reads: a tensor as it is; numpy arrays and nested lists
        of numbers as a float tensor on ``device``."""
        return data if isinstance(data, Tensor) else as_observations(data, device)

    def check_observations(self, x: Tensor) -> None:
        """Refuse, with the fix, observations this decoder cannot read (NaN or infinite values);
        called on what users hand the Python API, never inside a training loop."""
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("observations hold NaN or infinite values: clean or drop those examples first")

    def observation_shape(self, z: Tensor) -> tuple[int, ...] | None:
        """The per-example shape ``x_shape`` of the observations this decoder reads, from probe
        latents ``z`` ``(2, latent_dim)`` (called without gradients, as the user API decodes): by
        default that of ``decode(z)`` ``(2, *x_shape)``. None: observations of any shape (override it so for a
        decoder whose ``nll`` reads other shapes than ``decode`` makes)."""
        decoded = self.decode(z)
        return tuple(decoded.shape[1:]) if isinstance(decoded, Tensor) else None

    def word_counts(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """For a decoder of sentences: per sentence of ``x`` the words and the words unknown to its
        vocabulary, each ``(B,)``; None (the default) for a decoder of arrays."""
        return None

    def present(self, x: Tensor) -> Any:
        """Decoded observations in the user's form (by default: the tensor itself)."""
        return x

    def generator_net(self) -> nn.Module:
        """The generator ``g`` (``net``) when the decoder has one, else the decoder itself."""
        net = getattr(self, "net", None)
        return net if isinstance(net, nn.Module) else self


class GaussianDecoder(Decoder):
    """``x = g(z) + eps``, ``eps ~ N(0, sigma^2 I)``.

    ``nll(x, z) = ||x - g(z)||^2 / (2 sigma^2)`` per example ``(B,)``, without the constant
    ``D/2 log(2 pi sigma^2)``. LEBM uses sigma = 0.3 on images in [-1, 1].

    Args:
        net: the generator ``g``: ``(B, latent_dim) -> (B, *x_shape)``.
        sigma: the observation noise standard deviation.
    """

    metric_names = ("mse",)

    def __init__(self, net: nn.Module, sigma: float = 0.3) -> None:
        super().__init__()
        self.sigma = arguments.scale("GaussianDecoder", "sigma", sigma)
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"GaussianDecoder net must be a torch.nn.Module (the generator g), got {type(net).__name__}"
            )
        self.net = net

    def decode(self, z: Tensor) -> Tensor:
        """The mean ``g(z)``: ``(B, latent_dim) -> (B, *x_shape)``."""
        return self.net(z)

    forward = decode

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        """``-log p(x|z) + const``: ``(B, *x_shape), (B, latent_dim) -> (B,)``."""
        return self.squared_error(x, z) / (2 * self.sigma**2)

    @contextlib.contextmanager
    def observation_noise(self, sigma: float) -> Iterator[None]:
        """Within the block, ``nll`` (and every chain whose energy reads it) uses ``sigma`` instead
        of the trained :attr:`sigma`; restored on leaving, also on an error. A captured chain's key
        reads ``sigma``, so another value records its own graph."""
        trained, self.sigma = self.sigma, arguments.scale(type(self).__name__, "sigma", sigma)
        try:
            yield
        finally:
            self.sigma = trained

    def squared_error(self, x: Tensor, z: Tensor) -> Tensor:
        """``||x - g(z)||^2`` per example: ``(B, *x_shape), (B, latent_dim) -> (B,)`` (``2 sigma^2 nll``)."""
        return (x - self._mean(x, z)).square().flatten(1).sum(1)

    def _mean(self, x: Tensor, z: Tensor) -> Tensor:
        """``g(z)``, checked to have the shape of ``x`` (no silent broadcasting)."""
        mean = self.net(z)
        if mean.shape != x.shape:
            raise ValueError(
                f"the generator makes {tuple(mean.shape)} from latents {tuple(z.shape)} but the data are "
                f"{tuple(x.shape)}: make the generator's output shape (channels, image size) match the data"
            )
        return mean

    def check_observations(self, x: Tensor) -> None:
        """As :meth:`Decoder.check_observations`; images ``(B, C, H, W)`` must be floats in ``[-1, 1]``,
        lebm's convention (``x / 127.5 - 1`` for 0..255 images)."""
        if x.dim() == 4 and not x.is_floating_point():
            fix = (
                "for 0/1 images pass x.float() * 2 - 1"
                if x.dtype == torch.bool
                else "for 0..255 images pass x.float() / 127.5 - 1"
            )
            raise ValueError(f"observations must be floating point, got {x.dtype}: {fix}")
        super().check_observations(x)
        if x.dim() == 4 and (x.min() < -1 - IMAGE_SLACK or x.max() > 1 + IMAGE_SLACK):
            raise ValueError(
                f"images are expected in [-1, 1] (lebm's convention), got values in [{float(x.min()):.3g}, "
                f"{float(x.max()):.3g}]: for 0..255 images pass x / 127.5 - 1, for [0, 1] images 2 * x - 1"
            )

    def metrics(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Per-example reconstruction metrics ``(B,)``: ``mse``, the mean over pixels of
        ``(x - g(z))^2`` (the papers' per-pixel MSE, for images in [-1, 1])."""
        return {"mse": (x - self._mean(x, z)).square().flatten(1).mean(1)}
