"""FID: torchmetrics' values against independent numpy/scipy ones, the reference cache, the
schedule, named callbacks, the best FID over training and its checkpoint, DDP, and torch-fidelity's
Inception. (CPU)"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import scipy.linalg
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lebm.callbacks.fid import FID, kid_name
from lebm.checkpoint_io import AtomicCheckpointIO
from lebm.data import ImageDataModule
from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FIDMetrics,
    InceptionFeatures,
    ReferenceState,
    SmallConvFeatures,
    load_reference_state,
    save_reference_state,
    to_three_channels,
    to_uint8,
)
from lebm.metrics.references import (
    aligned_batches,
    batch_seed,
    rank_batches,
    rank_share,
    reference_batches,
    reference_indices,
)
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer


# ------------------------------------------------------------------ independent references
def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance of the Gaussian fits of features ``a`` ``(N, D)`` and ``b`` ``(M, D)``,
    written out with numpy's covariance and scipy's matrix square root."""
    mu1, sigma1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, sigma2 = b.mean(0), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root))


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with KID's kernel ``(x . y / D + 1)^3``, as explicit double sums."""
    d = x.shape[1]
    kernel = lambda u, v: (u @ v.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within - 2 * kernel(x, y).mean())


def small_features(images: torch.Tensor) -> np.ndarray:
    """SmallConvFeatures of float images ``(N, 1 or 3, H, W)`` -> float64 ``(N, 32)``."""
    with torch.no_grad():
        return SmallConvFeatures()(to_three_channels(images)).double().numpy()


def state_of(features: np.ndarray, keep: bool = True) -> ReferenceState:
    """The reference state of features ``(n, D)``."""
    f = np.asarray(features, np.float64)
    return ReferenceState(f.sum(0), f.T @ f, len(f), np.asarray(features, np.float32) if keep else None)


def digits(n: int, offset: int = 0) -> torch.Tensor:
    """(n, 1, 8, 8) scikit-learn digits in [-1, 1]."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[offset : offset + n], dtype=torch.float32)
    return images[:, None] / 8.0 - 1.0


# -------------------------------------------------------------------------- the metric pair
def test_fid_metrics_match_scipy_and_kid_matches_direct_double_sums() -> None:
    real, fake = digits(300), (digits(300, offset=600) * 0.9 + 0.05)
    metrics = FIDMetrics(SmallConvFeatures(), kid=True, kid_subset_size=300, kid_subsets=3)
    for part in torch.split(real, [1, 7, 92, 200]):  # chunking does not matter
        metrics.update(part, real=True)
    for part in torch.split(fake, 128):
        metrics.update(part, real=False)
    values = metrics.compute(num_generated=300)
    a, b = small_features(real), small_features(fake)
    assert values["fid"] == pytest.approx(scipy_fid(a, b), rel=1e-8)
    # subsets as large as both sets are the whole sets, permuted: KID is their unbiased MMD^2
    assert values["kid"] == pytest.approx(direct_mmd2(a, b), rel=1e-8)


def test_fid_of_identical_sets_is_zero_and_of_shifted_ones_large() -> None:
    def fid(a: torch.Tensor, b: torch.Tensor) -> float:
        metrics = FIDMetrics(SmallConvFeatures())
        metrics.update(a, real=True)
        metrics.update(b, real=False)
        return metrics.compute(len(b))["fid"]

    a, b = digits(400), digits(400, offset=400)
    assert abs(fid(a, a)) < 1e-6
    assert fid(a, (a + 0.5).clamp(-1, 1)) > 5 * fid(a, b) > 0


def test_each_batch_is_embedded_once_for_fid_and_kid() -> None:
    class Counting(SmallConvFeatures):
        calls = 0

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            Counting.calls += 1
            return super().forward(images)

    metrics = FIDMetrics(Counting(), kid=True)
    metrics.update(digits(10), real=True)
    metrics.update(digits(10, offset=10), real=False)
    assert Counting.calls == 2


def test_reference_state_restores_the_metric_exactly_and_reads_back() -> None:
    real, fake = digits(120), digits(50, offset=500)
    computed = FIDMetrics(SmallConvFeatures(), kid=True, kid_subset_size=40, kid_subsets=4)
    computed.update(real, real=True)
    state = computed.reference_state()
    np.testing.assert_allclose(state.total, small_features(real).sum(0), rtol=1e-6)
    assert state.n == 120 and state.features.shape == (120, 32)

    restored = FIDMetrics(SmallConvFeatures(), kid=True, kid_subset_size=40, kid_subsets=4)
    restored.load_reference(state)
    for metrics in (computed, restored):
        metrics.update(fake, real=False)
    assert restored.compute(50) == computed.compute(50)
    back = restored.reference_state()
    for name in ("total", "outer", "features"):
        np.testing.assert_array_equal(getattr(back, name), getattr(state, name))


def test_reference_state_from_a_gaussian_fit_gives_the_same_fid() -> None:
    a, b = small_features(digits(200)), small_features(digits(100, offset=300))
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    for n in (0, 200):  # count unknown or known
        metrics = FIDMetrics(SmallConvFeatures())
        metrics.load_reference(ReferenceState.from_gaussian(mu, sigma, n))
        metrics.update(digits(100, offset=300), real=False)
        assert metrics.compute(100)["fid"] == pytest.approx(scipy_fid(a, b), rel=1e-8)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_reference_files_round_trip(tmp_path: Path, suffix: str) -> None:
    state = state_of(np.random.default_rng(4).normal(size=(17, 3)))
    path = tmp_path / f"ref{suffix}"
    if suffix == ".npz":
        save_reference_state(path, state)
        assert os.listdir(tmp_path) == ["ref.npz"]  # no temporary file left behind
    else:
        torch.save(
            {
                "total": torch.tensor(state.total),
                "outer": torch.tensor(state.outer),
                "n": 17,
                "features": torch.tensor(state.features),
            },
            path,
        )
    loaded = load_reference_state(path)
    for name in ("total", "outer", "features"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(state, name))
    assert loaded.n == 17


def test_a_reference_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="same feature extractor"):
        FIDMetrics(SmallConvFeatures()).load_reference(state_of(np.ones((4, 5))))


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
    assert a(images).shape == (5, 32) and a.num_features == 32
    assert torch.equal(a(images), b(images))
    assert not torch.allclose(a(images), c(images))


# ------------------------------------------------------------------------- splitting work
def test_rank_shares_cover_every_sample_once_and_batches_do_not_depend_on_the_rank_count() -> None:
    assert [rank_share(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [rank_share(3, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert aligned_batches(5, 40, 16) == [(5, 16), (16, 32), (32, 40)]
    for world_size in (1, 2, 3, 7):
        shares = [rank_batches(100, 16, rank, world_size) for rank in range(world_size)]
        assert sum(shares, []) == aligned_batches(0, 100, 16)
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
    expected = torch.arange(20.0) if iterable else reference_indices(50, 20).float()
    assert torch.equal(torch.cat(shares), expected)
    if iterable:
        with pytest.raises(ValueError, match="num_reference"):
            next(reference_batches(loader, None, 0, 1, 4))
    else:
        whole = torch.cat([torch.cat(list(reference_batches(loader, None, r, 3, 4))) for r in range(3)])
        assert torch.equal(whole.flatten(), torch.arange(50.0))


def test_the_first_reference_images_as_damcs_official_script_take_them() -> None:
    loader = DataLoader(TensorDataset(torch.arange(50.0).view(50, 1, 1, 1)), batch_size=7)
    shares = [torch.cat(list(reference_batches(loader, 20, rank, 3, 4, subset="first"))) for rank in range(3)]
    assert torch.equal(torch.cat(shares).flatten(), torch.arange(20.0))  # the first 20, over the ranks
    assert not torch.equal(reference_indices(50, 20), torch.arange(20))  # the default: a random 20
    assert torch.equal(reference_indices(10, 20, "first"), torch.arange(10))  # a smaller split: all of it
    with pytest.raises(ValueError, match="reference_subset must be one of"):
        FID(reference_subset="last")


# ---------------------------------------------------------------------------- the callback
def tiny_image_model() -> LatentEBM:
    decoder = GaussianDecoder(MLPGenerator(4, [1, 8, 8], hidden=16), 0.3)
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=8), sampler=Langevin(5, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(3, 0.1))


def fid_trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs) -> L.Trainer:
    """A short quiet run: one epoch of two training batches and one validation batch."""
    options = dict(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        inference_mode=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
    )
    options.update(kwargs)
    return quiet_trainer(callbacks=callbacks, **options)


def test_callback_fid_equals_scipy_on_the_same_features_and_caches_the_reference(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    fid = FID(
        feature_extractor=SmallConvFeatures(), num_samples=64, batch_size=32, num_reference=128, cache_dir=str(cache)
    )
    datamodule = ImageDataModule(dataset="digits", batch_size=50)
    trainer = fid_trainer(tmp_path / "run1", [fid])
    model = tiny_image_model()
    trainer.fit(model, datamodule)
    value = float(trainer.callback_metrics["val/fid"])
    assert value == pytest.approx(fid.last_metrics["fid"]) and value > 0

    # The same generated images (same per-batch seeds) and reference images, by hand.
    indices = reference_indices(len(datamodule.train_dataset), 128)
    reference = torch.stack([datamodule.train_dataset[int(i)][0] for i in indices])
    model.eval()
    generated = []
    for lo, hi in aligned_batches(0, 64, 32):
        torch.manual_seed(batch_seed(0, lo))
        generated.append(model.generate(hi - lo).detach())
    assert value == pytest.approx(scipy_fid(small_features(reference), small_features(torch.cat(generated))), rel=1e-7)

    # The cache holds the metric's real-image state of exactly those 128 images.
    (cached,) = glob.glob(str(cache / "fid_ref_train_128_*.npz"))
    state = load_reference_state(cached)
    assert state.n == 128 and state.features is None
    np.testing.assert_allclose(state.total, small_features(reference).sum(0), rtol=1e-6)

    # Another callback reads the cache instead of embedding the reference again.
    def fail(*args, **kwargs):
        raise AssertionError("reference recomputed although cached")

    monkeypatch.setattr(FID, "compute_reference", fail)
    again = FID(
        feature_extractor=SmallConvFeatures(), num_samples=64, batch_size=32, num_reference=128, cache_dir=str(cache)
    )
    result = fid_trainer(tmp_path / "run2", [again], inference_mode=True).test(
        model, ImageDataModule(dataset="digits", batch_size=50), verbose=False
    )
    assert result[0]["test/fid"] == pytest.approx(value, rel=1e-9)  # same model, same seeds


def test_cache_name_depends_on_the_extractor_and_the_reference_size(tmp_path: Path, monkeypatch) -> None:
    trainer = SimpleNamespace(datamodule=ImageDataModule(dataset="digits"), default_root_dir=str(tmp_path))

    def path(seed: int, num_reference: int | None, cache_dir: str | None = None) -> str:
        callback = FID(feature_extractor=SmallConvFeatures(seed=seed), num_reference=num_reference, cache_dir=cache_dir)
        return callback.cache_path(trainer, loader=None)

    assert path(0, 100) == path(0, 100)
    assert len({path(0, 100), path(1, 100), path(0, 200), path(0, None)}) == 4
    first = FID(feature_extractor=SmallConvFeatures(seed=0), num_reference=100, reference_subset="first")
    assert first.cache_path(trainer, loader=None) != path(0, 100)  # other images, another cache
    assert os.path.basename(path(0, None)).startswith("fid_ref_train_all_")
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
              every_n_epochs: 50
              first_epoch: 51
              num_reference: null
              feature_extractor: {class_path: lebm.metrics.SmallConvFeatures, init_args: {seed: 3}}
          - class_path: lebm.callbacks.fid.FID
            init_args:
              name: fid_long_chain
              sampler: {class_path: lebm.samplers.Langevin, init_args: {n_steps: 100, step_size: 0.4}}
              generate_kwargs: {temperature: 0.5}
        """
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    first, second = instantiate(config).callbacks
    assert isinstance(first, FID) and first.num_samples == 500 and first.kid and first.num_reference is None
    assert first.feature_extractor.name == "small-conv-s3-c3-w16-d32" and first.first_epoch == 51
    assert second.name == "fid_long_chain" and second.kid_name == "kid_long_chain"
    assert second.sampler.n_steps == 100 and second.generate_kwargs == {"temperature": 0.5}
    assert first.state_key != second.state_key


def test_names_and_argument_errors() -> None:
    assert kid_name("fid") == "kid" and kid_name("fid_ebm") == "kid_ebm" and kid_name("gen") == "gen_kid"
    with pytest.raises(ValueError, match="given twice"):
        FID(sampler=Langevin(2, 0.1), generate_kwargs={"sampler": Langevin(2, 0.1)})
    with pytest.raises(ValueError, match="first_epoch"):
        FID(first_epoch=0)
    with pytest.raises(RuntimeError, match="state_key"):  # two callbacks logging the same name
        quiet_trainer(callbacks=[FID(), FID()])


def test_kid_without_reference_features_fails_before_any_sampling(tmp_path: Path) -> None:
    path = tmp_path / "no_features.npz"
    save_reference_state(path, state_of(np.random.default_rng(0).normal(size=(10, 32)), keep=False))
    callback = FID(feature_extractor=SmallConvFeatures(), reference_stats=str(path), kid=True)
    with pytest.raises(ValueError, match="features"):
        callback.reference_state(trainer=None, pl_module=None)


# ----------------------------------------------------------------------- schedule and names
class NoiseImages(L.LightningModule):
    """``generate(n, shift=0)``: uniform noise images (plus ``shift``) from the global RNG, which
    the FID callback seeds per batch; trains one weight so that ``global_step`` advances, and can
    ask to stop after the first batch of epoch ``stop_in_epoch`` (1-based)."""

    def __init__(self, stop_in_epoch: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.stop_in_epoch = stop_in_epoch

    def generate(self, n: int, sampler=None, shift: float = 0.0) -> torch.Tensor:
        return torch.rand(n, 1, 8, 8, device=self.device) * 1.6 - 0.6 + shift

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.stop_in_epoch == self.current_epoch + 1:
            self.trainer.should_stop = True
        return (self.weight - batch[0].mean()) ** 2

    def validation_step(self, batch, batch_idx: int) -> None:
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class DriftingNoise(NoiseImages):
    """NoiseImages whose samples are shifted by ``shifts[epoch]`` (0-based epoch): the FID goes up
    and down over training, as a real run's does."""

    def __init__(self, shifts: list[float], stop_in_epoch: int | None = None) -> None:
        super().__init__(stop_in_epoch)
        self.shifts = shifts

    def generate(self, n: int, sampler=None) -> torch.Tensor:
        return super().generate(n, shift=self.shifts[self.current_epoch])


class RecordedFID(FID):
    """An FID callback that records the ``global_step`` of each evaluation (the tests train 2
    batches per epoch: epoch ``e`` ends at step ``2 e``) and the model's weights it scored."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        self.steps.append(trainer.global_step)
        self.weights.append({key: value.clone() for key, value in pl_module.state_dict().items()})
        return super().evaluate(trainer, pl_module)


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append(dict(metrics))


def noise_reference(path: Path) -> None:
    """The reference state (with features) of 96 noise images, written to ``path``."""
    images = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    save_reference_state(path, state_of(small_features(images)))


def loaders(n_train_batches: int = 4) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(TensorDataset(torch.rand(2 * n_train_batches, 1)), batch_size=2)
    return train, DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)


def noise_fid(tmp_path: Path, **kwargs: Any) -> RecordedFID:
    reference = tmp_path / "reference.npz"
    if not reference.exists():
        noise_reference(reference)
    options = dict(feature_extractor=SmallConvFeatures(), num_samples=32, batch_size=16, reference_stats=str(reference))
    return RecordedFID(**{**options, **kwargs})


def test_schedule_scores_after_first_epoch_every_n_and_the_last(tmp_path: Path) -> None:
    fid = noise_fid(tmp_path, every_n_epochs=2, first_epoch=2)
    trainer = fid_trainer(tmp_path / "run", [fid], max_epochs=5)
    trainer.fit(NoiseImages(), *loaders())  # limit_train_batches=2 of 4 batches per epoch
    assert fid.steps == [4, 8, 10]  # after epochs 2, 4 and 5
    assert np.isfinite(float(trainer.callback_metrics["val/fid"]))


def test_schedule_of_the_official_script_and_the_default() -> None:
    official, default = FID(every_n_epochs=50, first_epoch=51), FID(every_n_epochs=50)
    assert [e for e in range(1, 202) if official.scheduled(e)] == [51, 101, 151, 201]
    assert [e for e in range(1, 202) if default.scheduled(e)] == [50, 100, 150, 200]


def test_a_final_epoch_on_the_schedule_and_mid_epoch_validations_score_once(tmp_path: Path) -> None:
    fid = noise_fid(tmp_path, every_n_epochs=1)
    trainer = fid_trainer(tmp_path / "run", [fid], max_epochs=2, val_check_interval=0.5)
    trainer.fit(NoiseImages(), *loaders(n_train_batches=2))  # validations after 1, 2, 3, 4 steps
    assert fid.steps == [2, 4]


@pytest.mark.parametrize("validation", [True, False])
def test_a_run_that_stops_itself_gets_its_final_model_scored(tmp_path: Path, validation: bool) -> None:
    fid = noise_fid(tmp_path, every_n_epochs=10, log_best=True, save_best=True)
    logger = RecordingLogger()
    limit_val = 1 if validation else 0  # without validation, on_train_end scores it
    folder = tmp_path / "checkpoints"
    checkpoints = ModelCheckpoint(dirpath=folder, save_top_k=0)  # the run's checkpoint folder; it saves nothing
    trainer = fid_trainer(
        tmp_path / "run",
        [fid, checkpoints],
        max_epochs=10,
        logger=logger,
        limit_val_batches=limit_val,
        enable_checkpointing=True,
    )
    trainer.fit(NoiseImages(stop_in_epoch=3), *loaders())
    assert fid.steps == [5]  # after the 1st batch of the 3rd epoch, not after the 10th epoch
    logged = [record["val/fid"] for record in logger.records if "val/fid" in record]
    assert logged == [pytest.approx(fid.last_metrics["fid"])]
    assert float(trainer.callback_metrics["val/fid"]) == pytest.approx(fid.last_metrics["fid"])
    # the only FID is the best, logged beside it, and its model saved in the run's checkpoint folder
    assert [record["val/fid_best"] for record in logger.records if "val/fid_best" in record] == logged
    assert torch.load(folder / "best-fid.ckpt", weights_only=False)["global_step"] == 5


class RecordingCheckpointIO(AtomicCheckpointIO):
    """lebm's atomic checkpoint writer, recording the paths it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        self.paths.append(str(path))
        super().save_checkpoint(checkpoint, path, storage_options)


def best_fid_run(tmp_path: Path, shifts: list[float]) -> tuple[RecordedFID, RecordingLogger, Path, list[str]]:
    """A fit of ``len(shifts)`` epochs scoring the FID after each, with ``log_best`` and
    ``save_best``: the callback, the logger, the checkpoint folder, the paths the checkpoint I/O wrote."""
    fid = noise_fid(tmp_path, log_best=True, save_best=True)
    logger, folder, io = RecordingLogger(), tmp_path / "checkpoints", RecordingCheckpointIO()
    checkpoints = ModelCheckpoint(dirpath=folder, save_top_k=0)  # the run's checkpoint folder; it saves nothing
    trainer = fid_trainer(
        tmp_path / "run",
        [fid, checkpoints],
        max_epochs=len(shifts),
        logger=logger,
        enable_checkpointing=True,
        plugins=[io],
    )
    trainer.fit(DriftingNoise(shifts), *loaders())
    return fid, logger, folder, io.paths


def test_the_best_fid_is_the_lowest_so_far_and_its_checkpoint_holds_the_model_that_scored_it(tmp_path: Path) -> None:
    fid, logger, folder, written = best_fid_run(tmp_path, shifts=[0.5, 0.05, 0.4])
    fids = [record["val/fid"] for record in logger.records if "val/fid" in record]
    bests = [record["val/fid_best"] for record in logger.records if "val/fid_best" in record]
    lowest = int(np.argmin(fids))
    assert len(fids) == 3 and lowest == 1  # the lowest is neither the first value nor the last
    assert bests == [min(fids[: i + 1]) for i in range(3)]
    # best-fid.ckpt, written by the run's (atomic) checkpoint I/O at the first two values, holds the
    # model of the lowest FID, not the last one, and the callback's best
    assert written == [str(folder / "best-fid.ckpt")] * 2
    saved = torch.load(folder / "best-fid.ckpt", weights_only=False)
    assert saved["global_step"] == fid.steps[lowest] != fid.steps[-1]
    for key, value in fid.weights[lowest].items():
        torch.testing.assert_close(saved["state_dict"][key], value, rtol=0, atol=0)
    assert not torch.equal(saved["state_dict"]["weight"], fid.weights[-1]["weight"])
    state = saved["callbacks"][fid.state_key]["best"]
    assert state["fid"] == pytest.approx(min(fids)) and state["epoch"] == lowest + 1
    # a resumed run goes on from the same best
    resumed = FID(log_best=True)
    resumed.load_state_dict(fid.state_dict())
    assert resumed.best == fid.best and fid.best["path"] == str(folder / "best-fid.ckpt")
    assert "val/fid_best" in fid.logged_metric_names and "val/fid_best" not in FID().logged_metric_names


def test_damc_image_recipes_keep_the_best_fids_and_the_damc_priors_checkpoint_as_the_official_script() -> None:
    recipes = Path(__file__).resolve().parents[2] / "recipes" / "damc"
    for name in ("svhn", "cifar10", "celeba64"):
        assert "_evaluation.yaml" in yaml.safe_load((recipes / f"{name}.yaml").read_text())["include"]
    fragment = yaml.safe_load((recipes / "_evaluation.yaml").read_text())
    fids = {
        callback["init_args"].get("name", "fid"): callback["init_args"]
        for callback in fragment["trainer"]["callbacks+"]
        if callback["class_path"] == "lebm.callbacks.FID"
    }
    assert all(fid["num_reference"] == 50000 and fid["reference_subset"] == "first" for fid in fids.values())
    assert fids["fid"]["log_best"] and fids["fid"]["save_best"]  # fid_best and best.pth.tar
    assert fids["fid_ebm"]["log_best"] and not fids["fid_ebm"].get("save_best", False)  # fid_best_ only


def test_save_best_without_checkpoints_says_it_saves_nothing() -> None:
    fid = FID(save_best=True, feature_extractor=SmallConvFeatures(seed=0))  # (Inception's weights: not needed here)
    with pytest.warns(UserWarning, match="save_best=True but this run saves no checkpoints"):
        fid.setup(quiet_trainer(), NoiseImages(), "fit")


def test_two_named_callbacks_keep_their_own_state_and_share_the_reference_cache(tmp_path: Path, monkeypatch) -> None:
    computed = []
    original = FID.compute_reference

    def counting(self, *args, **kwargs):
        computed.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FID, "compute_reference", counting)
    common = dict(
        feature_extractor=SmallConvFeatures(),
        num_samples=32,
        batch_size=16,
        reference="val",
        cache_dir=str(tmp_path / "cache"),
        kid=True,
        kid_subset_size=16,
        kid_subsets=3,
    )
    raw = FID(**common)
    shifted = FID(name="fid_shifted", generate_kwargs={"shift": 0.4}, **common)
    train, val = loaders()
    val = DataLoader(TensorDataset(torch.rand(40, 1, 8, 8) * 2 - 1), batch_size=8)
    trainer = fid_trainer(tmp_path / "both", [raw, shifted])
    trainer.validate(NoiseImages(), val, verbose=False)
    metrics = trainer.callback_metrics
    assert computed == ["fid"] and len(os.listdir(tmp_path / "cache")) == 1  # the second one read the cache
    assert float(metrics["val/fid"]) == pytest.approx(raw.last_metrics["fid"])
    assert float(metrics["val/kid"]) == pytest.approx(raw.last_metrics["kid"])
    assert float(metrics["val/fid_shifted"]) == pytest.approx(shifted.last_metrics["fid"])
    assert float(metrics["val/kid_shifted"]) == pytest.approx(shifted.last_metrics["kid"])
    assert shifted.last_metrics["fid"] > raw.last_metrics["fid"]

    alone = FID(**common)  # the same callback on its own gives the same number
    fid_trainer(tmp_path / "alone", [alone]).validate(NoiseImages(), val, verbose=False)
    assert alone.last_metrics == raw.last_metrics

    # a fitted trainer saves both states, each under its own key
    checkpoint = tmp_path / "both.ckpt"
    fitted = fid_trainer(tmp_path / "fit", [FID(**common), FID(name="fid_shifted", **common)])
    fitted.fit(NoiseImages(), train, val)
    fitted.save_checkpoint(checkpoint)
    states = torch.load(checkpoint, weights_only=False)["callbacks"]
    assert {"FID{'name': 'fid'}", "FID{'name': 'fid_shifted'}"} <= set(states)
    assert states["FID{'name': 'fid'}"]["scored_step"] == fitted.global_step


# ----------------------------------------------------------------------------------- DDP
class RecordMetrics(L.Callback):
    """Write this rank's logged FID/KID and the FID callback's own float64 values to
    ``<folder>/rank<r>.json`` (spawned processes cannot return them)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {key: float(trainer.callback_metrics[key]) for key in ("val/fid", "val/kid")}
        (fid,) = [callback for callback in trainer.callbacks if isinstance(callback, FID)]
        values.update(fid.last_metrics)
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(values, handle)


def direct_fid(reference: torch.Tensor, num_samples: int, batch_size: int) -> float:
    """FID of NoiseImages samples by hand: the same per-batch seeds, scipy's distance."""
    model, batches = NoiseImages(), []
    for lo, hi in aligned_batches(0, num_samples, batch_size):
        torch.manual_seed(batch_seed(0, lo))
        batches.append(model.generate(hi - lo))
    return scipy_fid(small_features(reference), small_features(torch.cat(batches)))


@pytest.mark.slow
def test_two_process_ddp_gives_the_single_process_fid_and_reference(tmp_path: Path) -> None:
    # 37 reference images (19 + 18 per rank); 72 samples = 5 batches of 16 (3 + 2 per rank)
    images = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    loader = DataLoader(TensorDataset(images), batch_size=8)
    options = dict(num_samples=72, batch_size=16, reference="val", kid=True, kid_subset_size=32, kid_subsets=5)

    single = FID(feature_extractor=SmallConvFeatures(), cache_dir=str(tmp_path / "one"), **options)
    fid_trainer(tmp_path / "one", [single]).validate(NoiseImages(), loader, verbose=False)
    assert single.last_metrics["fid"] == pytest.approx(direct_fid(images, 72, 16), rel=1e-7)

    records = tmp_path / "records"
    records.mkdir()
    ddp = fid_trainer(
        tmp_path / "two",
        [
            FID(feature_extractor=SmallConvFeatures(), cache_dir=str(tmp_path / "two"), **options),
            RecordMetrics(str(records)),
        ],
        strategy=forked_ranks(lightning=True),
        devices=2,
    )
    ddp.validate(NoiseImages(), loader, verbose=False)
    per_rank = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]
    for values in per_rank:
        assert values["fid"] == pytest.approx(single.last_metrics["fid"], rel=1e-9)
        assert values["kid"] == pytest.approx(single.last_metrics["kid"], rel=1e-9, abs=1e-12)
        assert values["val/fid"] == pytest.approx(values["fid"], rel=1e-6)  # Lightning logs float32
        assert values["val/kid"] == pytest.approx(values["kid"], rel=1e-6, abs=1e-9)
    # the reference embedded by two processes is the one embedded by one
    (one,), (two,) = (glob.glob(str(tmp_path / folder / "*.npz")) for folder in ("one", "two"))
    one, two = load_reference_state(one), load_reference_state(two)
    assert one.n == two.n == 37
    np.testing.assert_array_equal(one.features, two.features)
    np.testing.assert_allclose(two.outer, one.outer, rtol=1e-12)


# ------------------------------------------------------------------------------ Inception
def inception_weights() -> str:
    if not os.environ.get("LEBM_DATA"):
        pytest.skip("LEBM_DATA is not set: no offline Inception weights to test the default extractor with")
    path = os.path.expandvars(OFFLINE_INCEPTION_WEIGHTS)
    if not os.path.isfile(path):
        pytest.skip(f"Inception weights not found at {path}")
    return path


@pytest.mark.slow
def test_inception_features_are_torch_fidelitys_and_torchmetrics_without_antialiasing() -> None:
    from torchmetrics.image.fid import NoTrainInceptionV3

    path = inception_weights()
    extractor = InceptionFeatures(OFFLINE_INCEPTION_WEIGHTS)  # also checks that $LEBM_DATA is expanded
    grey = torch.cat([digits(1), digits(1, offset=50) * 0.5])
    features = extractor(to_three_channels(grey))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    # float images are rounded to uint8 first: a change well below half a grey level changes nothing
    torch.testing.assert_close(extractor(to_three_channels(grey + 1e-4)), features)
    # torchmetrics' own copy of the network agrees with its TF-like resize (to float rounding: ours
    # runs its convolutions channels-last), not with antialiasing
    as_uint8 = to_uint8(to_three_channels(grey))
    exact = NoTrainInceptionV3("inception-v3-compat", ["2048"], path, antialias=False)(as_uint8)
    blurred = NoTrainInceptionV3("inception-v3-compat", ["2048"], path, antialias=True)(as_uint8)
    torch.testing.assert_close(features, exact, rtol=0, atol=1e-4)
    assert (blurred - features).abs().max() > 0.1


# ------------------------------------------------------------------ where the Inception weights come from
@pytest.fixture
def no_weights_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ``$LEBM_DATA``, an empty torch hub folder, and the download host unreachable."""
    import lebm.metrics.fid as fid_metrics

    monkeypatch.delenv("LEBM_DATA", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(fid_metrics, "host_reachable", lambda address, timeout_s: False)
    return tmp_path


def test_the_inception_weights_come_from_the_path_the_data_folder_the_cache_or_a_download(
    no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. Each source in turn, and one line naming feature_extractor_weights_path when none works."""
    import lebm.metrics.fid as fid_metrics
    from lebm.data.errors import DataError

    with pytest.raises(DataError, match=r"^FID needs the Inception weights: .* give feature_extractor_weights_path"):
        fid_metrics.inception_weights(None)
    with pytest.raises(DataError, match=r"^feature_extractor_weights_path '.*/missing.pth' .* is not a file"):
        fid_metrics.inception_weights(str(no_weights_anywhere / "missing.pth"))
    offline = no_weights_anywhere / "data" / "fid_inception" / "weights-inception-2015-12-05-fp32.pth"
    offline.parent.mkdir(parents=True)
    offline.write_bytes(b"weights")
    assert fid_metrics.inception_weights(str(offline)) == str(offline)
    monkeypatch.setenv("LEBM_DATA", str(no_weights_anywhere / "data"))
    assert fid_metrics.inception_weights(None) == str(offline)  # the copy where the data live
    monkeypatch.delenv("LEBM_DATA")
    cached = no_weights_anywhere / "hub" / "checkpoints" / fid_metrics.DOWNLOADED_INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert fid_metrics.inception_weights(None) is None  # torch-fidelity's cached copy
    cached.unlink()
    monkeypatch.setattr(fid_metrics, "host_reachable", lambda address, timeout_s: True)
    assert fid_metrics.inception_weights(None) is None  # torch-fidelity downloads them


@pytest.mark.usefixtures("no_weights_anywhere")
def test_fid_without_weights_stops_the_run_before_it_trains() -> None:
    """CPU. The default extractor with no way to its weights: the fit stops at set-up, at step 0
    (it used to train its first epoch, then fail inside torch.hub's download)."""
    from lebm.data.errors import DataError
    from tests.models.cases import latent_ebm, toy_loader

    model = latent_ebm()
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[FID(reference="val")],
    )  # fmt: skip
    with pytest.raises(DataError, match="FID needs the Inception weights"):
        trainer.fit(model, train_dataloaders=toy_loader(1), val_dataloaders=toy_loader(1))
    assert trainer.global_step == 0


# ------------------------------------------------------------------ the best FID, and the reference subset
class BestTrainer(SimpleNamespace):
    """What ``FID._record_best`` reads of a Trainer; records the checkpoints it is asked to save."""

    def __init__(self, folder: Path, fast_dev_run: bool = False) -> None:
        super().__init__(
            current_epoch=0, global_step=0, fast_dev_run=fast_dev_run, default_root_dir=str(folder),
            checkpoint_callback=SimpleNamespace(dirpath=str(folder / "checkpoints")), saved=[],
        )  # fmt: skip

    def save_checkpoint(self, path: str, weights_only: bool = False) -> None:
        self.saved.append((self.global_step, path))


def scored(callback: FID, trainer: BestTrainer, values: list[float]) -> list[dict]:
    """Each value scored in turn at steps 10, 20, ...; what ``_record_best`` logged each time."""
    logged = []
    for index, value in enumerate(values):
        trainer.global_step, trainer.current_epoch = 10 * (index + 1), index
        callback.last_metrics = {"fid": value}
        logged.append(callback._record_best(trainer))
    return logged


def test_a_nan_first_fid_is_never_the_best_and_the_lowest_is_saved(tmp_path: Path) -> None:
    """CPU. A diverged first evaluation (NaN) is no best: the first finite FID is, a lower one
    replaces it, a higher one does not; best-fid.ckpt is written at each new lowest only."""
    callback = FID(feature_extractor=SmallConvFeatures(seed=0), log_best=True, save_best=True)
    trainer = BestTrainer(tmp_path)
    logged = scored(callback, trainer, [float("nan"), 9.0, 7.0, 8.0])
    assert logged == [{}, {"val/fid_best": 9.0}, {"val/fid_best": 7.0}, {"val/fid_best": 7.0}]
    best = str(tmp_path / "checkpoints" / "best-fid.ckpt")
    assert trainer.saved == [(20, best), (30, best)]
    assert callback.best == {"fid": 7.0, "step": 30, "epoch": 3, "path": best}


def test_a_fast_dev_run_keeps_the_best_but_writes_no_checkpoint(tmp_path: Path) -> None:
    """CPU. ``fast_dev_run`` writes nothing into the run folder: no best-fid.ckpt."""
    callback = FID(feature_extractor=SmallConvFeatures(seed=0), save_best=True)
    trainer = BestTrainer(tmp_path, fast_dev_run=True)
    scored(callback, trainer, [5.0])
    assert trainer.saved == [] and callback.best["fid"] == 5.0 and callback.best["path"] is None


def test_the_reference_subset_reaches_the_reference_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU. ``reference_subset="first"`` (the DAMC recipes' first 50,000) is what picks the images."""
    import lebm.callbacks.fid as fid_callback

    seen = {}

    def batches(loader, num_reference, rank, world_size, batch_size, subset):
        seen.update(num_reference=num_reference, subset=subset)
        return [torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1]

    monkeypatch.setattr(fid_callback, "reference_batches", batches)
    callback = FID(feature_extractor=SmallConvFeatures(seed=0), num_reference=4, reference_subset="first")
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    state = callback.compute_reference(trainer, SimpleNamespace(device=torch.device("cpu")), loader=None)
    assert seen == {"num_reference": 4, "subset": "first"} and state.n == 4


def test_the_callback_keeps_the_offline_weights_it_finds_at_set_up(
    no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. ``FID()`` without a weights path, ``$LEBM_DATA`` holding the offline copy: its set-up
    keeps that file's path, which the Inception network is later built from (not None, which would
    send it to torch-fidelity's download at the first evaluation)."""
    from types import SimpleNamespace

    from lebm.callbacks import FID

    offline = no_weights_anywhere / "data" / "fid_inception" / "weights-inception-2015-12-05-fp32.pth"
    offline.parent.mkdir(parents=True)
    offline.write_bytes(b"weights")
    monkeypatch.setenv("LEBM_DATA", str(no_weights_anywhere / "data"))
    callback = FID()
    assert callback.feature_extractor_weights_path is None
    callback.setup(SimpleNamespace(), None, "validate")
    assert callback.feature_extractor_weights_path == str(offline)
