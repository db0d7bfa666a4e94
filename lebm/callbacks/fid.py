"""FID (and optionally KID) of generated images against cached reference statistics.

In a recipe::

    trainer:
      callbacks:
        - class_path: lebm.callbacks.FID
          init_args:
            num_samples: 50000
            feature_extractor_weights_path: $LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth
            sampler: {class_path: lebm.samplers.Langevin, init_args: {n_steps: 100, step_size: 0.4}}

Under DDP every rank generates and embeds its share of the samples (and of the reference
images); the float64 feature sums are all-reduced, so every rank logs the same number, equal to
what one process computes from the same samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from lebm.data.paths import expand_root
from lebm.metrics.fid import (
    FeatureStats,
    InceptionFeatures,
    ReferenceStats,
    extractor_fingerprint,
    frechet_distance,
    kernel_inception_distance,
    load_reference_stats,
    save_reference_stats,
    to_three_channels,
)
from lebm.models.base import batch_observations
from lebm.samplers import Sampler

#: Seed of the random subset of reference images (part of the cache key).
REFERENCE_SUBSET_SEED = 0
REFERENCE_SPLITS = ("train", "val")


# ---------------------------------------------------------------------- splitting the work
def rank_share(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The global index range ``[start, stop)`` of ``rank``'s share of ``total`` items.

    Every rank but the last ones gets ``ceil(total / world_size)``; the shares are contiguous,
    in rank order, and add up to exactly ``total`` (late ranks may get fewer, or none).
    """
    per_rank = math.ceil(total / world_size)
    start = min(rank * per_rank, total)
    return start, min(start + per_rank, total)


def aligned_batches(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` into batches whose edges fall on multiples of ``batch_size``.

    Batches then cover the same global indices whatever the number of ranks, as long as the
    rank shares themselves start on multiples of ``batch_size``.
    """
    edges = [start, *range((start // batch_size + 1) * batch_size, stop, batch_size), stop]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def batch_seed(seed: int, start: int) -> int:
    """The RNG seed of the generated batch that starts at global sample index ``start``."""
    return int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


# ----------------------------------------------------------------------- collective helpers
def sum_across_ranks(trainer: L.Trainer, tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all ranks (the tensor itself on one process)."""
    if trainer.world_size == 1:
        return tensor
    return trainer.strategy.reduce(tensor.clone(), reduce_op="sum")


def gather_rows(trainer: L.Trainer, rows: Tensor) -> Tensor:
    """Concatenate every rank's ``rows`` ``(n_rank, D)`` in rank order -> ``(sum n_rank, D)``.

    Shares may differ in size: they are padded to the largest before the all-gather.
    """
    if trainer.world_size == 1:
        return rows
    counts = trainer.strategy.all_gather(torch.tensor([rows.shape[0]], device=rows.device)).reshape(-1).tolist()
    padded = rows.new_zeros(max(counts), rows.shape[1])
    padded[: rows.shape[0]] = rows
    gathered = trainer.strategy.all_gather(padded)
    return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])


def agreed_dim(trainer: L.Trainer, stats: FeatureStats | None, device: torch.device) -> int:
    """The feature dimension, known on every rank even where ``stats`` is None (no share)."""
    local = torch.tensor(0 if stats is None else stats.dim, dtype=torch.int64, device=device)
    dim = int(trainer.strategy.reduce(local, reduce_op="max")) if trainer.world_size > 1 else int(local)
    if dim == 0:
        raise ValueError("no reference images on any rank")
    return dim


def random_generator_devices(device: torch.device) -> list[torch.device]:
    """Devices whose RNG ``torch.random.fork_rng`` must save and restore."""
    return [device] if device.type == "cuda" else []


# -------------------------------------------------------------------------- reference data
def reference_loader(trainer: L.Trainer, split: str) -> DataLoader:
    """The datamodule's ``train``/``val`` loader, or the loader given to ``Trainer.fit``."""
    datamodule = trainer.datamodule
    if datamodule is not None:
        return getattr(datamodule, f"{split}_dataloader")()
    loader = trainer.train_dataloader if split == "train" else trainer.val_dataloaders
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        raise RuntimeError(
            f"FID has no {split} images to compare with: give the Trainer a datamodule, or pass "
            "reference_stats=<.npz with mu, sigma> to the callback"
        )
    return loader


def describe_reference(trainer: L.Trainer, loader: DataLoader, split: str) -> dict[str, Any]:
    """What identifies the reference images: the datamodule's class and hyperparameters (or
    the dataset's class and length when there is no datamodule)."""
    datamodule = trainer.datamodule
    if datamodule is not None:
        kind = type(datamodule)
        return {
            "datamodule": f"{kind.__module__}.{kind.__qualname__}",
            "hparams": dict(getattr(datamodule, "hparams", {}) or {}),
            "split": split,
        }
    rank_zero_warn(
        "FID caches reference statistics keyed by the dataset's class and length only (no "
        "datamodule); delete the cache or pass reference_stats=... if the data changes"
    )
    dataset = loader.dataset
    length = len(dataset) if hasattr(dataset, "__len__") else None
    return {"dataset": type(dataset).__qualname__, "length": length, "split": split}


def reference_indices(length: int, limit: int) -> Tensor:
    """At most ``limit`` dataset positions: all of them, or a fixed random subset (sorted)."""
    if length <= limit:
        return torch.arange(length)
    generator = torch.Generator().manual_seed(REFERENCE_SUBSET_SEED)
    return torch.randperm(length, generator=generator)[:limit].sort().values


def reference_batches(loader: DataLoader, limit: int, rank: int, world_size: int, batch_size: int) -> Iterator[Tensor]:
    """This rank's share of (at most) ``limit`` reference images, in batches ``(B, C, H, W)``.

    Map-style datasets give a fixed random subset read in order; other loaders are read from the
    start until ``limit`` images have been seen.
    """
    dataset: Dataset = loader.dataset
    if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        indices = reference_indices(len(dataset), limit)
        start, stop = rank_share(len(indices), rank, world_size)
        subset = Subset(dataset, indices[start:stop].tolist())
        for batch in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=loader.num_workers):
            yield batch_observations(batch)
        return
    start, stop = rank_share(limit, rank, world_size)
    seen = 0
    for batch in loader:
        x = batch_observations(batch)
        lo, hi = max(start - seen, 0), min(stop - seen, len(x))
        if hi > lo:
            yield x[lo:hi]
        seen += len(x)
        if seen >= stop:
            return


def check_images(images: Any, where: str) -> Tensor:
    """Fail clearly unless ``images`` is a float ``(N, 1 or 3, H, W)`` tensor."""
    is_image = isinstance(images, Tensor) and images.dim() == 4 and images.shape[1] in (1, 3)
    if not (is_image and images.is_floating_point()):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"FID needs float images (N, 1 or 3, H, W) in [-1, 1] from {where}, got {shape}")
    return images


# -------------------------------------------------------------------------------- callback
class FID(L.Callback):
    """Fréchet Inception Distance of ``pl_module.generate`` samples to reference images.

    Runs at the end of every ``every_n_epochs``-th validation epoch (not during the sanity check)
    and at the end of testing; logs ``val/fid`` / ``test/fid`` (and ``val/kid`` / ``test/kid``
    with ``kid=True``). Reference statistics are computed once from ``num_reference`` images of
    the datamodule's ``reference`` split and cached in ``cache_dir`` under a name that hashes
    the datamodule's class and hyperparameters, ``num_reference`` and the feature extractor.

    Args:
        num_samples: generated images per evaluation (the papers use 50000).
        batch_size: images per generation / feature-extraction batch.
        every_n_epochs: evaluate after every n-th validation epoch (by epoch number).
        sampler: prior sampler for ``pl_module.generate(n, sampler=...)`` (e.g. a longer
            ``Langevin``); None uses the model's own.
        seed: seeds each generated batch from ``(seed, its first global sample index)``, so
            evaluations are repeatable and do not disturb the training RNG; None draws a fresh
            seed each time.
        feature_extractor: a module mapping float images ``(N, 3, H, W)`` in [-1, 1] to
            ``(N, D)`` (grey images are repeated to 3 channels before). None: Inception-v3.
        feature_extractor_weights_path: Inception weights file (``$VARS`` expanded); None lets
            torch-fidelity download them. Offline: ``$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth``.
        reference: ``"train"`` or ``"val"``: the datamodule split the reference images come from.
        num_reference: at most this many reference images (a fixed random subset when the split
            is larger).
        reference_stats: a precomputed ``.npz``/``.pt`` file with ``mu``, ``sigma`` (and ``n``,
            and ``features`` for KID); replaces ``reference``/``num_reference``/the cache.
        cache_dir: folder of cached reference statistics; None = ``<default_root_dir>/fid_cache``.
        kid: also compute the Kernel Inception Distance (needs features of both sets in memory).
        kid_subset_size: KID subset size (the usual 1000).
        kid_subsets: number of KID subsets (the usual 100).
    """

    def __init__(
        self,
        num_samples: int = 10000,
        batch_size: int = 100,
        every_n_epochs: int = 1,
        sampler: Sampler | None = None,
        seed: int | None = 0,
        feature_extractor: nn.Module | None = None,
        feature_extractor_weights_path: str | None = None,
        reference: str = "train",
        num_reference: int = 10000,
        reference_stats: str | None = None,
        cache_dir: str | None = None,
        kid: bool = False,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
    ) -> None:
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                            ("every_n_epochs", every_n_epochs), ("num_reference", num_reference)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 to fit a covariance, got {num_samples}")
        if reference not in REFERENCE_SPLITS:
            raise ValueError(f"reference must be one of {REFERENCE_SPLITS}, got {reference!r}")
        self.num_samples, self.batch_size, self.every_n_epochs = num_samples, batch_size, every_n_epochs
        self.sampler, self.seed = sampler, seed
        self.feature_extractor = feature_extractor
        self.feature_extractor_weights_path = feature_extractor_weights_path
        self.reference, self.num_reference = reference, num_reference
        self.reference_stats, self.cache_dir = reference_stats, cache_dir
        self.kid, self.kid_subset_size, self.kid_subsets = kid, kid_subset_size, kid_subsets
        self.last_metrics: dict[str, float] = {}
        self._extractor: nn.Module | None = None
        self._fingerprint: str | None = None
        self._reference: ReferenceStats | None = None

    # ------------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Silence Lightning's advice to sync these values: they are reduced already."""
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val|test)/(fid|kid)'")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(pl_module, "val", self.evaluate(trainer, pl_module))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "test", self.evaluate(trainer, pl_module))

    def _log(self, pl_module: L.LightningModule, stage: str, metrics: dict[str, float]) -> None:
        """Log values that are already reduced (identical on every rank): no sync needed."""
        for name, value in metrics.items():
            pl_module.log(f"{stage}/{name}", value, sync_dist=False, rank_zero_only=False)

    # --------------------------------------------------------------------------- evaluation
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Compute ``{"fid": ...}`` (and ``"kid"``), collectively on every rank."""
        self.extractor(pl_module.device)
        reference = self.reference_statistics(trainer, pl_module)
        generated, features = self.generated_statistics(trainer, pl_module, reference.mu.shape[0])
        mu, sigma = generated.gaussian()
        metrics = {"fid": frechet_distance(mu, sigma, reference.mu, reference.sigma)}
        if self.kid:
            metrics["kid"] = self._kid(reference, features)
        self.last_metrics = metrics
        return metrics

    def _kid(self, reference: ReferenceStats, features: Tensor | None) -> float:
        assert reference.features is not None and features is not None
        real = torch.as_tensor(reference.features, device=features.device)
        value, _ = kernel_inception_distance(real, features, self.kid_subset_size, self.kid_subsets, seed=0)
        return value

    def extractor(self, device: torch.device) -> nn.Module:
        """The feature extractor (built on first use), in eval mode on ``device``."""
        if self._extractor is None:
            if self.feature_extractor is not None:
                self._extractor = self.feature_extractor
            else:
                self._extractor = InceptionFeatures(self.feature_extractor_weights_path)
        return self._extractor.to(device).eval()

    def features(self, images: Tensor, device: torch.device) -> Tensor:
        """Float images ``(N, C, H, W)`` in [-1, 1] -> float32 features ``(N, D)``."""
        assert self._extractor is not None
        with torch.no_grad():
            output = self._extractor(to_three_channels(images.to(device)))
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.float().reshape(output.shape[0], -1)

    # ------------------------------------------------------------------------ generated side
    def generated_statistics(
        self, trainer: L.Trainer, pl_module: L.LightningModule, dim: int
    ) -> tuple[FeatureStats, Tensor | None]:
        """Feature sums of ``num_samples`` generated images, summed over ranks, and with
        ``kid=True`` all their features ``(num_samples, D)`` gathered in global order."""
        device = pl_module.device
        start, stop = rank_share(self.num_samples, trainer.global_rank, trainer.world_size)
        stats = FeatureStats.zeros(dim, device)
        kept: list[Tensor] = []
        base = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        with torch.random.fork_rng(devices=random_generator_devices(device)):
            for lo, hi in aligned_batches(start, stop, self.batch_size):
                torch.manual_seed(batch_seed(base, lo))
                features = self.features(self._generate(pl_module, hi - lo), device)
                stats.update(features)
                if self.kid:
                    kept.append(features)
        total = FeatureStats.unpack(sum_across_ranks(trainer, stats.pack()), dim)
        gathered = gather_rows(trainer, self._stack(kept, dim, device)) if self.kid else None
        return total, gathered

    def _generate(self, pl_module: L.LightningModule, n: int) -> Tensor:
        """``n`` samples ``(n, C, H, W)`` from the model (with this callback's sampler if set)."""
        images = pl_module.generate(n) if self.sampler is None else pl_module.generate(n, sampler=self.sampler)
        return check_images(images, f"{type(pl_module).__name__}.generate")

    @staticmethod
    def _stack(rows: list[Tensor], dim: int, device: torch.device) -> Tensor:
        return torch.cat(rows) if rows else torch.zeros(0, dim, device=device)

    # ------------------------------------------------------------------------ reference side
    def reference_statistics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ReferenceStats:
        """The reference Gaussian fit: from ``reference_stats``, the cache, or computed (once)."""
        if self._reference is None:
            self._reference = self._given_or_cached_or_computed(trainer, pl_module)
        return self._reference

    def _given_or_cached_or_computed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ReferenceStats:
        if self.reference_stats is None:
            return self._cached_or_computed(trainer, pl_module)
        stats = load_reference_stats(self.reference_stats)
        if self.kid and stats.features is None:
            raise ValueError(f"kid=True needs reference features, but {self.reference_stats} has no `features` array")
        return stats

    def _cached_or_computed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ReferenceStats:
        loader = reference_loader(trainer, self.reference)
        path = self.cache_path(trainer, loader)
        # Collective decision: every rank loads, or every rank takes part in computing.
        if trainer.strategy.reduce_boolean_decision(os.path.isfile(path), all=True):
            return load_reference_stats(path)
        stats = self.compute_reference(trainer, pl_module, loader)
        if trainer.is_global_zero:
            save_reference_stats(path, stats)
            rank_zero_info(f"FID: reference statistics of {stats.n} images cached in {path}")
        return stats

    def cache_path(self, trainer: L.Trainer, loader: DataLoader) -> str:
        """``<cache_dir>/fid_ref_<split>_<n>_<hash>.npz``; the hash covers the data description,
        ``num_reference``, the subset seed, the extractor's fingerprint and whether features are kept."""
        assert self._extractor is not None
        if self._fingerprint is None:
            self._fingerprint = extractor_fingerprint(self._extractor)
        key = {
            "data": describe_reference(trainer, loader, self.reference),
            "num_reference": self.num_reference,
            "subset_seed": REFERENCE_SUBSET_SEED,
            "extractor": getattr(self._extractor, "name", type(self._extractor).__qualname__),
            "fingerprint": self._fingerprint,
            "features": self.kid,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = self.cache_dir if self.cache_dir is not None else os.path.join(trainer.default_root_dir, "fid_cache")
        return os.path.join(str(expand_root(folder)), f"fid_ref_{self.reference}_{self.num_reference}_{digest}.npz")

    def compute_reference(self, trainer: L.Trainer, pl_module: L.LightningModule, loader: DataLoader) -> ReferenceStats:
        """Embed this rank's share of the reference images and sum the statistics over ranks."""
        device = pl_module.device
        stats: FeatureStats | None = None
        kept: list[Tensor] = []
        rank, world_size = trainer.global_rank, trainer.world_size
        batches = reference_batches(loader, self.num_reference, rank, world_size, self.batch_size)
        with torch.random.fork_rng(devices=random_generator_devices(device)):
            torch.manual_seed(REFERENCE_SUBSET_SEED)  # datasets with random augmentation
            for images in batches:
                features = self.features(check_images(images, "the reference data"), device)
                stats = stats if stats is not None else FeatureStats.zeros(features.shape[1], device)
                stats.update(features)
                if self.kid:
                    kept.append(features)
        dim = agreed_dim(trainer, stats, device)
        stats = stats if stats is not None else FeatureStats.zeros(dim, device)  # a rank without images
        total = FeatureStats.unpack(sum_across_ranks(trainer, stats.pack()), dim)
        if total.count < 2:
            raise ValueError(f"the {self.reference} split gave {int(total.count)} reference images; FID needs >= 2")
        mu, sigma = total.gaussian()
        features = gather_rows(trainer, self._stack(kept, dim, device)).cpu().numpy() if self.kid else None
        return ReferenceStats(mu=mu, sigma=sigma, n=int(total.count), features=features)
