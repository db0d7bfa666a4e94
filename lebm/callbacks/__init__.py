"""Callbacks: image grids and evaluation metrics (reconstruction MSE, anomaly AUPRC/AUROC, FID, latent probe,
text FPPL/RPPL, importance-sampled NLL)."""

from lebm.callbacks.fid import FID
from lebm.callbacks.images import HierarchicalSampleGrid, ReconstructionGrid, SampleGrid, log_image, to_uint8_grid
from lebm.callbacks.interrupt import InterruptCheckpoint
from lebm.callbacks.likelihood import MarginalLikelihood
from lebm.callbacks.metrics import AnomalyDetection, ReconstructionMSE
from lebm.callbacks.probe import LatentProbe
from lebm.callbacks.text import TextGenerationMetrics

__all__ = [
    "FID",
    "InterruptCheckpoint",
    "AnomalyDetection",
    "HierarchicalSampleGrid",
    "LatentProbe",
    "MarginalLikelihood",
    "ReconstructionGrid",
    "ReconstructionMSE",
    "SampleGrid",
    "TextGenerationMetrics",
    "log_image",
    "to_uint8_grid",
]
