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
from lebm.data.locate import FOLDER_HOW_TO, IMAGE_EXTENSIONS, locate_celeba, locate_image_folder

#: CelebA preprocessing used by the latent-EBM papers: 140x140 centre crop, then 64x64.
CELEBA_CENTER_CROP = 140
CELEBA_IMAGE_SIZE = 64

CropBox = tuple[int, int, int, int]


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


def center_crop_box(width: int, height: int, size: int) -> CropBox:
    """``(left, top, right, bottom)`` of the centred ``size`` x ``size`` square of a width x height image."""
    left = (width - size) // 2
    top = (height - size) // 2
    return left, top, left + size, top + size


class ImageFolderDataset(Dataset):
    """Images found recursively under ``root``, loaded on access.

    Each item goes through: open with PIL -> convert to RGB (``channels=3``) or grey ``L``
    (``channels=1``) -> crop ``crop_box`` -> centre crop ``center_crop`` -> resize to
    ``image_size`` x ``image_size`` (bilinear, antialiased when shrinking).

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
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if crop_box is not None and len(crop_box) != 4:
            raise ValueError(f"crop_box must be (left, top, right, bottom), got {crop_box}")
        for name, value in (("image_size", image_size), ("center_crop", center_crop), ("limit", limit)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.root = locate_image_folder(root)
        self.image_size = image_size
        self.channels = channels
        self.crop_box: CropBox | None = None
        if crop_box is not None:
            left, top, right, bottom = (int(value) for value in crop_box)
            self.crop_box = (left, top, right, bottom)
        self.center_crop = center_crop
        files = list_image_files(self.root, extensions)
        self.files = files[:limit] if limit is not None else files
        if not self.files:
            how_to = FOLDER_HOW_TO.format(extensions=", ".join(extensions), root=self.root)
            raise missing_data_error("Image folder", self.root, [self.root / "**/*"], list(extensions), how_to)

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> Image.Image:
        """The preprocessed PIL image of item ``index`` (mode RGB or L)."""
        path = self.files[index]
        with Image.open(path) as opened:
            image = opened.convert("RGB" if self.channels == 3 else "L")
        if self.crop_box is not None:
            image = image.crop(self.crop_box)
        if self.center_crop is not None:
            width, height = image.size
            if self.center_crop > min(width, height):
                raise ValueError(f"center_crop {self.center_crop} does not fit the {width}x{height} image {path}")
            image = image.crop(center_crop_box(width, height, self.center_crop))
        if self.image_size is not None and image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return image

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
) -> ImageFolderDataset:
    """CelebA aligned faces from ``root/img_align_celeba`` (or ``root/celeba/img_align_celeba``).

    Defaults follow the latent-EBM papers: 140x140 centre crop, resized to 64x64. ``limit=40000``
    gives the first 40,000 files in sorted order (the subset used for the SRI experiments).
    """
    return ImageFolderDataset(
        locate_celeba(root),
        image_size=image_size,
        channels=channels,
        crop_box=crop_box,
        center_crop=center_crop,
        limit=limit,
    )
