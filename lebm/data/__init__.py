"""Data: readers for standard dataset files, image and toy-mixture LightningDataModules."""

from lebm.data.anomaly import MNISTAnomalyDataModule, anomaly_split
from lebm.data.folder import ImageFolderDataset, celeba_dataset, list_image_files
from lebm.data.images import DATASET_NAMES, ImageDataModule
from lebm.data.readers import read_cifar10, read_digits, read_mnist_csv, read_mnist_idx, read_svhn
from lebm.data.synthetic import GaussianMixture, MixtureDataModule
from lebm.data.transforms import from_signed_unit, to_signed_unit

__all__ = [
    "DATASET_NAMES",
    "GaussianMixture",
    "ImageDataModule",
    "ImageFolderDataset",
    "MNISTAnomalyDataModule",
    "MixtureDataModule",
    "anomaly_split",
    "celeba_dataset",
    "from_signed_unit",
    "list_image_files",
    "read_cifar10",
    "read_digits",
    "read_mnist_csv",
    "read_mnist_idx",
    "read_svhn",
    "to_signed_unit",
]
