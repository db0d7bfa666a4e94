"""FID and KID through torchmetrics: feature extractors, the shared metric pair, reference states.

Nothing here knows about Lightning; :class:`lebm.callbacks.FID` wires it into a Trainer.

- Feature extractors take float images ``(N, 3, H, W)`` in [-1, 1] and return ``(N, D)``:
  :class:`InceptionFeatures` (torch-fidelity's TF-compatible ``inception-v3-compat`` pool3,
  D = 2048: the standard FID network) and :class:`SmallConvFeatures` (a tiny fixed random conv
  net, D = 32, for tests and quick CPU runs).
- :class:`FIDMetrics` is torchmetrics' ``FrechetInceptionDistance`` (and, optionally,
  ``KernelInceptionDistance``) on one such extractor: the statistics, the distances and their
  synchronisation across DDP processes are the library's. Each image batch is embedded once even
  when both metrics are on.
- :class:`ReferenceState` is the real-image side of that state (feature sum, sum of outer
  products, count, and the features themselves for KID); :func:`save_reference_state` and
  :func:`load_reference_state` write and read it (``.npz``, written atomically), so that a cached
  reference is restored into the metrics without embedding a single image again.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat

from lebm.atomic import replaced_atomically
from lebm.config import Configurable
from lebm.data.errors import DataError
from lebm.data.paths import expand_root

#: Where the offline copy of torch-fidelity's Inception weights lives under ``$LEBM_DATA``.
OFFLINE_INCEPTION_WEIGHTS = "$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth"
INCEPTION_NAME = "inception-v3-compat"
#: Reference count assumed for a ``mu``/``sigma`` file that does not say how many images it fits
#: (any count >= 2 restores the same mean and covariance; 2 loses the least precision).
NOMINAL_REFERENCE_COUNT = 2


#: The file torch-fidelity downloads into torch's hub cache (``torch.hub.get_dir()/checkpoints``).
DOWNLOADED_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: Where torch-fidelity downloads them from (a connection is tried, not a download).
INCEPTION_HOST = ("github.com", 443)
#: Seconds to wait for :data:`INCEPTION_HOST` before saying it cannot be reached.
REACH_TIMEOUT_S = 3.0


def inception_weights(weights_path: str | os.PathLike | None, reach_timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """The Inception weights FID will use: the file ``weights_path`` names (``$VARS`` and ``~``
    expanded; it must exist), else a copy found where the data lives (:data:`OFFLINE_INCEPTION_WEIGHTS`
    when ``$LEBM_DATA`` is set), else None: torch-fidelity's own copy, cached in torch's hub folder
    or downloaded when the host can be reached. Raises :class:`~lebm.data.errors.DataError` (one line, naming
    ``feature_extractor_weights_path`` and the offline copy) when none of these can work, so a run
    stops before it trains instead of failing in the download after its first epoch."""
    if weights_path is not None:
        path = str(expand_root(weights_path))
        if not os.path.isfile(path):
            raise DataError(
                f"feature_extractor_weights_path {path!r} (from {str(weights_path)!r}) is not a file: give the "
                f"Inception weights' path (offline copy: {OFFLINE_INCEPTION_WEIGHTS}), or null to use torch-fidelity's "
                "download"
            )
        return path
    if os.environ.get("LEBM_DATA"):
        offline = str(expand_root(OFFLINE_INCEPTION_WEIGHTS))
        if os.path.isfile(offline):
            return offline
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", DOWNLOADED_INCEPTION_FILE)
    if os.path.isfile(cached) or host_reachable(INCEPTION_HOST, reach_timeout_s):
        return None
    raise DataError(
        f"FID needs the Inception weights: feature_extractor_weights_path is null, there is no copy in torch's cache "
        f"({cached}) nor at {OFFLINE_INCEPTION_WEIGHTS}, and {INCEPTION_HOST[0]} cannot be reached to download them: "
        f"give feature_extractor_weights_path (the offline copy: {OFFLINE_INCEPTION_WEIGHTS})"
    )


def host_reachable(address: tuple[str, int], timeout_s: float) -> bool:
    """Whether a TCP connection to ``address`` opens within ``timeout_s`` seconds."""
    import socket

    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


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
    """torch-fidelity's Inception-v3 (``inception-v3-compat``, the TF FID network), pool3 features.

    ``forward``: float images ``(N, 3, H, W)`` in [-1, 1] -> float32 ``(N, 2048)``. Images are
    rounded to uint8 (as saved PNGs would be) and resized to 299 x 299 inside the network with
    torch-fidelity's TF1-compatible bilinear resize. (torchmetrics' own Inception gives the same
    features only with ``antialias=False``; its default antialiased resize does not.) The weights
    are kept channels-last: on a 2-core CPU the features cost 1.77x less time (``python
    benchmarks/fid_layout.py``) and no feature moves by more than about 1e-5.

    Args:
        weights_path: the weights file (``$VARS`` and ``~`` are expanded); None downloads
            torch-fidelity's copy (needs internet). Offline, use :data:`OFFLINE_INCEPTION_WEIGHTS`.
    """

    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = inception_weights(weights_path) if weights_path is not None else None
        self.net = FeatureExtractorInceptionV3(
            name=INCEPTION_NAME, features_list=[str(self.num_features)], feature_extractor_weights_path=path
        )
        self.name = f"{INCEPTION_NAME}-{self.num_features}"
        self.net.to(memory_format=torch.channels_last)  # see the docstring: faster on CPU, same features

    def forward(self, images: Tensor) -> Tensor:
        """Pool3 features: float images ``(N, 1 or 3, H, W)`` in [-1, 1] -> float32 ``(N, 2048)``."""
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
        self.num_features = out_dim
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
        """Images ``(N, in_channels, H, W)`` in [-1, 1] -> ``(N, out_dim)``."""
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


def feature_dim(extractor: nn.Module) -> int:
    """D, the length of the extractor's feature vectors: its ``num_features`` attribute, else the
    width of its output on two black 32 x 32 RGB images."""
    declared = getattr(extractor, "num_features", None)
    if isinstance(declared, int):
        return declared
    parameter = next(extractor.parameters(), None)
    probe = torch.zeros(2, 3, 32, 32, device=parameter.device if parameter is not None else "cpu")
    with torch.no_grad():
        output = extractor(probe)
    output = output[0] if isinstance(output, (tuple, list)) else output
    return int(output.reshape(2, -1).shape[1])


class MetricFeatures(nn.Module):
    """An extractor as torchmetrics' FID and KID call it (their ``feature=`` module).

    ``forward``: float images ``(N, 1 or 3, H, W)`` in [-1, 1] -> float64 features ``(N, D)``
    (grey repeated to RGB, the extractor's output flattened). float64 makes torchmetrics' FID
    return a float64 value. The metrics are updated one after the other with the same batch:
    the features of the last batch are kept, and a second call with the very same tensor object
    returns them instead of running the network again.

    Args:
        extractor: float images ``(N, 3, H, W)`` in [-1, 1] -> ``(N, D)`` (or a tuple whose
            first item is that).
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = feature_dim(extractor)
        self._last: tuple[Tensor, Tensor] | None = None

    def forward(self, images: Tensor) -> Tensor:
        """Float images ``(N, 1 or 3, H, W)`` in [-1, 1] -> float64 ``(N, D)``, without gradients; the
        same tensor object twice in a row is embedded once."""
        if self._last is not None and self._last[0] is images:
            return self._last[1]
        with torch.no_grad():
            output = self.extractor(to_three_channels(images))
        output = output[0] if isinstance(output, (tuple, list)) else output
        features = output.reshape(output.shape[0], -1).double()
        self._last = (images, features)
        return features

    def forget(self) -> None:
        """Drop the kept batch (and its features)."""
        self._last = None


# ------------------------------------------------------------------------- the reference side
@dataclass
class ReferenceState:
    """The real-image state of torchmetrics' FID (and KID), summed over all processes.

    Attributes:
        total: ``(D,)`` float64, the sum of the reference features.
        outer: ``(D, D)`` float64, the sum of their outer products ``f f^T``.
        n: the number of reference images.
        features: ``(n, D)`` float32, the features themselves (KID only), else None.
    """

    total: np.ndarray
    outer: np.ndarray
    n: int
    features: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    @classmethod
    def from_gaussian(
        cls, mu: np.ndarray, sigma: np.ndarray, n: int = 0, features: np.ndarray | None = None
    ) -> ReferenceState:
        """The sums that give mean ``mu (D,)`` and unbiased covariance ``sigma (D, D)`` over ``n``
        images (``n < 2``, unknown: the count of ``features``, else :data:`NOMINAL_REFERENCE_COUNT`)."""
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        if sigma.shape != mu.shape * 2:
            raise ValueError(f"shape mismatch: mu {mu.shape}, sigma {sigma.shape}; expected (D,) and (D, D)")
        if n < 2:
            n = len(features) if features is not None and len(features) >= 2 else NOMINAL_REFERENCE_COUNT
        return cls(n * mu, (n - 1) * sigma + n * np.outer(mu, mu), n, features)

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(D,)`` and unbiased covariance ``(D, D)``, computed as torchmetrics' FID does."""
        mu = self.total / self.n
        return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def save_reference_state(path: str | os.PathLike, state: ReferenceState) -> None:
    """Write ``state`` to ``path`` (``.npz``: ``total``, ``outer``, ``n`` [, ``features``])
    atomically: a temporary file in the same folder, then ``os.replace``, so that a reader never
    sees a half-written file."""
    arrays = {"total": state.total, "outer": state.outer, "n": np.asarray(state.n, dtype=np.int64)}
    if state.features is not None:
        arrays["features"] = state.features
    with replaced_atomically(path, "wb") as file:
        np.savez(file, **arrays)


def load_reference_state(path: str | os.PathLike) -> ReferenceState:
    """Read a reference from a ``.npz`` or ``.pt`` file: ``total``, ``outer``, ``n`` (as
    :func:`save_reference_state` writes), or a Gaussian fit ``mu``, ``sigma`` (optionally ``n``);
    either with optional ``features`` ``(n, D)``. ``$VARS`` and ``~`` in ``path`` are expanded."""
    resolved = str(expand_root(path))
    data = _read_arrays(resolved)
    features = data.get("features")
    features = None if features is None else np.asarray(features, np.float32)
    if all(key in data for key in ("total", "outer", "n")):
        total, outer = np.asarray(data["total"], np.float64), np.asarray(data["outer"], np.float64)
        return ReferenceState(total, outer, int(data["n"]), features)
    if all(key in data for key in ("mu", "sigma")):
        return ReferenceState.from_gaussian(data["mu"], data["sigma"], int(data.get("n", 0)), features)
    raise KeyError(
        f"{resolved} holds neither a reference state (total, outer, n) nor a Gaussian fit (mu, sigma); "
        f"its keys are {sorted(data)}"
    )


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of a ``.npz``, or of a ``.pt``/``.pth`` dict of tensors/numbers."""
    if path.endswith((".pt", ".pth")):
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return {key: (value.numpy() if isinstance(value, Tensor) else np.asarray(value)) for key, value in raw.items()}
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` rows (the shares follow rank order, cover every
    row once and differ by at most ``ceil(n / world_size)``)."""
    per_rank = math.ceil(n / world_size)
    start = min(rank * per_rank, n)
    return slice(start, min(start + per_rank, n))


# ------------------------------------------------------------------------------ the metrics
class FIDMetrics(nn.Module):
    """torchmetrics' FID, and optionally KID, on one feature extractor.

    :meth:`update` embeds a batch once for both metrics. Under DDP each process updates with its
    own images; :meth:`compute` lets torchmetrics sum (FID) or gather (KID, in rank order) the
    states of all processes, so every process gets the value of the union of the images.
    The real (reference) side survives :meth:`reset_generated`; :meth:`load_reference` restores it
    from a :class:`ReferenceState` and :meth:`reference_state` reads it back.

    Args:
        extractor: float images ``(N, 3, H, W)`` in [-1, 1] -> features ``(N, D)``.
        kid: also compute the Kernel Inception Distance (keeps every feature vector in memory).
        kid_subset_size: KID subset size, capped at the number of generated images and of
            reference images (as loaded, or as added on this process).
        kid_subsets: number of KID subsets.
    """

    def __init__(
        self, extractor: nn.Module, kid: bool = False, kid_subset_size: int = 1000, kid_subsets: int = 100
    ) -> None:
        super().__init__()
        self.features = MetricFeatures(extractor)
        self.fid = FrechetInceptionDistance(feature=self.features, reset_real_features=False)
        # compute() casts the value to the dtype of the last features; a process that embedded no
        # image (more processes than batches) has none, and float64 is what MetricFeatures gives.
        self.fid.orig_dtype = torch.float64
        self.kid: KernelInceptionDistance | None = None
        self.kid_subset_size = kid_subset_size
        self.reference_count = 0
        if kid:
            with warnings.catch_warnings():  # "will save all extracted features": that is the point
                warnings.filterwarnings("ignore", message=".*save all extracted features.*")
                self.kid = KernelInceptionDistance(
                    feature=self.features, subsets=kid_subsets, subset_size=kid_subset_size, reset_real_features=False
                )

    @property
    def num_features(self) -> int:
        return self.features.num_features

    def update(self, images: Tensor, real: bool) -> None:
        """Add float images ``(N, 1 or 3, H, W)`` in [-1, 1] to the real or the generated side
        (moved to the metrics' device first: reference images come from a DataLoader on the CPU)."""
        images = images.to(self.fid.device)
        with torch.inference_mode(False), torch.no_grad():
            self.fid.update(images, real=real)
            if self.kid is not None:
                self.kid.update(images, real=real)
        self.features.forget()
        if real:
            self.reference_count += images.shape[0]

    def reset_generated(self) -> None:
        """Forget the generated images (the reference side stays)."""
        with torch.inference_mode(False):
            self.fid.reset()
            if self.kid is not None:
                self.kid.reset()

    def clear(self) -> None:
        """Forget both sides: the generated images and the reference."""
        with torch.inference_mode(False):
            self.reset_generated()
            self._set_fid_reference(None)
            if self.kid is not None:
                self.kid.real_features = []
        self.reference_count = 0

    def compute(self, num_generated: int, seed: int = 0) -> dict[str, float]:
        """``{"fid": ...}`` (and ``"kid"``) of everything added on all processes (collective).

        Args:
            num_generated: generated images on all processes together (caps the KID subset size).
            seed: seed of KID's random subsets (the same on every process, so all agree).
        """
        with torch.inference_mode(False), torch.no_grad():
            values = {"fid": float(self.fid.compute())}
            if self.kid is not None:
                values["kid"] = self._compute_kid(num_generated, seed)
        return values

    def _compute_kid(self, num_generated: int, seed: int) -> float:
        assert self.kid is not None
        self._one_feature_block_per_side()
        self.kid.subset_size = min(self.kid_subset_size, self.reference_count, num_generated)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # KID draws its subsets with torch.randperm on the CPU
            mean, _ = self.kid.compute()
        return float(mean)

    def _one_feature_block_per_side(self) -> None:
        """Concatenate each KID feature list into exactly one ``(n_local, D)`` tensor (``(0, D)``
        when empty): torchmetrics gathers list states entry by entry, so every process must hold
        the same number of entries."""
        assert self.kid is not None
        for side in ("real_features", "fake_features"):
            blocks = getattr(self.kid, side)
            empty = torch.zeros(0, self.num_features, dtype=torch.float64, device=self.fid.device)
            setattr(self.kid, side, [dim_zero_cat(blocks) if blocks else empty])

    # -------------------------------------------------------------------- reference state
    def load_reference(self, state: ReferenceState, rank: int = 0, world_size: int = 1) -> None:
        """Make ``state`` the real side of the metrics, as this process ``rank``'s part: the FID
        sums on rank 0 (zeros elsewhere, so that the sum over processes is ``state``); the KID
        features split into contiguous rank shares (their concatenation in rank order is ``state``)."""
        if state.dim != self.num_features:
            raise ValueError(
                f"the reference has {state.dim}-dimensional features but the extractor gives {self.num_features}: "
                "compute the reference with the same feature extractor"
            )
        if state.n < 2:
            raise ValueError(f"the reference has {state.n} images; FID needs at least 2")
        with torch.inference_mode(False):
            self.reset_generated()
            self._set_fid_reference(state if rank == 0 else None)
            if self.kid is not None:
                self._load_reference_features(state, rank, world_size)
        self.reference_count = state.n

    def _set_fid_reference(self, state: ReferenceState | None) -> None:
        """FID's real sums from ``state``, or zeros (None)."""
        device, dim = self.fid.device, self.num_features
        if state is None:
            total, outer, n = torch.zeros(dim), torch.zeros(dim, dim), 0
        else:
            total, outer, n = torch.from_numpy(state.total), torch.from_numpy(state.outer), state.n
        self.fid.real_features_sum = total.to(device=device, dtype=torch.float64).clone()
        self.fid.real_features_cov_sum = outer.to(device=device, dtype=torch.float64).clone()
        self.fid.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=device)

    def _load_reference_features(self, state: ReferenceState, rank: int, world_size: int) -> None:
        assert self.kid is not None
        if state.features is None:
            raise ValueError(
                "KID needs the reference features, but this reference state has none: recompute it with kid=True"
            )
        share = state.features[rank_slice(len(state.features), rank, world_size)]
        self.kid.real_features = [torch.as_tensor(share, dtype=torch.float64, device=self.fid.device).clone()]

    def reference_state(self) -> ReferenceState:
        """The real side summed (FID) and gathered (KID) over all processes (collective)."""
        with torch.inference_mode(False), self.fid.sync_context():
            total = self.fid.real_features_sum.cpu().numpy().copy()
            outer = self.fid.real_features_cov_sum.cpu().numpy().copy()
            n = int(self.fid.real_features_num_samples)
        features = None
        if self.kid is not None:
            self._one_feature_block_per_side()
            with torch.inference_mode(False), self.kid.sync_context():
                features = dim_zero_cat(self.kid.real_features).float().cpu().numpy()
        return ReferenceState(total, outer, n, features)
