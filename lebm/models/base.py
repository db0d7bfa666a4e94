"""The base of every learning method: the user-facing API and the shared plumbing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lebm.config import build, try_to_config
from lebm.models.priors import Prior
from lebm.samplers import Sampler


def batch_observations(batch: Any) -> Tensor:
    """The observations ``x`` of a batch: the batch itself or the first item of a tuple/list."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def ensure_component(value: Any, name: str, kind: type | tuple[type, ...] = nn.Module) -> Any:
    """Build ``value`` from a ``{"class_path", "init_args"}`` config if needed and type-check it."""
    if value is None:
        raise ValueError(
            f"`{name}` is missing. A checkpoint stores only lebm components' configs; for your own "
            f"module pass it again: Method.load_from_checkpoint(path, {name}=<module>)"
        )
    if isinstance(value, dict):
        value = build(value)
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"`{name}` must be a {expected}, got {type(value).__name__}")
    return value


class LatentVariableModel(L.LightningModule):
    """A generator ``p(x|z)`` (``self.decoder``) with a latent prior ``p(z)`` (``self.prior``).

    User API shared by every method:

    - ``generate(n)`` -> ``(n, *x_shape)``: decoded prior samples.
    - ``infer(x)`` -> ``(B, latent_dim)``: posterior latents (method-specific).
    - ``reconstruct(x)`` -> ``(B, *x_shape)``: ``decode(infer(x))``.
    - ``joint_energy(x, z)`` -> ``(B,)``: ``-log p(x, z) + const = nll(x|z) + U_prior(z)``.
    - ``score(x)`` -> ``(B,)``: anomaly score ``-log p(x, z)`` at ``z = infer(x)``; higher means
      more anomalous (the papers rank by the unnormalised ``log p(x, z)``, the same order flipped).
    """

    decoder: nn.Module
    prior: Prior

    def save_component_hyperparameters(self, arguments: dict[str, Any]) -> None:
        """Save a method's ``__init__`` arguments (its ``locals()``; ``self`` and ``__class__``
        are skipped) with components stored as configs, so that ``load_from_checkpoint``
        rebuilds them (components that are not lebm components are stored as ``None`` and must be
        passed again when loading)."""
        skipped = ("self", "__class__")
        hparams = {name: try_to_config(value) for name, value in arguments.items() if name not in skipped}
        # LightningCLI reads `_class_path` to rebuild the right subclass from a checkpoint's
        # hyperparameters (`lebm test --ckpt_path ...`); load_from_checkpoint ignores it.
        hparams["_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        self.save_hyperparameters(hparams)

    def setup(self, stage: str) -> None:
        """Let DDP find the parameters each backward pass leaves out.

        Methods step several optimisers, each on a loss that reaches only its own net, so every
        backward pass leaves the other nets' parameters without gradients. DDP must be told
        (``find_unused_parameters``), or it waits for them. Done here, before the strategy wraps
        the model, so ``--trainer.devices N`` works without naming a strategy.
        """
        strategy = self.trainer.strategy if self._trainer is not None else None
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
        if isinstance(ddp_kwargs, dict):
            ddp_kwargs.setdefault("find_unused_parameters", True)

    # ---------------------------------------------------------------- user API
    def posterior_energy(self, x: Tensor, *, with_prior_tilt: bool = True) -> Callable[[Tensor], Tensor]:
        """The posterior's energy ``z -> -log p(x, z)`` ``(B,)`` *without* the prior's Gaussian
        reference term, which chains add analytically: pass
        ``reference_precision=self.prior.reference_precision`` to the sampler.
        ``with_prior_tilt=False`` leaves out the prior's residual energy too (posterior under the
        Gaussian reference alone)."""
        if x.is_inference():  # a batch from an inference-mode loop: chains need a normal tensor
            with torch.inference_mode(False):
                x = x.clone()

        def energy(z: Tensor) -> Tensor:
            nll = self.decoder.nll(x, z)
            residual = self.prior.residual_energy(z) if with_prior_tilt else None
            return nll if residual is None else nll + residual

        return energy

    def joint_energy(self, x: Tensor, z: Tensor) -> Tensor:
        return self.decoder.nll(x, z) + self.prior.energy(z)

    def infer(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, n: int, *, sampler: Sampler | None = None) -> Tensor:
        """``n`` samples ``g(z)``, ``z ~ prior`` (optionally with another prior ``sampler``)."""
        z = self.prior.sample(n, sampler=sampler)
        return self.decoder.decode(z)

    def reconstruct(self, x: Tensor, **kwargs: Any) -> Tensor:
        z = self.infer(x, **kwargs)
        with torch.no_grad():
            return self.decoder.decode(z)

    def score(self, x: Tensor, **kwargs: Any) -> Tensor:
        z = self.infer(x, **kwargs)
        with torch.no_grad():
            return self.anomaly_score(self.decoder.nll(x, z), z)

    def anomaly_score(self, nll: Tensor, z: Tensor) -> Tensor:
        """The anomaly score ``(B,)`` of examples with decoder NLL ``nll`` ``(B,)`` at latents ``z``:
        ``-log p(x, z) = nll + U_prior(z)`` (LEBM's ``log p(x, z)`` ranking, sign flipped)."""
        return nll + self.prior.energy(z)

    # ------------------------------------------------------- evaluation steps
    def _evaluation_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        """Posterior inference on a held-out batch.

        Logs ``{stage}/nll`` (the decoder's ``-log p(x|z)`` at posterior samples) and returns
        per-example values ``(B,)`` for the metric callbacks: ``nll``, ``score``
        (``-log p(x, z)``, the anomaly score) and the decoder's metrics (``mse`` for images).
        """
        x = batch_observations(batch)
        z = self.infer(x)
        with torch.no_grad():
            nll = self.decoder.nll(x, z)
            values = {"nll": nll, "score": self.anomaly_score(nll, z), **self.decoder.metrics(x, z)}
        self.log(f"{stage}/nll", nll.mean(), sync_dist=True, batch_size=len(x))
        return values

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "test")
