"""The fixed preprocessing chain of image-folder datasets (CelebA, arbitrary folders).

Steps, in this order (each one optional):

1. convert to RGB (``channels=3``) or grey ``L`` (``channels=1``);
2. ``crop_box``: crop the pixel box ``(left, top, right, bottom)``;
3. ``resize_shorter_side``: resize so that the shorter side has this many pixels, keeping the
   aspect ratio (the longer side is truncated to an integer, as torchvision's ``Resize(int)``);
4. ``center_crop``: crop the centred ``center_crop`` x ``center_crop`` square;
5. ``image_size``: resize to ``image_size`` x ``image_size`` (skipped when already that size).

Resizes are bilinear and antialiased when shrinking (PIL's ``BILINEAR`` filter scales its support
with the reduction factor), the same filter torchvision applies to PIL images. Steps 3 + 4 with
equal sides reproduce torchvision's ``Resize(s)`` then ``CenterCrop(s)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

CropBox = tuple[int, int, int, int]
#: (width, height) in pixels, PIL's order.
Size = tuple[int, int]


def shorter_side_size(width: int, height: int, shorter_side: int) -> Size:
    """(width, height) after resizing the shorter side to ``shorter_side`` with the aspect ratio kept.

    The longer side is ``int(shorter_side * long / short)`` (truncated, as torchvision does).
    """
    if width <= height:
        return shorter_side, int(shorter_side * height / width)
    return int(shorter_side * width / height), shorter_side


def center_crop_box(width: int, height: int, size: int) -> CropBox:
    """``(left, top, right, bottom)`` of the centred ``size`` x ``size`` square of a width x height image."""
    left = (width - size) // 2
    top = (height - size) // 2
    return left, top, left + size, top + size


def _optional_positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def _checked_box(crop_box: Sequence[int] | None) -> CropBox | None:
    if crop_box is None:
        return None
    if len(crop_box) != 4:
        raise ValueError(f"crop_box must be (left, top, right, bottom), got {crop_box}")
    left, top, right, bottom = (int(value) for value in crop_box)
    if right <= left or bottom <= top:
        raise ValueError(f"crop_box {tuple(crop_box)} is empty: need left < right and top < bottom")
    return left, top, right, bottom


@dataclass(frozen=True)
class FolderPreprocess:
    """The preprocessing chain of the module docstring, applied to one PIL image at a time.

    Args:
        channels: 3 (RGB) or 1 (grey).
        crop_box: optional ``(left, top, right, bottom)`` box, applied first.
        resize_shorter_side: optional length of the shorter side after the first resize.
        center_crop: optional side of the centred square crop (must fit in the image).
        image_size: optional side of the square output.
    """

    channels: int = 3
    crop_box: CropBox | None = None
    resize_shorter_side: int | None = None
    center_crop: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        object.__setattr__(self, "crop_box", _checked_box(self.crop_box))
        for name in ("resize_shorter_side", "center_crop", "image_size"):
            _optional_positive(name, getattr(self, name))

    def output_size(self, size: Size | None = None) -> Size | None:
        """(width, height) of the output for an input of ``size``; None when it depends on the input.

        With ``size=None`` (input unknown) the answer is still known when a later step fixes it,
        e.g. ``image_size``, ``center_crop`` or ``crop_box`` without a resize after it.
        """
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            size = (right - left, bottom - top)
        if self.resize_shorter_side is not None:
            size = shorter_side_size(*size, self.resize_shorter_side) if size is not None else None
        if self.center_crop is not None:
            size = (self.center_crop, self.center_crop)
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
        return size

    def __call__(self, image: Image.Image, source: str = "<image>") -> Image.Image:
        """Apply the chain to ``image``; ``source`` names the file in error messages."""
        image = image.convert("RGB" if self.channels == 3 else "L")
        if self.crop_box is not None:
            image = image.crop(self.crop_box)
        if self.resize_shorter_side is not None:
            target = shorter_side_size(*image.size, self.resize_shorter_side)
            if image.size != target:
                image = image.resize(target, Image.Resampling.BILINEAR)
        if self.center_crop is not None:
            width, height = image.size
            if self.center_crop > min(width, height):
                raise ValueError(
                    f"center_crop {self.center_crop} does not fit the {width}x{height} image {source} "
                    "(after crop_box / resize_shorter_side); lower center_crop or raise resize_shorter_side"
                )
            image = image.crop(center_crop_box(width, height, self.center_crop))
        if self.image_size is not None and image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return image
