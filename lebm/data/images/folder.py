"""Lazy image-folder dataset (arbitrary folders and CelebA): files are opened one item at a time.

Files that are not readable images (not an image, empty, cut short, no read permission) are named
with the fix, never left to end a run in a raw traceback: the dataset reads every file's header
when it is built (cheap: about 25 us a file), so most are found before training; a file whose
header is fine but whose pixel data are broken (a cut-short download) is found when it is loaded.
With ``skip_unreadable`` both are left out instead, counted in a warning.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from lebm.data.errors import DataError, missing_data_error
from lebm.data.images.folder_preprocess import CropBox, FolderPreprocess, center_crop_box  # noqa: F401 (center_crop_box: re-export)
from lebm.data.locate import FOLDER_HOW_TO, IMAGE_EXTENSIONS, locate_celeba, locate_image_folder

#: CelebA preprocessing used by the latent-EBM papers: 140x140 centre crop, then 64x64.
CELEBA_CENTER_CROP = 140
CELEBA_IMAGE_SIZE = 64
#: What opening or decoding a file that is not a readable image raises (PIL's
#: ``UnidentifiedImageError`` and "image file is truncated" are ``OSError``, as is a permission error).
UNREADABLE_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
#: How to leave unreadable files out, for messages.
SKIP_HINT = "or pass skip_unreadable=True (CLI: `--data.init_args.skip_unreadable true`) to leave such files out"
#: Unreadable files named in one message (the others are counted).
NAMED_FILES = 3


class UnreadableImageError(DataError):
    """An image file that cannot be opened or decoded (the message names it and the fix).

    Attributes:
        path: the file, when the error is about one file (None for several).
    """

    path: Path | None = None


def unreadable_reason(error: BaseException, path: Path) -> str:
    """The first line of ``error``'s message about ``path`` (its class name when it has none),
    without the path (the messages name it first)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line.replace(f" {str(path)!r}", "").replace(f": {str(path)!r}", "")


def header_problem(path: Path) -> str | None:
    """None when ``path``'s header reads as an image (PIL identifies it and its size), else why
    not. Cheap: only the first bytes are read, the pixels are not decoded."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (the header is parsed by open; the size is part of it)
    except UNREADABLE_IMAGE_ERRORS as error:
        return unreadable_reason(error, path)
    return None


def unreadable_files_error(root: Path, bad: Sequence[tuple[Path, str]], checked: int) -> UnreadableImageError:
    """Build (not raise) the one-line error for the unreadable files ``bad`` ``(path, reason)``
    found among ``checked`` files under ``root``."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:NAMED_FILES])
    more = f"; and {len(bad) - NAMED_FILES} more" if len(bad) > NAMED_FILES else ""
    return UnreadableImageError(
        f"{len(bad)} of {checked} image files under '{root}' cannot be read as images: {shown}{more}. Delete or "
        f"replace them (an interrupted download or copy leaves such files), {SKIP_HINT}"
    )


def readable_files(files: Sequence[Path], limit: int | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Check the headers of ``files`` in order (:func:`header_problem`) until ``limit`` readable
    ones are found (all of them without a limit). Returns the readable files and the unreadable
    ones checked on the way, as ``(path, reason)``."""
    readable: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for path in files:
        if limit is not None and len(readable) >= limit:
            break
        problem = header_problem(path)
        if problem is None:
            readable.append(path)
        else:
            bad.append((path, problem))
    return readable, bad


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

    Unreadable files (see the module docstring): the headers of the files served are read when the
    dataset is built, and an unreadable one is a :class:`UnreadableImageError` naming every such
    file (up to three, the rest counted) and the fix. With ``skip_unreadable`` they are left out
    instead (``limit`` then counts readable files; :attr:`skipped` lists them, a warning counts
    them), and a file found broken only when loaded is replaced by the next readable file of the
    list, once more with a warning that names it.

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
        skip_unreadable: leave unreadable files out (with a warning that counts them) instead of
            raising :class:`UnreadableImageError`.

    Attributes:
        files: the files served, in order.
        skipped: the unreadable files left out when the dataset was built, as ``(path, reason)``.
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
        skip_unreadable: bool = False,
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
        self.skip_unreadable = bool(skip_unreadable)
        listed = list(files) if files is not None else list_image_files(self.root, extensions)
        if not listed:
            how_to = FOLDER_HOW_TO.format(extensions=", ".join(extensions), root=self.root)
            raise missing_data_error("Image folder", self.root, [self.root / "**/*"], list(extensions), how_to)
        self.files, self.skipped = readable_files(listed if self.skip_unreadable else listed[:limit], limit)
        if self.skipped and (not self.skip_unreadable or not self.files):
            raise unreadable_files_error(self.root, self.skipped, len(self.files) + len(self.skipped))
        if self.skipped:
            shown = ", ".join(str(path) for path, _ in self.skipped[:NAMED_FILES])
            more = f" and {len(self.skipped) - NAMED_FILES} more" if len(self.skipped) > NAMED_FILES else ""
            warnings.warn(
                f"skip_unreadable: {len(self.skipped)} unreadable image files under '{self.root}' are left out "
                f"({shown}{more}); {len(self.files)} images remain",
                UserWarning,
                stacklevel=2,
            )
        self._broken: set[int] = set()  # items found unreadable when loaded (skip_unreadable only)

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
        """The preprocessed PIL image of item ``index`` (mode RGB or L); an
        :class:`UnreadableImageError` naming the file when it cannot be opened or decoded."""
        path = self.files[index]
        with _opened(path) as opened:
            return self.preprocess(opened, source=str(path))

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Returns ``(image, -1)`` with image uint8 (C, H, W). With ``skip_unreadable``, an item
        whose file cannot be decoded serves the next readable file of the list instead."""
        pixels = np.array(self._load_readable(index), dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), -1

    def _load_readable(self, index: int) -> Image.Image:
        """:meth:`load_image` of ``index``, or with ``skip_unreadable`` of the first readable item
        from ``index`` on (wrapping round), warning once for each broken file met."""
        if not self.skip_unreadable:
            return self.load_image(index)
        for offset in range(len(self.files)):
            position = (index + offset) % len(self.files)
            if position in self._broken:
                continue
            try:
                return self.load_image(position)
            except UnreadableImageError as error:
                self._broken.add(position)
                warnings.warn(
                    f"skip_unreadable: {error.path} cannot be decoded and is left out, the next readable image "
                    f"serving in its place ({len(self._broken)} file(s) left out while loading in this process, "
                    f"{len(self.skipped)} when the data set was built)",
                    UserWarning,
                    stacklevel=2,
                )
        raise UnreadableImageError(f"none of the {len(self.files)} image files under '{self.root}' can be decoded")


def _opened(path: Path) -> Image.Image:
    """``path`` opened and decoded (``Image.load``), to be used in a ``with`` block; an
    :class:`UnreadableImageError` naming it and the fix when it cannot be."""
    try:
        image = Image.open(path)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise _load_error(path, error) from None
    try:
        image.load()
    except UNREADABLE_IMAGE_ERRORS as error:
        image.close()
        raise _load_error(path, error) from None
    return image


def _load_error(path: Path, error: BaseException) -> UnreadableImageError:
    """The error of a file that cannot be opened or decoded: the file, why, and the fix."""
    failure = UnreadableImageError(
        f"{path} cannot be read as an image ({unreadable_reason(error, path)}): delete or replace it (an interrupted "
        f"download or copy leaves such files), {SKIP_HINT}"
    )
    failure.path = path
    return failure


def celeba_dataset(
    root: Path | str,
    image_size: int = CELEBA_IMAGE_SIZE,
    center_crop: int | None = CELEBA_CENTER_CROP,
    crop_box: CropBox | Sequence[int] | None = None,
    channels: int = 3,
    limit: int | None = None,
    resize_shorter_side: int | None = None,
    skip_unreadable: bool = False,
) -> ImageFolderDataset:
    """CelebA aligned faces from ``root/img_align_celeba`` (or ``root/celeba/img_align_celeba``).

    Defaults follow the latent-EBM papers: 140x140 centre crop, resized to 64x64. ``limit=40000``
    gives the first 40,000 files in sorted order (the subset used for the SRI experiments). The
    official 128x128 protocol is ``resize_shorter_side=128, center_crop=128, image_size=128``.
    ``skip_unreadable`` leaves unreadable files out (see :class:`ImageFolderDataset`).
    """
    return ImageFolderDataset(
        locate_celeba(root),
        image_size=image_size,
        channels=channels,
        crop_box=crop_box,
        center_crop=center_crop,
        limit=limit,
        resize_shorter_side=resize_shorter_side,
        skip_unreadable=skip_unreadable,
    )
