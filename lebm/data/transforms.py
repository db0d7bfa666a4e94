"""Pixel conversions between stored uint8 images and model-space float images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: ITU-R 601-2 luma weights (the ones PIL uses for RGB -> L).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_signed_unit(images: Tensor) -> Tensor:
    """uint8 0..255 -> float32 in [-1, 1] (0 -> -1 and 255 -> 1 exactly). Any shape."""
    return images.to(torch.float32).div(127.5).sub(1.0)


def from_signed_unit(images: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8 0..255 (rounded, values outside the range clipped). Any shape."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """Force the channel count of uint8 images (N, C, H, W) with C in {1, 3}.

    1 -> 3 repeats the grey channel; 3 -> 1 takes the luma (rounded).

    Returns:
        uint8 (N, channels, H, W).
    """
    current = images.shape[1]
    if channels not in (1, 3) or current not in (1, 3):
        raise ValueError(f"can only convert between 1 and 3 channels, got {current} -> {channels}")
    if current == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    grey = (images.to(torch.float32) * weights).sum(dim=1, keepdim=True)
    return grey.round().clamp(0, 255).to(torch.uint8)


def resize_uint8(images: Tensor, size: int, chunk_size: int = 4096) -> Tensor:
    """Resize uint8 images (N, C, H, W) to (N, C, size, size), bilinear with antialiasing.

    Works in chunks of ``chunk_size`` images so the float copy stays small.
    """
    if images.shape[-2:] == (size, size):
        return images
    chunks = []
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].to(torch.float32)
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        chunks.append(resized.round().clamp(0, 255).to(torch.uint8))
    if not chunks:
        return images.new_empty((0, images.shape[1], size, size))
    return torch.cat(chunks)
