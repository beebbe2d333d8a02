"""Chest X-ray data: sources, image decoding, patient-grouped splits, cache and datamodule.

Importing this package registers the OmegaConf resolvers of ``conf/paths`` (``${dpglow_data_dir:}``,
``${dpglow_root:}``).
"""

from dpglow.data.acquisition import AcquisitionAugment
from dpglow.data.augment import AugmentedDataset, RandomZoom
from dpglow.data.datamodule import ChestXrayDataModule
from dpglow.data.io import read_image
from dpglow.data.paths import (
    DataFormatError,
    DatasetNotFoundError,
    default_data_dir,
    register_resolvers,
)
from dpglow.data.sources import (
    CheXpertSource,
    FolderSource,
    MedMNISTSource,
    NIHSource,
    PediatricSource,
    TableSource,
)
from dpglow.data.splits import make_splits

register_resolvers()

__all__ = [
    "AcquisitionAugment",
    "AugmentedDataset",
    "CheXpertSource",
    "ChestXrayDataModule",
    "DataFormatError",
    "DatasetNotFoundError",
    "FolderSource",
    "MedMNISTSource",
    "NIHSource",
    "PediatricSource",
    "RandomZoom",
    "TableSource",
    "default_data_dir",
    "make_splits",
    "read_image",
]
