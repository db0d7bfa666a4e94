"""Image data: ``ImageDataModule`` over the named datasets (MNIST, SVHN, CIFAR-10, CelebA, ...) and
image folders; the dataset registry and catalog, the file readers and the opt-in downloads."""

from lebm.data.images.datamodule import DATASET_NAMES, ImageDataModule
from lebm.data.images.folder import ImageFolderDataset, celeba_dataset, list_image_files
from lebm.data.images.folder_preprocess import FolderPreprocess
from lebm.data.images.registry import DatasetSpec, dataset_names, get_dataset_spec, register_dataset, unregister_dataset

__all__ = [
    "DATASET_NAMES",
    "DatasetSpec",
    "FolderPreprocess",
    "ImageDataModule",
    "ImageFolderDataset",
    "celeba_dataset",
    "dataset_names",
    "get_dataset_spec",
    "list_image_files",
    "register_dataset",
    "unregister_dataset",
]
