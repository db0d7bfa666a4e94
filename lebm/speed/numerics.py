"""Float32 arithmetic on NVIDIA GPUs (TF32): lebm's policy, applied in one place.

Ampere and later GPUs can run float32 matrix products and convolutions in TF32 (a 10-bit mantissa,
float32's range): several times faster, about 1e-3 relative error per operation. PyTorch's defaults
differ between the two: matrix products in full float32 (``torch.backends.cuda.matmul.allow_tf32 =
False``), cuDNN convolutions in TF32 (``torch.backends.cudnn.allow_tf32 = True``).

**lebm's policy: PyTorch's defaults, unchanged** (``tf32: pytorch``, the value ``recipes/base.yaml``
states for every recipe). Chains keep float32 states whatever the nets compute in; bf16 autocast
(``trainer.precision: bf16-mixed``) is the fast path on a GPU and is coarser than TF32 anyway. The
``lebm`` command takes ``--tf32 true`` (both in TF32: the fastest float32), ``--tf32 false`` (both
in full float32: what tests that compare numbers across paths use) or ``--tf32 pytorch``; in
Python, :func:`apply_tf32` does the same. The CPU ignores these settings.
"""

from __future__ import annotations

from typing import Literal

import torch

TF32Policy = bool | Literal["pytorch"]
#: PyTorch's own defaults: (matrix products in TF32, cuDNN convolutions in TF32).
PYTORCH_DEFAULTS = (False, True)


def apply_tf32(policy: TF32Policy = "pytorch") -> tuple[bool, bool]:
    """Set TF32 for float32 matrix products and cuDNN convolutions on CUDA devices:
    ``"pytorch"`` (products off, convolutions on: PyTorch's defaults), True (both on) or False
    (both off). Returns ``(matmul, convolutions)`` as set."""
    if policy not in ("pytorch", True, False) or isinstance(policy, int) and not isinstance(policy, bool):
        raise ValueError(f"tf32 must be pytorch, true or false, got {policy!r}")
    matmul, convolutions = PYTORCH_DEFAULTS if policy == "pytorch" else (bool(policy),) * 2
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = convolutions
    return matmul, convolutions


def tf32_state() -> tuple[bool, bool]:
    """``(matmul, convolutions)``: whether each runs in TF32 now."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
