"""Find the on-disk files of each dataset, or raise a ``FileNotFoundError`` that says what to do.

These functions only look at the file system (no reading), so they are cheap enough to call when
a data module is constructed: a wrong path then fails before any model is built.
"""

from __future__ import annotations

from pathlib import Path

from lebm.data.errors import DOWNLOAD_HINT, missing_data_error

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SVHN_SPLITS = ("train", "test", "extra")
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CELEBA_FOLDER = "img_align_celeba"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Sub-folder of ``root`` where torchvision's MNIST / FashionMNIST classes put the raw IDX files.
MNIST_RAW_FOLDER = "MNIST"
FASHION_MNIST_RAW_FOLDER = "FashionMNIST"

MNIST_HOW_TO = (
    "download the official files from http://yann.lecun.com/exdb/mnist/ "
    "(mirror: https://ossci-datasets.s3.amazonaws.com/mnist/) into '{root}', " + DOWNLOAD_HINT + "."
)
FASHION_MNIST_HOW_TO = (
    "download the four *-ubyte.gz files (train-images, train-labels, t10k-images, t10k-labels) from "
    "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion/) into '{root}', " + DOWNLOAD_HINT + "."
)
SVHN_HOW_TO = (
    "download the cropped-digits files (Format 2) from http://ufldl.stanford.edu/housenumbers/ "
    "into '{root}', " + DOWNLOAD_HINT + "."
)
CIFAR10_HOW_TO = (
    "download the python version (cifar-10-python.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it into '{root}' (it unpacks to cifar-10-batches-py/), " + DOWNLOAD_HINT + "."
)
CELEBA_HOW_TO = (
    "CelebA must be downloaded by hand (automatic download is not supported, `download: true` does not apply): "
    "get 'Align&Cropped Images' (img_align_celeba.zip) from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
    "and unzip it into '{root}' so that '{root}/img_align_celeba/000001.jpg' exists."
)
MNIST_CSV_HOW_TO = (
    "pass as root either the CSV file itself or a folder holding exactly one *.csv / *.csv.gz file; "
    "each row is 784 pixel values (0-255) followed by the label."
)
FOLDER_HOW_TO = "put image files ({extensions}) in '{root}' or in its sub-folders."


def _split_check(split: str, valid: tuple[str, ...] | dict, dataset: str) -> None:
    if split not in valid:
        raise ValueError(f"{dataset}: unknown split {split!r}; valid splits are {sorted(valid)}")


def mnist_idx_candidates(root: Path | str, name: str, raw_folder: str = MNIST_RAW_FOLDER) -> list[Path]:
    """All places one IDX file may live: ``root/`` or torchvision's ``root/<raw_folder>/raw/``, plain or ``.gz``."""
    root = Path(root)
    folders = (root, root / raw_folder / "raw")
    return [folder / (name + suffix) for folder in folders for suffix in ("", ".gz")]


def locate_idx_pair(root: Path | str, split: str, raw_folder: str, title: str, how_to: str) -> tuple[Path, Path]:
    """Return ``(images_path, labels_path)`` of one split of an MNIST-format (IDX) dataset.

    The files carry MNIST's names (``train-*`` / ``t10k-*``) and lie in ``root/`` or
    ``root/<raw_folder>/raw/`` (torchvision's layout), plain or gzipped.

    Args:
        root: folder the user pointed at.
        split: "train" or "test".
        raw_folder: torchvision's folder name for this dataset ("MNIST", "FashionMNIST").
        title: dataset name used in error messages.
        how_to: where to get the files (``{root}`` is filled in).
    """
    _split_check(split, MNIST_FILES, title)
    found: list[Path] = []
    missing: list[Path] = []
    for name in MNIST_FILES[split]:
        candidates = mnist_idx_candidates(root, name, raw_folder)
        existing = [path for path in candidates if path.is_file()]
        if existing:
            found.append(existing[0])
        else:
            missing.extend(candidates)
    if missing:
        raise missing_data_error(
            f"{title} {split} split (IDX files)",
            root,
            missing,
            [name + "[.gz]" for name in MNIST_FILES[split]],
            how_to.format(root=root),
        )
    return found[0], found[1]


def locate_mnist_idx(root: Path | str, split: str) -> tuple[Path, Path]:
    """Return ``(images_path, labels_path)`` of one MNIST split ("train" or "test")."""
    return locate_idx_pair(root, split, MNIST_RAW_FOLDER, "MNIST", MNIST_HOW_TO)


def locate_fashion_mnist(root: Path | str, split: str) -> tuple[Path, Path]:
    """Return ``(images_path, labels_path)`` of one Fashion-MNIST split ("train" or "test").

    Looked for in ``root/`` and torchvision's ``root/FashionMNIST/raw/``, plain or ``.gz``.
    """
    return locate_idx_pair(root, split, FASHION_MNIST_RAW_FOLDER, "Fashion-MNIST", FASHION_MNIST_HOW_TO)


def locate_svhn(root: Path | str, split: str) -> Path:
    """Return the path of ``root/{split}_32x32.mat``."""
    _split_check(split, SVHN_SPLITS, "SVHN")
    path = Path(root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise missing_data_error(f"SVHN {split} split", root, [path], [path.name], SVHN_HOW_TO.format(root=root))
    return path


def locate_cifar10(root: Path | str, split: str) -> list[Path]:
    """Return the pickle batch paths of one CIFAR-10 split, from ``root/cifar-10-batches-py/`` or ``root/``."""
    _split_check(split, CIFAR10_FILES, "CIFAR-10")
    root = Path(root)
    names = CIFAR10_FILES[split]
    for folder in (root / CIFAR10_FOLDER, root):
        paths = [folder / name for name in names]
        if all(path.is_file() for path in paths):
            return paths
    expected = [folder / name for folder in (root / CIFAR10_FOLDER, root) for name in names]
    raise missing_data_error(f"CIFAR-10 {split} split", root, expected, list(names), CIFAR10_HOW_TO.format(root=root))


def locate_mnist_csv(root: Path | str) -> Path:
    """Return the MNIST CSV: ``root`` itself when it is a file, else the single ``*.csv[.gz]`` inside it."""
    root = Path(root)
    if root.is_file():
        return root
    candidates = sorted([*root.glob("*.csv"), *root.glob("*.csv.gz")]) if root.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise ValueError(f"MNIST CSV: several CSV files in '{root}' ({names}); pass the path of one file as root")
    raise missing_data_error(
        "MNIST CSV", root, [root, root / "*.csv", root / "*.csv.gz"], ["<name>.csv", "<name>.csv.gz"], MNIST_CSV_HOW_TO
    )


def locate_celeba(root: Path | str) -> Path:
    """Return the CelebA image folder.

    Accepted: ``root/img_align_celeba``, torchvision's ``root/celeba/img_align_celeba``, or ``root`` itself
    when it is named ``img_align_celeba``.
    """
    root = Path(root)
    candidates = [root / CELEBA_FOLDER, root / "celeba" / CELEBA_FOLDER]
    if root.name == CELEBA_FOLDER:
        candidates.insert(0, root)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise missing_data_error("CelebA", root, candidates, [CELEBA_FOLDER + "/"], CELEBA_HOW_TO.format(root=root))


def locate_image_folder(root: Path | str) -> Path:
    """Return ``root`` when it is an existing folder (its images are listed later, lazily)."""
    root = Path(root)
    if not root.is_dir():
        how_to = FOLDER_HOW_TO.format(extensions=", ".join(IMAGE_EXTENSIONS), root=root)
        raise missing_data_error("Image folder", root, [root], ["<folder with images>/"], how_to)
    return root
