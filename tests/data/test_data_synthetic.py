"""Gaussian-mixture toys: exact density, sampling and the data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from lebm.data import GaussianMixture, MixtureDataModule


@pytest.mark.parametrize(
    "mixture",
    [GaussianMixture.ring(8, radius=2.0, std=0.1), GaussianMixture.grid(5, spacing=1.0, std=0.15)],
    ids=["ring", "grid"],
)
def test_log_prob_integrates_to_one_on_a_fine_grid(mixture: GaussianMixture) -> None:
    step = 0.01
    ticks = torch.arange(-3.5, 3.5, step, dtype=torch.float64) + step / 2
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    total = mixture.log_prob(points).exp().sum().item() * step**2
    assert total == pytest.approx(1.0, abs=2e-3)


def test_log_prob_matches_scipy_mixture_in_three_dimensions() -> None:
    mixture = GaussianMixture.ring(5, radius=1.5, std=0.3, dim=3)
    points = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.1], [-1.0, 0.7, -0.4], [3.0, -2.0, 1.0]], dtype=torch.float64)
    expected = np.zeros(len(points))
    for mean in mixture.means.double().numpy():
        expected += multivariate_normal(mean=mean, cov=0.3**2 * np.eye(3)).pdf(points.numpy()) / 5
    np.testing.assert_allclose(mixture.log_prob(points).numpy(), np.log(expected), rtol=1e-10)


def test_ring_and_grid_means() -> None:
    ring = GaussianMixture.ring(6, radius=2.5, std=0.1, dim=4)
    assert ring.means.shape == (6, 4)
    torch.testing.assert_close(ring.means[:, :2].norm(dim=1), torch.full((6,), 2.5))
    assert bool((ring.means[:, 2:] == 0).all())
    second_mean = torch.tensor([2.5 * math.cos(math.pi / 3), 2.5 * math.sin(math.pi / 3)])
    torch.testing.assert_close(ring.means[1, :2], second_mean)
    grid = GaussianMixture.grid(3, spacing=2.0)
    assert sorted(set(grid.means[:, 0].tolist())) == [-2.0, 0.0, 2.0]
    assert grid.n_components == 9 and torch.equal(grid.means.mean(dim=0), torch.zeros(2))


def test_samples_occupy_components_uniformly_and_near_their_means() -> None:
    mixture = GaussianMixture.ring(8, radius=2.0, std=0.1)
    generator = torch.Generator().manual_seed(0)
    x, components = mixture.sample_with_components(8000, generator)
    assert x.shape == (8000, 2) and x.dtype == torch.float32
    counts = torch.bincount(mixture.component(x), minlength=8)
    assert int(counts.min()) > 850 and int(counts.max()) < 1150  # 1000 expected, sd about 30
    assert float((mixture.component(x) == components).float().mean()) > 0.99
    spread = (x - mixture.means[components]).std().item()
    assert spread == pytest.approx(0.1, rel=0.05)


def test_extra_dimensions_are_zero_mean_noise_with_the_same_std() -> None:
    x = GaussianMixture.grid(2, std=0.2, dim=5).sample(20000, torch.Generator().manual_seed(1))
    assert x.shape == (20000, 5)
    assert x[:, 2:].mean(dim=0).abs().max().item() < 0.01
    torch.testing.assert_close(x[:, 2:].std(dim=0), torch.full((3,), 0.2), atol=0.006, rtol=0)


def test_sampling_is_reproducible_with_a_generator() -> None:
    mixture = GaussianMixture.grid()
    first = mixture.sample(50, torch.Generator().manual_seed(7))
    second = mixture.sample(50, torch.Generator().manual_seed(7))
    third = mixture.sample(50, torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_mixture_module_batches_and_labels() -> None:
    module = MixtureDataModule(kind="ring", n_components=8, dim=3, n_train=500, n_val=50, n_test=70, batch_size=100)
    assert module.sample_shape == (3,)
    module.setup()
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (100, 3) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float((module.mixture.component(x) == y).float().mean()) > 0.95
    assert len(module.train_dataloader()) == 5 and len(module.test_dataset) == 70
    assert sum(batch[0].shape[0] for batch in module.val_dataloader()) == 50


def test_mixture_module_is_deterministic_in_seed() -> None:
    def train_points(seed: int) -> torch.Tensor:
        module = MixtureDataModule(kind="grid", n_train=200, batch_size=50, seed=seed)
        module.setup()
        return module.train_dataset.tensors[0]

    assert torch.equal(train_points(3), train_points(3))
    assert not torch.equal(train_points(3), train_points(4))


def test_mixture_module_grid_defaults_and_errors() -> None:
    assert MixtureDataModule(kind="grid").mixture.n_components == 25
    with pytest.raises(ValueError, match="square"):
        MixtureDataModule(kind="grid", n_components=8)
    with pytest.raises(ValueError, match="ring, grid"):
        MixtureDataModule(kind="spiral")
