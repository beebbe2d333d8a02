"""The pediatric pneumonia set (labels.csv + images/) and any folder of images (no labels)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dpglow.data.io import IMAGE_SUFFIXES
from dpglow.data.paths import DatasetNotFoundError, not_found_message
from dpglow.data.sources.base import (
    RecordSource,
    drop_missing_files,
    finish_records,
    labels_from_findings,
    read_label_csv,
)

log = logging.getLogger(__name__)


class PediatricSource(RecordSource):
    """Pediatric pneumonia (Kermany): ``labels.csv`` + ``images/``; grouped by ``patient_key``."""

    name = "pediatric"
    pathologies = ["Pneumonia"]  # noqa: RUF012 (instances never mutate it)

    def _load_records(self) -> pd.DataFrame:
        csv_path = self.root / "labels.csv"
        if not csv_path.is_file():
            raise DatasetNotFoundError(not_found_message(csv_path, "pediatric label file"))
        df = read_label_csv(csv_path, ["Image Index", "Finding Labels", "patient_key"])
        out = pd.DataFrame(
            {
                "image_id": df["Image Index"].str.strip(),
                "patient_id": df["patient_key"].str.strip(),
            }
        )
        out["path"] = [str(self.root / "images" / i) for i in out["image_id"]]
        out = pd.concat([out, labels_from_findings(df["Finding Labels"], self.pathologies)], axis=1)
        return finish_records(drop_missing_files(out, self.name), self.pathologies, self.name)


class FolderSource(RecordSource):
    """Every image file under ``root`` (recursive, hidden folders skipped), without labels.

    A plain folder carries no patient information, so each image is its own patient
    (``patient_id`` = relative path without suffix, i.e. the file stem for a flat folder):
    splits cannot keep one patient's images together.
    """

    name = "folder"

    def __init__(
        self, root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_SUFFIXES
    ) -> None:
        super().__init__(root)
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions
        )
        self.pathologies = []

    def _load_records(self) -> pd.DataFrame:
        paths: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            paths += [
                os.path.join(dirpath, f)
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(self.extensions)
            ]
        if not paths:
            raise DatasetNotFoundError(
                f"No images with extensions {list(self.extensions)} under {self.root}. "
                "Set data.root=/path/to/folder_of_images."
            )
        rel = [Path(p).relative_to(self.root) for p in paths]
        out = pd.DataFrame(
            {
                "image_id": [r.as_posix() for r in rel],
                "path": paths,
                "patient_id": [r.with_suffix("").as_posix() for r in rel],
            }
        )
        return finish_records(out, self.pathologies, self.name)
