"""Dataset sources: list the images of one chest X-ray dataset with labels (no pixel decoding).

Every source returns from ``records()`` a DataFrame with columns ``image_id`` (unique str),
``path`` (absolute str, or None for array-backed sources), ``patient_id`` (str),
``official_split`` (train/val/test or NaN) and one float column per name in ``pathologies``
(1 present, 0 absent, NaN unknown).

Why not torchxrayvision's dataset classes: ``xrv.datasets.NIH_Dataset`` / ``CheX_Dataset``
decode through skimage into [-1024, 1024] floats (we cache 8-bit pixels), default to its
bundled full-size CSVs, PA views and one image per patient, reseed numpy's global RNG, and
``import torchxrayvision`` silences warnings process-wide. We keep their pathology names and
label rules (CheXpert: -1 -> NaN, "No Finding" zeroes the findings) and check both against
torchxrayvision in tests/data.
"""

from dpglow.data.sources.base import SPLIT_NAMES, RecordSource, labels_from_findings, read_label_csv
from dpglow.data.sources.chexpert import CHEXPERT_PATHOLOGIES, CheXpertSource
from dpglow.data.sources.folders import FolderSource, PediatricSource, TableSource
from dpglow.data.sources.medmnist import CHESTMNIST_PATHOLOGIES, MedMNISTSource
from dpglow.data.sources.nih import NIH_PATHOLOGIES, NIHSource

__all__ = [
    "CHESTMNIST_PATHOLOGIES",
    "CHEXPERT_PATHOLOGIES",
    "NIH_PATHOLOGIES",
    "SPLIT_NAMES",
    "CheXpertSource",
    "FolderSource",
    "MedMNISTSource",
    "NIHSource",
    "PediatricSource",
    "RecordSource",
    "TableSource",
    "labels_from_findings",
    "read_label_csv",
]
