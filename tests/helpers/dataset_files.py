"""Tiny dataset files in each dataset's standard on-disk layout (the one its DataModule locates and
reads: ``lebm.data.locate`` and ``lebm.data.text.files``), with random contents.

Every writer makes the folder it writes into and returns the ``root`` a recipe points at.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
#: The size of CelebA's aligned images (``img_align_celeba/*.jpg``): width, height.
CELEBA_ALIGNED_SIZE = (178, 218)
TEXT_WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "far", "away", "near", "home")


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write ``array`` as an IDX file (big-endian header and values); ``.gz`` appended when compressing."""
    big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, IDX_TYPE_CODES[big_endian.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + big_endian.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_idx_splits(
    folder: Path, n_train: int, n_test: int, compress: bool, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-named IDX files (train-*, t10k-*) in ``folder``: random (N, 28, 28) uint8 images, labels 0..9 cycling.
    The layout of MNIST and of Fashion-MNIST (same names)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[split] = (images, labels)
    return arrays


def write_mnist_csv(path: Path, images: np.ndarray, labels: np.ndarray, header: bool) -> Path:
    """Rows of 784 pixel values then the label; gzip when the name ends in .gz."""
    lines = [",".join(f"p{i}" for i in range(784)) + ",label"] if header else []
    rows = zip(images, labels, strict=True)
    lines += [",".join(map(str, row.reshape(-1).tolist())) + f",{label}" for row, label in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_svhn(root: Path, splits: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/{split}_32x32.mat`` for each split: ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) in 1..10
    (10 is digit 0), SVHN's cropped-digits format."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in splits.items():
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
        savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        arrays[split] = (x, y)
    return arrays


def write_cifar10(folder: Path, per_batch: int, seed: int = 0) -> dict[str, list[dict[bytes, object]]]:
    """The six CIFAR-10 python pickle batches (``data_batch_1..5``, ``test_batch``) in ``folder``,
    ``per_batch`` rows each: ``b"data"`` (N, 3072) uint8, ``b"labels"`` a list of ints."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches: dict[str, list[dict[bytes, object]]] = {"train": [], "test": []}
    names = [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]
    for split, name in names:
        batch = {
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=per_batch).tolist(),
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
        batches[split].append(batch)
    return batches


def write_celeba(root: Path, n: int, seed: int = 0) -> Path:
    """``root/img_align_celeba/000001.jpg`` ... ``n`` random RGB JPEGs of CelebA's aligned size; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    width, height = CELEBA_ALIGNED_SIZE
    for index in range(1, n + 1):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:06d}.jpg")
    return root


def write_text_splits(root: Path, names: tuple[str, ...], sentences: int, seed: int = 0) -> Path:
    """One file per name in ``root`` (e.g. ``ptb.train.txt``): ``sentences`` lines of 3 to 8 words
    separated by spaces, the layout of PTB, SNLI and Yahoo; returns root."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        lines = [" ".join(rng.choice(TEXT_WORDS, size=int(rng.integers(3, 9)))) for _ in range(sentences)]
        (root / name).write_text("\n".join(lines) + "\n")
    return root
