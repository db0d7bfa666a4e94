"""Data: readers for standard dataset files, the dataset registry, image, text and toy LightningDataModules."""

from lebm.data.anomaly import MNISTAnomalyDataModule, anomaly_split
from lebm.data.folder import ImageFolderDataset, celeba_dataset, list_image_files
from lebm.data.folder_preprocess import FolderPreprocess
from lebm.data.images import DATASET_NAMES, ImageDataModule
from lebm.data.ood import OutOfDistributionDataModule
from lebm.data.readers import (
    read_cifar10,
    read_digits,
    read_fashion_mnist,
    read_mnist_csv,
    read_mnist_idx,
    read_svhn,
)
from lebm.data.registry import DatasetSpec, dataset_names, get_dataset_spec, register_dataset, unregister_dataset
from lebm.data.synthetic import GaussianMixture, MixtureDataModule
from lebm.data.text import TextDataModule
from lebm.data.text_synthetic import TemplateGrammar
from lebm.data.transforms import from_signed_unit, to_signed_unit
from lebm.data.vocabulary import Vocabulary

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
    "TemplateGrammar",
    "TextDataModule",
    "Vocabulary",
    "anomaly_split",
    "celeba_dataset",
    "dataset_names",
    "from_signed_unit",
    "get_dataset_spec",
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
