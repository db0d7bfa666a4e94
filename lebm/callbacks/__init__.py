"""Callbacks: image grids and evaluation metrics (reconstruction MSE, anomaly AUPRC/AUROC, FID)."""

from lebm.callbacks.fid import FID
from lebm.callbacks.images import ReconstructionGrid, SampleGrid, log_image, to_uint8_grid
from lebm.callbacks.interrupt import InterruptCheckpoint
from lebm.callbacks.metrics import AnomalyDetection, ReconstructionMSE

__all__ = [
    "FID",
    "InterruptCheckpoint",
    "AnomalyDetection",
    "ReconstructionGrid",
    "ReconstructionMSE",
    "SampleGrid",
    "log_image",
    "to_uint8_grid",
]
