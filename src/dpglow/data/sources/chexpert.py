"""CheXpert (train.csv / valid.csv; frontal views; -1 is unknown)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dpglow.data.paths import DataFormatError, DatasetNotFoundError, not_found_message
from dpglow.data.sources.base import (
    RecordSource,
    drop_missing_files,
    finish_records,
    read_label_csv,
)

log = logging.getLogger(__name__)

# torchxrayvision's CheX_Dataset order: sorted CSV names, then "Pleural Effusion" -> "Effusion".
CHEXPERT_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
_CHEXPERT_CSV_NAME = {"Effusion": "Pleural Effusion"}


class CheXpertSource(RecordSource):
    """CheXpert (``CheXpert-v1.0-small`` or ``CheXpert-v1.0`` folder with train.csv, valid.csv).

    ``valid.csv`` is CheXpert's usual held-out set, so it becomes ``official_split="test"``.
    Labels follow torchxrayvision: -1 (uncertain) and blank -> NaN, and "No Finding" = 1 sets
    every finding except Support Devices to 0.
    """

    name = "chexpert"
    pathologies = CHEXPERT_PATHOLOGIES

    def __init__(self, root: str | os.PathLike[str], frontal_only: bool = True) -> None:
        super().__init__(root)
        self.frontal_only = frontal_only

    def _read(self, csv_path: Path, split: str) -> pd.DataFrame:
        csv_cols = [_CHEXPERT_CSV_NAME.get(p, p) for p in self.pathologies]
        df = read_label_csv(csv_path, ["Path", "Frontal/Lateral", "No Finding", *csv_cols])
        if self.frontal_only:
            df = df.loc[df["Frontal/Lateral"].str.strip() == "Frontal"]
        # "CheXpert-v1.0-small/train/patient1/..." is relative to root's parent; drop the
        # first component so a renamed root folder still works.
        rel = df["Path"].str.strip().str.replace(r"^CheXpert-v1\.0[^/]*/", "", regex=True)
        out = pd.DataFrame({"image_id": rel, "official_split": split}, index=df.index)
        out["path"] = [str(self.root / r) for r in rel]
        out["patient_id"] = rel.str.extract(r"(patient\d+)", expand=False)
        if out["patient_id"].isna().any():
            bad = rel[out["patient_id"].isna()].iloc[0]
            raise DataFormatError(f"{csv_path}: no patientNNNNN in Path {bad!r}")
        values = df[csv_cols].apply(pd.to_numeric, errors="coerce").astype(np.float32)
        values.columns = list(self.pathologies)
        healthy = pd.to_numeric(df["No Finding"], errors="coerce") == 1
        findings = [p for p in self.pathologies if p != "Support Devices"]
        values.loc[healthy, findings] = 0.0
        values = values.mask(values == -1)
        return pd.concat([out, values], axis=1)

    def _load_records(self) -> pd.DataFrame:
        parts = [
            self._read(self.root / csv, split)
            for csv, split in (("train.csv", "train"), ("valid.csv", "test"))
            if (self.root / csv).is_file()
        ]
        if not parts:
            raise DatasetNotFoundError(
                f"No train.csv or valid.csv in {self.root} (expected the CheXpert-v1.0-small "
                "folder itself).\n" + not_found_message(self.root)
            )
        df = drop_missing_files(pd.concat(parts, ignore_index=True), self.name)
        return finish_records(df, self.pathologies, self.name)
