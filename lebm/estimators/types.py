"""What the estimators read from the parts they are given, as Protocols: the estimators import no
net, prior or method, so any object with these members works (lebm's own or a user's)."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Decoder(Protocol):
    """An observation model ``p(x|z)``: ``nll(x, z) -> (B,)`` is ``-log p(x|z)`` per example."""

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        """``-log p(x|z)`` per example (up to a constant), ``(B, *x_shape), (B, D) -> (B,)``."""
        ...


class Posterior(Protocol):
    """An inference model's distribution ``q(z|x)`` over ``(B, D)`` (e.g. ``DiagonalGaussian``)."""

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z|x)`` per example, ``(B, D) -> (B,)``."""
        ...

    def nll(self, z: Tensor) -> Tensor:
        """``-log q(z|x)`` per example without its constant, ``(B, D) -> (B,)``."""
        ...


class EnergyPrior(Protocol):
    """A latent prior ``p(z) ∝ exp(-U(z))`` with a Gaussian reference (e.g. ``TiltedGaussianPrior``)."""

    @property
    def reference_log_normalizer(self) -> float:
        """``log`` of the Gaussian reference's normaliser, ``D/2 log(2 pi sigma^2)``."""
        ...

    def energy(self, z: Tensor) -> Tensor:
        """The total energy ``U(z)``, ``(B, D) -> (B,)``."""
        ...
