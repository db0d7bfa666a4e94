"""Low-dimensional Gaussian mixtures (ring, grid) for toy runs, tests and benchmarks.

All components share one isotropic standard deviation. In ``dim > 2`` the means live in the
first two coordinates and are 0 elsewhere, so the extra coordinates are zero-mean Gaussian
noise with the same ``std``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.prediction import PredictionSource, check_predict_samples


class GaussianMixture:
    """Mixture of isotropic Gaussians ``sum_k w_k N(means[k], std^2 I)``.

    Args:
        means: (K, dim) component means (stored as float32).
        std: shared standard deviation (> 0).
        weights: (K,) mixture weights (normalised here); None = uniform.
    """

    def __init__(self, means: Tensor, std: float, weights: Tensor | None = None) -> None:
        if means.ndim != 2 or means.shape[0] == 0:
            raise ValueError(f"means must have shape (K, dim) with K >= 1, got {tuple(means.shape)}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.means = means.to(torch.float32)
        self.std = float(std)
        if weights is None:
            weights = torch.ones(means.shape[0])
        if weights.shape != (means.shape[0],) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be (K,) non-negative with a positive sum")
        weights = weights.to(torch.float64)
        self.weights = weights / weights.sum()  # float64 so log_prob stays exact in float64

    @classmethod
    def ring(cls, n_components: int = 8, radius: float = 2.0, std: float = 0.1, dim: int = 2) -> GaussianMixture:
        """``n_components`` equal-weight Gaussians evenly spaced on a circle of ``radius`` (first at angle 0)."""
        _check_dim(dim)
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        angles = torch.arange(n_components, dtype=torch.float64) * (2 * math.pi / n_components)
        plane = torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1)
        return cls(_pad_dims(plane, dim), std)

    @classmethod
    def grid(cls, side: int = 5, spacing: float = 1.0, std: float = 0.1, dim: int = 2) -> GaussianMixture:
        """``side`` x ``side`` equal-weight Gaussians on a square grid centred at the origin."""
        _check_dim(dim)
        if side < 1:
            raise ValueError(f"side must be >= 1, got {side}")
        ticks = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
        xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
        plane = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
        return cls(_pad_dims(plane, dim), std)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample_with_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points and the component each came from.

        Returns:
            x (n, dim) float32, components (n,) int64.
        """
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.means[components] + self.std * noise, components

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points: (n, dim) float32."""
        return self.sample_with_components(n, generator)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density (log-sum-exp over components) of points x (n, dim) -> (n,).

        Computed in ``x``'s floating dtype (pass float64 for high accuracy).
        """
        dtype = x.dtype if x.is_floating_point() else torch.float32
        x = x.to(dtype)
        means = self.means.to(device=x.device, dtype=dtype)
        squared = ((x[:, None, :] - means[None, :, :]) ** 2).sum(dim=-1)  # (n, K)
        log_norm = -self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        log_components = log_norm - 0.5 * squared / self.std**2
        log_weights = self.weights.to(device=x.device, dtype=dtype).log()
        return torch.logsumexp(log_components + log_weights, dim=1)

    def component(self, x: Tensor) -> Tensor:
        """Index of the nearest mean for each point x (n, dim) -> (n,) int64."""
        means = self.means.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
        squared = ((x[:, None, :] - means[None, :, :]) ** 2).sum(dim=-1)
        return squared.argmin(dim=1)


def _check_dim(dim: int) -> None:
    if dim < 2:
        raise ValueError(f"dim must be >= 2 (the mixture lives in the first two coordinates), got {dim}")


def _pad_dims(plane: Tensor, dim: int) -> Tensor:
    """(K, 2) -> (K, dim) with zeros in the extra coordinates."""
    return torch.cat([plane, plane.new_zeros(plane.shape[0], dim - 2)], dim=1).to(torch.float32)


class MixtureDataModule(PredictionSource, L.LightningDataModule):
    """Samples of a ring or grid :class:`GaussianMixture` as a LightningDataModule.

    Batches are tuples ``(x, y)``: ``x`` float32 (B, dim), ``y`` int64 (B,) the component each
    point was drawn from. Train, val and test sets are drawn once in :meth:`setup` from one
    generator seeded with ``seed`` (same seed -> same data).

    Args:
        kind: "ring" or "grid".
        n_components: number of Gaussians (None: 8 for ring, 25 for grid; grid needs a square).
        radius: ring radius.
        spacing: distance between neighbouring grid means.
        std: standard deviation of every component.
        dim: data dimension; coordinates beyond the first two are zero-mean noise with ``std``.
        n_train: size of the training set.
        n_val: size of the validation set.
        n_test: size of the test set.
        batch_size: batch size of all loaders (training drops the last partial batch).
        seed: seed of the sampled data.
        predict_samples: what ``lebm predict`` reads: 0 (default) the test split; N > 0 requests for N
            generated samples (:class:`~lebm.data.prediction.PredictionSource`).

    Attributes:
        mixture: the :class:`GaussianMixture` (exact ``log_prob`` for evaluation).
        sample_shape: ``(dim,)``.
    """

    #: The settings that decide which examples each split holds (``lebm.data.fingerprint``): a
    #: checkpoint keeps them, and a command that scores or resumes it on other ones refuses.
    split_settings: ClassVar[tuple[str, ...]] = (
        "kind",
        "n_components",
        "radius",
        "spacing",
        "std",
        "dim",
        "n_train",
        "n_val",
        "n_test",
        "seed",
    )

    def __init__(
        self,
        kind: str = "ring",
        n_components: int | None = None,
        radius: float = 2.0,
        spacing: float = 1.0,
        std: float = 0.1,
        dim: int = 2,
        n_train: int = 10000,
        n_val: int = 1000,
        n_test: int = 1000,
        batch_size: int = 100,
        seed: int = 0,
        predict_samples: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.predict_samples = check_predict_samples(predict_samples)
        if kind == "ring":
            self.mixture = GaussianMixture.ring(n_components or 8, radius=radius, std=std, dim=dim)
        elif kind == "grid":
            count = n_components or 25
            side = math.isqrt(count)
            if side * side != count:
                raise ValueError(f"grid needs a square number of components, got {count}")
            self.mixture = GaussianMixture.grid(side, spacing=spacing, std=std, dim=dim)
        else:
            raise ValueError(f"unknown mixture kind {kind!r}; valid kinds are: ring, grid")
        if batch_size <= 0 or n_train < batch_size:
            raise ValueError(f"need 0 < batch_size <= n_train, got batch_size={batch_size}, n_train={n_train}")
        if n_val < 0 or n_test < 0:
            raise ValueError(f"n_val and n_test must be >= 0, got {n_val}, {n_test}")
        self.kind = kind
        self.sizes = (n_train, n_val, n_test)
        self.batch_size = batch_size
        self.seed = seed
        self.sample_shape = (dim,)
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Draw the three sets (idempotent)."""
        if self.train_dataset is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        train, val, test = (TensorDataset(*self.mixture.sample_with_components(n, generator)) for n in self.sizes)
        self.train_dataset, self.val_dataset, self.test_dataset = train, val, test

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return training_loader(self.train_dataset, self.batch_size, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return evaluation_loader(self.val_dataset, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return evaluation_loader(self.test_dataset, self.batch_size)
