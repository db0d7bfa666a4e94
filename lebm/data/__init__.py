"""Data: LightningDataModules and what they share.

- here: loaders that resume mid-epoch (``loaders``, ``resume``, ``keys``), splits, paths, transforms,
  in-memory datasets, finding files (``locate``) and the errors that say where data is missing;
- :mod:`.images`: ``ImageDataModule``, the dataset registry, readers and downloads;
- :mod:`.text`: ``TextDataModule``, the vocabulary, sentence files and batches;
- :mod:`.tasks`: anomaly detection and out-of-distribution detection;
- :mod:`.toy`: 2-D Gaussian mixtures (``MixtureDataModule``);
- :mod:`.prediction`: what ``lebm predict`` reads: the test split, or requests for generated samples.
"""

from lebm.data.images.datamodule import DATASET_NAMES, ImageDataModule
from lebm.data.images.folder import ImageFolderDataset, celeba_dataset, list_image_files
from lebm.data.images.folder_preprocess import FolderPreprocess
from lebm.data.images.readers import (
    read_cifar10,
    read_digits,
    read_fashion_mnist,
    read_mnist_csv,
    read_mnist_idx,
    read_svhn,
)
from lebm.data.images.registry import DatasetSpec, dataset_names, get_dataset_spec, register_dataset, unregister_dataset
from lebm.data.prediction import PredictionSource, SampleRequest, SampleRequests, is_sample_request
from lebm.data.tasks.anomaly import MNISTAnomalyDataModule, anomaly_split, cited_anomaly_split
from lebm.data.tasks.ood import OutOfDistributionDataModule
from lebm.data.text.datamodule import TextDataModule
from lebm.data.text.grammar import TemplateGrammar
from lebm.data.text.vocabulary import Vocabulary
from lebm.data.toy import GaussianMixture, MixtureDataModule
from lebm.data.transforms import from_signed_unit, to_signed_unit

__all__ = [
    "DATASET_NAMES",
    "DatasetSpec",
    "FolderPreprocess",
    "GaussianMixture",
    "ImageDataModule",
    "ImageFolderDataset",
    "MNISTAnomalyDataModule",
    "MixtureDataModule",
    "OutOfDistributionDataModule",
    "PredictionSource",
    "SampleRequest",
    "SampleRequests",
    "TemplateGrammar",
    "TextDataModule",
    "Vocabulary",
    "anomaly_split",
    "cited_anomaly_split",
    "celeba_dataset",
    "dataset_names",
    "from_signed_unit",
    "get_dataset_spec",
    "is_sample_request",
    "list_image_files",
    "read_cifar10",
    "read_digits",
    "read_fashion_mnist",
    "read_mnist_csv",
    "read_mnist_idx",
    "read_svhn",
    "register_dataset",
    "to_signed_unit",
    "unregister_dataset",
]
