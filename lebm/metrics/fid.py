"""The maths of FID and KID: feature extractors, running feature statistics, distances.

Nothing here knows about Lightning; :class:`lebm.callbacks.FID` wires it into a Trainer.

- Feature extractors take float images ``(N, C, H, W)`` in [-1, 1] and return ``(N, D)``:
  :class:`InceptionFeatures` (torch-fidelity's TF-compatible Inception-v3, D = 2048) and
  :class:`SmallConvFeatures` (a tiny random conv net, D = 32, for tests and quick CPU runs).
- :class:`FeatureStats` holds running sums ``(n, sum (D,), sum of outer products (D, D))`` in
  float64, so that shards computed on different processes add up exactly (all-reduce) and the
  Gaussian fit does not depend on how the features were chunked.
- :func:`frechet_distance` is the Fréchet distance between two Gaussian fits, in float64;
  :func:`kernel_inception_distance` the unbiased polynomial-kernel MMD^2 averaged over subsets.
- :func:`save_reference_stats` / :func:`load_reference_stats` read and write ``.npz`` (or ``.pt``)
  files with ``mu``, ``sigma``, ``n`` (and optionally ``features``), written atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.data.paths import expand_root

#: Where the offline copy of torch-fidelity's Inception weights lives under ``$LEBM_DATA``.
OFFLINE_INCEPTION_WEIGHTS = "$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth"
INCEPTION_NAME = "inception-v3-compat"


# --------------------------------------------------------------------------------- images
def to_uint8(images: Tensor) -> Tensor:
    """Float images ``(N, C, H, W)`` in [-1, 1] -> uint8 ``(N, C, H, W)`` in 0..255, rounded.

    Values outside [-1, 1] are clamped first.
    """
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8)


def to_three_channels(images: Tensor) -> Tensor:
    """``(N, 1, H, W)`` grey images -> ``(N, 3, H, W)`` by repetition; 3-channel images unchanged."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# ---------------------------------------------------------------------- feature extractors
class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (``inception-v3-compat``, the TF FID network), pool features.

    ``forward``: float images ``(N, 3, H, W)`` in [-1, 1] -> float32 ``(N, 2048)``. Images are
    rounded to uint8 (as saved PNGs would be) and resized to 299 x 299 inside the network.

    Args:
        weights_path: the weights file (``$VARS`` and ``~`` are expanded); None downloads
            torch-fidelity's copy (needs internet). Offline, use :data:`OFFLINE_INCEPTION_WEIGHTS`.
    """

    feature_dim = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = str(expand_root(weights_path)) if weights_path is not None else None
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights not found at {path!r} (from {weights_path!r})")
        self.net = FeatureExtractorInceptionV3(
            name=INCEPTION_NAME, features_list=[str(self.feature_dim)], feature_extractor_weights_path=path
        )
        self.name = f"{INCEPTION_NAME}-{self.feature_dim}"

    def forward(self, images: Tensor) -> Tensor:
        (features,) = self.net(to_uint8(to_three_channels(images)))
        return features.float()


class SmallConvFeatures(nn.Module, Configurable):
    """A tiny fixed random conv net: ``(N, C, H, W)`` in [-1, 1] -> ``(N, out_dim)``.

    Three 3x3 convolutions (stride 1, 2, 2) with ReLU, then a global average pool. Weights are
    drawn from ``seed`` alone (He-normal, zero biases), so two instances with the same arguments
    are identical and FIDs computed with it are comparable across runs. Not a perceptual metric:
    use it for tests and quick CPU runs.

    Args:
        seed: seed of the weights.
        in_channels: image channels (the FID callback passes 3).
        width: channels of the hidden layers.
        out_dim: feature dimension D.
    """

    def __init__(self, seed: int = 0, in_channels: int = 3, width: int = 16, out_dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, out_dim, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self._init_weights(seed)
        self.requires_grad_(False)
        self.eval()
        self.name = f"small-conv-s{seed}-c{in_channels}-w{width}-d{out_dim}"

    def _init_weights(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                with torch.no_grad():
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                    layer.bias.zero_()

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float())


def extractor_fingerprint(extractor: nn.Module) -> str:
    """A short stable id of an extractor: its class, ``name`` attribute and parameter values.

    Used in reference-statistics cache keys, so that another network (or other weights) never
    reuses a cache computed with a different one.
    """
    digest = hashlib.sha256(f"{type(extractor).__module__}.{type(extractor).__qualname__}".encode())
    digest.update(str(getattr(extractor, "name", "")).encode())
    for key, value in extractor.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------ feature statistics
@dataclass
class FeatureStats:
    """Running sums of D-dimensional features, float64.

    Attributes:
        count: 0-dim, the number of features seen.
        total: ``(D,)``, their sum.
        outer: ``(D, D)``, the sum of their outer products ``f f^T``.
    """

    count: Tensor
    total: Tensor
    outer: Tensor

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str = "cpu") -> FeatureStats:
        """Empty statistics of dimension ``dim``."""
        kwargs = dict(dtype=torch.float64, device=device)
        return cls(torch.zeros((), **kwargs), torch.zeros(dim, **kwargs), torch.zeros(dim, dim, **kwargs))

    @classmethod
    def from_features(cls, features: Tensor) -> FeatureStats:
        """Statistics of ``features`` ``(N, D)``."""
        stats = cls.zeros(features.shape[1], features.device)
        stats.update(features)
        return stats

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    def update(self, features: Tensor) -> None:
        """Add a batch ``(N, D)`` (any float dtype; accumulated in float64)."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features (N, {self.dim}), got {tuple(features.shape)}")
        f = features.detach().to(device=self.total.device, dtype=torch.float64)
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def pack(self) -> Tensor:
        """All sums in one flat float64 tensor ``(1 + D + D * D,)``, e.g. for one all-reduce."""
        return torch.cat([self.count.reshape(1), self.total, self.outer.reshape(-1)])

    @classmethod
    def unpack(cls, flat: Tensor, dim: int) -> FeatureStats:
        """Inverse of :meth:`pack`."""
        return cls(flat[0].clone(), flat[1 : 1 + dim].clone(), flat[1 + dim :].reshape(dim, dim).clone())

    def mean(self) -> Tensor:
        """``(D,)`` sample mean."""
        self._check_count(1)
        return self.total / self.count

    def covariance(self) -> Tensor:
        """``(D, D)`` unbiased sample covariance (divides by ``n - 1``, like ``np.cov``)."""
        self._check_count(2)
        mu = self.mean()
        cov = (self.outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return (cov + cov.T) / 2

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian fit as float64 numpy arrays: ``mu (D,)``, ``sigma (D, D)``."""
        return self.mean().cpu().numpy(), self.covariance().cpu().numpy()

    def _check_count(self, minimum: int) -> None:
        if float(self.count) < minimum:
            raise ValueError(f"need at least {minimum} feature vectors, have {int(self.count)}")


# ------------------------------------------------------------------------------ distances
def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite ``(D, D)`` matrix.

    Eigenvalues that rounding made slightly negative are set to zero.
    """
    symmetric = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(symmetric)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for PSD ``(D, D)`` matrices, in float64.

    ``sigma1 @ sigma2`` is similar to a symmetric PSD matrix ``F^T sigma2 F`` for any factor
    ``sigma1 = F F^T``, so the trace of its square root is the sum of the square roots of that
    matrix's (real, clipped at zero) eigenvalues: no complex arithmetic, no imaginary parts to
    discard. The factor is a Cholesky factor when either matrix is positive definite (fast:
    about 2 s for D = 2048 on 2 CPU cores), otherwise the symmetric square root (eigenvectors, slower).
    """
    for first, second in ((sigma1, sigma2), (sigma2, sigma1)):
        value = trace_sqrt_cholesky(first, second)
        if value is not None:
            return value
    return trace_sqrt_eigen(sigma1, sigma2)


def trace_sqrt_cholesky(sigma1: np.ndarray, sigma2: np.ndarray) -> float | None:
    """``tr(sqrtm(sigma1 @ sigma2))`` with ``sigma1 = L L^T``; None when ``sigma1`` is not
    positive definite (Cholesky fails)."""
    try:
        factor = np.linalg.cholesky((sigma1 + sigma1.T) / 2)
    except np.linalg.LinAlgError:
        return None
    return _sum_sqrt_eigenvalues(factor.T @ sigma2 @ factor)


def trace_sqrt_eigen(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` with ``sigma1 = S^{1/2} S^{1/2}``: any PSD ``sigma1``."""
    root = psd_sqrt(sigma1)
    return _sum_sqrt_eigenvalues(root @ sigma2 @ root)


def _sum_sqrt_eigenvalues(matrix: np.ndarray) -> float:
    """``sum sqrt(max(eigenvalue, 0))`` of a (numerically) symmetric ``(D, D)`` matrix."""
    values = np.linalg.eigvalsh((matrix + matrix.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))``, computed in float64;
    ``mu`` are ``(D,)``, ``sigma`` ``(D, D)``. Rounding can take an exact zero slightly below
    zero: the result is clipped at 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's kernel ``k(x, y) = (x . y / D + 1)^3``: ``(N, D), (M, D) -> (N, M)``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 with :func:`polynomial_kernel` between ``x`` ``(m, D)`` and ``y`` ``(n, D)`` (0-dim)."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2.0 * polynomial_kernel(x, y).mean()


def kernel_inception_distance(
    real: Tensor, fake: Tensor, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`mmd2_unbiased` over random subsets.

    Each subset draws ``min(subset_size, N_real, N_fake)`` rows of each set without replacement
    (numpy generator seeded by ``seed``); the sums run in float64 on ``real``'s device.

    Args:
        real: ``(N_real, D)`` features. fake: ``(N_fake, D)`` features.
    """
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 features per set, have {real.shape[0]} and {fake.shape[0]}")
    real, fake = real.to(torch.float64), fake.to(device=real.device, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        i = torch.as_tensor(rng.choice(real.shape[0], size, replace=False), device=real.device)
        j = torch.as_tensor(rng.choice(fake.shape[0], size, replace=False), device=real.device)
        values.append(mmd2_unbiased(real[i], fake[j]))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


# ------------------------------------------------------------------------ reference files
@dataclass
class ReferenceStats:
    """A Gaussian fit of reference features: ``mu (D,)``, ``sigma (D, D)`` float64, ``n`` samples,
    and optionally the features themselves ``(n, D)`` float32 (needed for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None


def save_reference_stats(path: str | os.PathLike, stats: ReferenceStats) -> None:
    """Write ``stats`` to ``path`` (``.npz``) atomically: a temporary file in the same folder,
    then ``os.replace``, so a reader never sees a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "n": np.asarray(stats.n, dtype=np.int64)}
    if stats.features is not None:
        arrays["features"] = stats.features
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".fid-", suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_reference_stats(path: str | os.PathLike) -> ReferenceStats:
    """Read ``mu``, ``sigma`` (and ``n``, ``features`` if present) from a ``.npz`` or ``.pt`` file.

    ``$VARS`` and ``~`` in ``path`` are expanded; ``n`` defaults to 0 (unknown).
    """
    resolved = str(expand_root(path))
    if resolved.endswith(".pt") or resolved.endswith(".pth"):
        raw = torch.load(resolved, map_location="cpu", weights_only=True)
        data = {key: (value.numpy() if isinstance(value, Tensor) else np.asarray(value)) for key, value in raw.items()}
    else:
        with np.load(resolved) as npz:
            data = {key: npz[key] for key in npz.files}
    missing = [key for key in ("mu", "sigma") if key not in data]
    if missing:
        raise KeyError(f"{resolved} has no {', '.join(missing)} (keys: {sorted(data)})")
    features = data.get("features")
    return ReferenceStats(
        mu=np.asarray(data["mu"], np.float64),
        sigma=np.asarray(data["sigma"], np.float64),
        n=int(data.get("n", 0)),
        features=None if features is None else np.asarray(features, np.float32),
    )
