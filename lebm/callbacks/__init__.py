"""Callbacks: image grids now; evaluation metrics (FID, MSE, AUPRC) build on the same helpers."""

from lebm.callbacks.images import ReconstructionGrid, SampleGrid, log_image, to_uint8_grid

__all__ = ["ReconstructionGrid", "SampleGrid", "log_image", "to_uint8_grid"]
