"""Callbacks: image grids, learning curves and evaluation metrics (reconstruction MSE, anomaly
AUPRC/AUROC, FID, latent probe, text FPPL/RPPL, importance-sampled NLL), mixing diagnostics of
long-run chains, the prediction writer of ``lebm predict``, an exponential moving average of the
weights for evaluation (``WeightEMA``); speed: the switches for whole-chain CUDA-graph capture and
for recorded training iterations, fast paths for the nets (compile, channels-last) and the CPU thread
count."""

from lebm.callbacks.chain_diagnostics import ChainDiagnostics
from lebm.callbacks.curves import LearningCurves
from lebm.callbacks.ema import WeightEMA
from lebm.callbacks.fid import FID
from lebm.callbacks.images import HierarchicalSampleGrid, ReconstructionGrid, SampleGrid, log_image, to_uint8_grid
from lebm.callbacks.interrupt import InterruptCheckpoint
from lebm.callbacks.likelihood import MarginalLikelihood
from lebm.callbacks.metrics import AnomalyDetection, ReconstructionMSE
from lebm.callbacks.predictions import PredictionWriter
from lebm.callbacks.probe import LatentProbe
from lebm.callbacks.progress import EpochProgress
from lebm.callbacks.progress_bar import RunProgressBar, RunRichProgressBar
from lebm.callbacks.recovery import DivergenceRecovery
from lebm.callbacks.text import TextGenerationMetrics
from lebm.callbacks.text_samples import TextSamples
from lebm.recording.run_switches import ChainCapture, RecordedIterations
from lebm.speed.fast_nets import FastNets, apply_fast_paths
from lebm.speed.threads import CPUThreads

__all__ = [
    "CPUThreads",
    "ChainCapture",
    "ChainDiagnostics",
    "DivergenceRecovery",
    "EpochProgress",
    "FID",
    "FastNets",
    "InterruptCheckpoint",
    "AnomalyDetection",
    "HierarchicalSampleGrid",
    "LatentProbe",
    "LearningCurves",
    "MarginalLikelihood",
    "PredictionWriter",
    "RecordedIterations",
    "ReconstructionGrid",
    "ReconstructionMSE",
    "RunProgressBar",
    "RunRichProgressBar",
    "SampleGrid",
    "TextGenerationMetrics",
    "TextSamples",
    "WeightEMA",
    "apply_fast_paths",
    "log_image",
    "to_uint8_grid",
]
