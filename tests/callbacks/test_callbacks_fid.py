"""FID: the distance maths, running statistics, extractors, the callback end to end, DDP, Inception."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import scipy.linalg
import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lebm.callbacks.fid import FID, aligned_batches, batch_seed, rank_share, reference_batches, reference_indices
from lebm.data import ImageDataModule
from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FeatureStats,
    InceptionFeatures,
    ReferenceStats,
    SmallConvFeatures,
    frechet_distance,
    kernel_inception_distance,
    load_reference_stats,
    mmd2_unbiased,
    save_reference_stats,
    to_three_channels,
    to_uint8,
    trace_sqrt_cholesky,
    trace_sqrt_eigen,
)
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.models.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direct numpy fit: mean (D,) and unbiased covariance (D, D) of (N, D) features."""
    return features.mean(0), np.cov(features, rowvar=False)


def digits(n: int, offset: int = 0) -> torch.Tensor:
    """(n, 1, 8, 8) scikit-learn digits in [-1, 1]."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[offset : offset + n], dtype=torch.float32)
    return images[:, None] / 8.0 - 1.0


def small_fid(extractor: nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    fits = [FeatureStats.from_features(extractor(to_three_channels(x))).gaussian() for x in (a, b)]
    return frechet_distance(*fits[0], *fits[1])


# --------------------------------------------------------------------------- the distance
def test_frechet_distance_of_identical_statistics_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(500, 16)) * 3.0 + 1.0
    mu, sigma = gaussian_fit(features)
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-9 * np.trace(sigma)


def test_frechet_distance_of_a_mean_shift_is_dim_times_shift_squared() -> None:
    mu, sigma = gaussian_fit(np.random.default_rng(1).normal(size=(400, 12)))
    shift = 0.7
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(12 * shift**2, rel=1e-8)


def test_frechet_distance_matches_a_direct_scipy_computation() -> None:
    rng = np.random.default_rng(2)
    mu1, sigma1 = gaussian_fit(rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)))
    mu2, sigma2 = gaussian_fit(rng.normal(size=(300, 20)) * 2.0 + 0.3)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-7)  # symmetric
    trace = np.trace(root)
    assert trace_sqrt_cholesky(sigma1, sigma2) == pytest.approx(trace, rel=1e-9)
    assert trace_sqrt_eigen(sigma1, sigma2) == pytest.approx(trace, rel=1e-9)


def test_frechet_distance_handles_singular_covariances() -> None:
    rng = np.random.default_rng(5)
    mu1, sigma1 = gaussian_fit(rng.normal(size=(8, 20)))  # rank 7 < 20: Cholesky fails on both
    mu2, sigma2 = gaussian_fit(rng.normal(size=(12, 20)) + 0.5)
    assert trace_sqrt_cholesky(sigma1, sigma2) is None and trace_sqrt_cholesky(sigma2, sigma1) is None
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(0, None)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2) - 2 * np.sqrt(eigenvalues).sum()
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, sigma1, mu1, sigma1) < 1e-6 * np.trace(sigma1)


# ----------------------------------------------------------------------- running statistics
@pytest.mark.parametrize("chunks", [[300], [1, 7, 50, 242], [100, 100, 100]])
def test_running_statistics_equal_the_batch_mean_and_covariance_for_any_chunking(chunks: list[int]) -> None:
    features = torch.randn(300, 8) * 3.0 + 5.0  # float32 in, float64 sums
    stats = FeatureStats.zeros(8)
    for part in torch.split(features, chunks):
        stats.update(part)
    mu, sigma = gaussian_fit(features.double().numpy())
    assert int(stats.count) == 300
    np.testing.assert_allclose(stats.mean().numpy(), mu, rtol=1e-12)
    np.testing.assert_allclose(stats.covariance().numpy(), sigma, rtol=1e-6, atol=1e-6)


def test_packed_sums_add_up_like_an_all_reduce() -> None:
    features = torch.randn(90, 5)
    first, second = FeatureStats.from_features(features[:40]), FeatureStats.from_features(features[40:])
    summed = FeatureStats.unpack(first.pack() + second.pack(), 5)
    whole = FeatureStats.from_features(features)
    for a, b in zip((summed.count, summed.total, summed.outer), (whole.count, whole.total, whole.outer)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------ images, extractors
def test_images_become_rounded_uint8_and_grey_is_repeated_to_rgb() -> None:
    x = torch.tensor([-1.0, 1.0, 2.6 / 127.5 - 1, 2.4 / 127.5 - 1, 1.5, -3.0]).view(1, 1, 1, 6)
    assert to_uint8(x).flatten().tolist() == [0, 255, 3, 2, 255, 0]
    grey = torch.rand(2, 1, 4, 4)
    rgb = to_three_channels(grey)
    assert rgb.shape == (2, 3, 4, 4) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    with pytest.raises(ValueError):
        to_three_channels(torch.rand(2, 2, 4, 4))


def test_small_extractor_is_fixed_by_its_seed() -> None:
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    a, b, c = SmallConvFeatures(seed=0), SmallConvFeatures(seed=0), SmallConvFeatures(seed=1)
    assert a(images).shape == (5, 32)
    assert torch.equal(a(images), b(images))
    assert not torch.allclose(a(images), c(images))


def test_small_extractor_fid_is_zero_for_identical_sets_and_large_for_shifted_ones() -> None:
    extractor = SmallConvFeatures()
    a, b = digits(400), digits(400, offset=400)
    same = small_fid(extractor, a, a)
    other_draw = small_fid(extractor, a, b)  # same distribution, different images
    shifted = small_fid(extractor, a, (a + 0.5).clamp(-1, 1))
    assert same < 1e-9
    assert shifted > 5 * other_draw > 0


# ----------------------------------------------------------------------------------- KID
def test_unbiased_mmd_matches_a_direct_double_sum() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(5, 4)) + 0.5

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return (u @ v / 4 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert float(mmd2_unbiased(torch.tensor(x), torch.tensor(y))) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two() -> None:
    real, same, shifted = torch.randn(400, 8), torch.randn(400, 8), torch.randn(400, 8) + 1.0
    near_zero, _ = kernel_inception_distance(real, same, subset_size=200, num_subsets=20)
    far, _ = kernel_inception_distance(real, shifted, subset_size=200, num_subsets=20)
    assert abs(near_zero) < 0.05 < far


# ------------------------------------------------------------------------- splitting work
def test_rank_shares_cover_every_sample_once_and_batches_align_globally() -> None:
    assert [rank_share(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [rank_share(3, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert aligned_batches(32, 64, 16) == [(32, 48), (48, 64)]
    assert aligned_batches(5, 40, 16) == [(5, 16), (16, 32), (32, 40)]
    assert aligned_batches(0, 64, 16) == aligned_batches(0, 32, 16) + aligned_batches(32, 64, 16)
    assert batch_seed(0, 16) == batch_seed(0, 16) != batch_seed(0, 32) != batch_seed(1, 32)


@pytest.mark.parametrize("iterable", [False, True])
def test_reference_images_are_shared_out_over_ranks_exactly_once(iterable: bool) -> None:
    values = torch.arange(50.0).view(50, 1, 1, 1)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(TensorDataset(values))

    loader = DataLoader(Stream() if iterable else TensorDataset(values), batch_size=7)
    shares = [torch.cat(list(reference_batches(loader, 20, rank, 3, 4))).flatten() for rank in range(3)]
    assert [len(share) for share in shares] == [7, 7, 6]
    chosen = torch.cat(shares)
    expected = torch.arange(20.0) if iterable else reference_indices(50, 20).float()
    assert torch.equal(chosen, expected)


# -------------------------------------------------------------------------- reference files
@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_reference_files_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(4)
    stats = ReferenceStats(rng.normal(size=3), np.eye(3) * 2.0, 17, rng.normal(size=(17, 3)).astype(np.float32))
    path = tmp_path / f"ref{suffix}"
    if suffix == ".npz":
        save_reference_stats(path, stats)
        assert os.listdir(tmp_path) == ["ref.npz"]  # no temporary file left behind
    else:
        torch.save({"mu": torch.tensor(stats.mu), "sigma": torch.tensor(stats.sigma), "n": 17,
                    "features": torch.tensor(stats.features)}, path)
    loaded = load_reference_stats(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    np.testing.assert_array_equal(loaded.features, stats.features)
    assert loaded.n == 17


# ---------------------------------------------------------------------------- the callback
def tiny_image_model() -> LatentEBM:
    decoder = GaussianDecoder(MLPGenerator(4, [1, 8, 8], hidden=16), 0.3)
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=8), sampler=Langevin(5, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(3, 0.1))


def quiet_trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, inference_mode=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=str(tmp_path), accelerator="cpu", devices=1,
    )
    options.update(kwargs)
    return L.Trainer(callbacks=callbacks, **options)


def test_callback_logs_fid_caches_the_reference_and_reuses_it(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    fid = FID(feature_extractor=SmallConvFeatures(), num_samples=64, num_reference=128, cache_dir=str(cache))
    datamodule = ImageDataModule(dataset="digits", batch_size=50)
    trainer = quiet_trainer(tmp_path / "run1", [fid])
    trainer.fit(tiny_image_model(), datamodule)
    value = trainer.callback_metrics["val/fid"]
    assert torch.isfinite(value) and value > 0
    assert float(value) == pytest.approx(fid.last_metrics["fid"])

    # The cache holds the Gaussian fit of exactly the chosen 128 training images.
    (cached,) = glob.glob(str(cache / "*.npz"))
    reference = load_reference_stats(cached)
    indices = reference_indices(len(datamodule.train_dataset), 128)
    images = torch.stack([datamodule.train_dataset[int(i)][0] for i in indices])
    mu, sigma = gaussian_fit(SmallConvFeatures()(to_three_channels(images)).double().numpy())
    assert reference.n == 128
    np.testing.assert_allclose(reference.mu, mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(reference.sigma, sigma, rtol=1e-5, atol=1e-9)

    # A second run (another callback instance) reads the cache instead of recomputing.
    def fail(*args, **kwargs):
        raise AssertionError("reference statistics recomputed although cached")

    monkeypatch.setattr(FID, "compute_reference", fail)
    again = FID(feature_extractor=SmallConvFeatures(), num_samples=64, num_reference=128, cache_dir=str(cache))
    second = quiet_trainer(tmp_path / "run2", [again], inference_mode=True)
    model = tiny_image_model()
    second.fit(model, ImageDataModule(dataset="digits", batch_size=50))
    assert torch.isfinite(second.callback_metrics["val/fid"])
    result = second.test(model, ImageDataModule(dataset="digits", batch_size=50), verbose=False)
    assert np.isfinite(result[0]["test/fid"]) and result[0]["test/fid"] > 0


def test_cache_name_changes_with_the_extractor_and_the_number_of_reference_images(tmp_path: Path, monkeypatch) -> None:
    trainer = SimpleNamespace(datamodule=ImageDataModule(dataset="digits"), default_root_dir=str(tmp_path))

    def path(seed: int, num_reference: int, cache_dir: str | None = None) -> str:
        callback = FID(feature_extractor=SmallConvFeatures(seed=seed), num_reference=num_reference, cache_dir=cache_dir)
        callback.extractor(torch.device("cpu"))
        return callback.cache_path(trainer, loader=None)

    assert path(0, 100) == path(0, 100)
    assert len({path(0, 100), path(1, 100), path(0, 200)}) == 3
    assert os.path.dirname(path(0, 100)) == os.path.join(str(tmp_path), "fid_cache")
    monkeypatch.setenv("LEBM_TEST_FID_CACHE", str(tmp_path / "elsewhere"))
    assert path(0, 100, "$LEBM_TEST_FID_CACHE").startswith(str(tmp_path / "elsewhere"))


def test_callback_arguments_parse_from_a_recipe_style_config() -> None:
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[L.Callback])
    config = parser.parse_string(
        """
        callbacks:
          - class_path: lebm.callbacks.fid.FID
            init_args:
              num_samples: 500
              kid: true
              sampler: {class_path: lebm.samplers.Langevin, init_args: {n_steps: 100, step_size: 0.4}}
              feature_extractor: {class_path: lebm.metrics.SmallConvFeatures, init_args: {seed: 3}}
        """
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    (callback,) = instantiate(config).callbacks
    assert isinstance(callback, FID) and callback.num_samples == 500 and callback.kid
    assert callback.sampler.n_steps == 100 and callback.feature_extractor.name == "small-conv-s3-c3-w16-d32"


def test_kid_without_reference_features_fails_before_any_sampling(tmp_path: Path) -> None:
    path = tmp_path / "no_features.npz"
    save_reference_stats(path, ReferenceStats(np.zeros(32), np.eye(32), 10))
    callback = FID(feature_extractor=SmallConvFeatures(), reference_stats=str(path), kid=True)
    with pytest.raises(ValueError, match="features"):
        callback.reference_statistics(trainer=None, pl_module=None)


# ----------------------------------------------------------------------------------- DDP
class NoiseImages(L.LightningModule):
    """``generate(n)``: uniform noise images drawn from the global RNG, which the FID callback
    seeds per batch from the batch's first global sample index."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(1, 1)

    def generate(self, n: int, sampler=None) -> torch.Tensor:
        return torch.rand(n, 1, 8, 8, device=self.device) * 1.6 - 0.6

    def validation_step(self, batch, batch_idx: int) -> None:
        return None


class RecordMetrics(L.Callback):
    """Write this rank's FID/KID to ``<folder>/rank<r>.json`` (spawned processes cannot return them)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {key: float(trainer.callback_metrics[key]) for key in ("val/fid", "val/kid")}
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(values, handle)


def noise_reference(path: Path) -> None:
    """Reference statistics (with features) of 96 noise images, written to ``path``."""
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(96, 1, 8, 8, generator=generator) * 2 - 1
    features = SmallConvFeatures()(to_three_channels(images)).double()
    mu, sigma = FeatureStats.from_features(features).gaussian()
    save_reference_stats(path, ReferenceStats(mu, sigma, 96, features.float().numpy()))


def direct_fid(reference_path: Path, num_samples: int, batch_size: int) -> float:
    """FID of NoiseImages samples computed by hand: same per-batch seeds, numpy fit."""
    model, batches = NoiseImages(), []
    for lo, hi in aligned_batches(0, num_samples, batch_size):
        torch.manual_seed(batch_seed(0, lo))
        batches.append(model.generate(hi - lo))
    features = SmallConvFeatures()(to_three_channels(torch.cat(batches))).double().numpy()
    reference = load_reference_stats(reference_path)
    return frechet_distance(*gaussian_fit(features), reference.mu, reference.sigma)


def test_two_process_ddp_gives_the_single_process_fid(tmp_path: Path) -> None:
    reference = tmp_path / "reference.npz"
    noise_reference(reference)
    options = dict(num_samples=64, batch_size=16, reference_stats=str(reference), kid=True,
                   kid_subset_size=32, kid_subsets=5)
    loader = DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=2)

    single = FID(feature_extractor=SmallConvFeatures(), **options)
    quiet_trainer(tmp_path / "one", [single]).validate(NoiseImages(), loader, verbose=False)
    assert single.last_metrics["fid"] == pytest.approx(direct_fid(reference, 64, 16), rel=1e-9)

    records = tmp_path / "records"
    records.mkdir()
    ddp = quiet_trainer(
        tmp_path / "two", [FID(feature_extractor=SmallConvFeatures(), **options), RecordMetrics(str(records))],
        strategy="ddp_spawn", devices=2,
    )
    ddp.validate(NoiseImages(), loader, verbose=False)
    per_rank = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]
    for values in per_rank:
        assert values["val/fid"] == pytest.approx(single.last_metrics["fid"], rel=1e-6)
        assert values["val/kid"] == pytest.approx(single.last_metrics["kid"], rel=1e-5, abs=1e-7)


# ------------------------------------------------------------------------------ Inception
def inception_weights() -> str:
    if not os.environ.get("LEBM_DATA"):
        pytest.skip("LEBM_DATA is not set: no offline Inception weights to test the default extractor with")
    path = os.path.expandvars(OFFLINE_INCEPTION_WEIGHTS)
    if not os.path.isfile(path):
        pytest.skip(f"Inception weights not found at {path}")
    return path


def test_inception_extractor_gives_2048_finite_features_per_image() -> None:
    inception_weights()
    extractor = InceptionFeatures(OFFLINE_INCEPTION_WEIGHTS)  # also checks that $LEBM_DATA is expanded
    grey = digits(4)
    features = extractor(to_three_channels(grey))
    assert features.shape == (4, 2048) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    # float images are rounded to uint8 first: a change well below half a grey level changes nothing
    torch.testing.assert_close(extractor(to_three_channels(grey + 1e-4)), features)
