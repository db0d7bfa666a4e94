"""Lazy image-folder dataset (arbitrary folders and CelebA): files are opened one item at a time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from lebm.data.errors import missing_data_error
from lebm.data.images.folder_preprocess import CropBox, FolderPreprocess, center_crop_box  # noqa: F401 (center_crop_box: re-export)
from lebm.data.locate import FOLDER_HOW_TO, IMAGE_EXTENSIONS, locate_celeba, locate_image_folder

#: CelebA preprocessing used by the latent-EBM papers: 140x140 centre crop, then 64x64.
CELEBA_CENTER_CROP = 140
CELEBA_IMAGE_SIZE = 64


def list_image_files(root: Path | str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root`` (recursive), sorted by relative path for determinism.

    Hidden files (name starting with ".") are skipped; the extension check ignores case.
    """
    root = Path(root)
    wanted = tuple(ext.lower() for ext in extensions)
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(
            Path(folder) / name for name in names if not name.startswith(".") and name.lower().endswith(wanted)
        )
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


class ImageFolderDataset(Dataset):
    """Images found recursively under ``root``, loaded on access.

    Each item goes through :class:`~lebm.data.images.folder_preprocess.FolderPreprocess`: convert to RGB
    (``channels=3``) or grey (``channels=1``) -> crop ``crop_box`` -> resize the shorter side to
    ``resize_shorter_side`` -> centre crop ``center_crop`` -> resize to ``image_size`` x
    ``image_size`` (bilinear, antialiased when shrinking).

    Items are ``(image, label)`` with ``image`` a uint8 tensor (C, H, W) and ``label`` = -1.

    Args:
        root: folder to scan.
        image_size: side of the square output; None keeps the (cropped) size, so all images
            must then share one size to be batched.
        channels: 3 (RGB) or 1 (grey).
        crop_box: optional ``(left, top, right, bottom)`` pixel box, applied first.
        center_crop: optional side of a centred square crop (must fit inside the image).
        limit: keep only the first ``limit`` files of the sorted list.
        extensions: accepted file name endings (case-insensitive).
        resize_shorter_side: optional shorter-side length of a resize done after ``crop_box``
            and before ``center_crop`` (aspect ratio kept).
        files: the image files to serve, in order, instead of scanning ``root`` (``limit``
            still applies); lets a caller list a large folder once.
    """

    def __init__(
        self,
        root: Path | str,
        image_size: int | None = None,
        channels: int = 3,
        crop_box: CropBox | Sequence[int] | None = None,
        center_crop: int | None = None,
        limit: int | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        resize_shorter_side: int | None = None,
        files: Sequence[Path] | None = None,
    ) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.preprocess = FolderPreprocess(
            channels=channels,
            crop_box=tuple(crop_box) if crop_box is not None else None,  # type: ignore[arg-type]
            resize_shorter_side=resize_shorter_side,
            center_crop=center_crop,
            image_size=image_size,
        )
        self.root = locate_image_folder(root)
        listed = list(files) if files is not None else list_image_files(self.root, extensions)
        self.files = listed[:limit] if limit is not None else listed
        if not self.files:
            how_to = FOLDER_HOW_TO.format(extensions=", ".join(extensions), root=self.root)
            raise missing_data_error("Image folder", self.root, [self.root / "**/*"], list(extensions), how_to)

    @property
    def image_size(self) -> int | None:
        return self.preprocess.image_size

    @property
    def channels(self) -> int:
        return self.preprocess.channels

    @property
    def crop_box(self) -> CropBox | None:
        return self.preprocess.crop_box

    @property
    def center_crop(self) -> int | None:
        return self.preprocess.center_crop

    @property
    def resize_shorter_side(self) -> int | None:
        return self.preprocess.resize_shorter_side

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> Image.Image:
        """The preprocessed PIL image of item ``index`` (mode RGB or L)."""
        path = self.files[index]
        with Image.open(path) as opened:
            opened.load()
            return self.preprocess(opened, source=str(path))

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Returns ``(image, -1)`` with image uint8 (C, H, W)."""
        pixels = np.array(self.load_image(index), dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), -1


def celeba_dataset(
    root: Path | str,
    image_size: int = CELEBA_IMAGE_SIZE,
    center_crop: int | None = CELEBA_CENTER_CROP,
    crop_box: CropBox | Sequence[int] | None = None,
    channels: int = 3,
    limit: int | None = None,
    resize_shorter_side: int | None = None,
) -> ImageFolderDataset:
    """CelebA aligned faces from ``root/img_align_celeba`` (or ``root/celeba/img_align_celeba``).

    Defaults follow the latent-EBM papers: 140x140 centre crop, resized to 64x64. ``limit=40000``
    gives the first 40,000 files in sorted order (the subset used for the SRI experiments). The
    official 128x128 protocol is ``resize_shorter_side=128, center_crop=128, image_size=128``.
    """
    return ImageFolderDataset(
        locate_celeba(root),
        image_size=image_size,
        channels=channels,
        crop_box=crop_box,
        center_crop=center_crop,
        limit=limit,
        resize_shorter_side=resize_shorter_side,
    )
