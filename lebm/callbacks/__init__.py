"""Callbacks: image grids and evaluation metrics (reconstruction MSE, anomaly AUPRC/AUROC, FID, latent probe)."""

from lebm.callbacks.fid import FID
from lebm.callbacks.images import HierarchicalSampleGrid, ReconstructionGrid, SampleGrid, log_image, to_uint8_grid
from lebm.callbacks.interrupt import InterruptCheckpoint
from lebm.callbacks.metrics import AnomalyDetection, ReconstructionMSE
from lebm.callbacks.probe import LatentProbe

__all__ = [
    "FID",
    "InterruptCheckpoint",
    "AnomalyDetection",
    "HierarchicalSampleGrid",
    "LatentProbe",
    "ReconstructionGrid",
    "ReconstructionMSE",
    "SampleGrid",
    "log_image",
    "to_uint8_grid",
]
