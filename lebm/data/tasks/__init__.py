"""Evaluation tasks built on the image data: MNIST anomaly detection (one digit held out) and
out-of-distribution detection (an in-distribution and an OOD test set)."""

from lebm.data.tasks.anomaly import MNISTAnomalyDataModule, anomaly_split, cited_anomaly_split
from lebm.data.tasks.ood import OutOfDistributionDataModule

__all__ = ["MNISTAnomalyDataModule", "OutOfDistributionDataModule", "anomaly_split", "cited_anomaly_split"]
