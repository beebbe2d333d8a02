"""NIH ChestX-ray14 (Data_Entry_2017*.csv; NIH's image folder layouts; the official split)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpglow.data.io import IMAGE_SUFFIXES
from dpglow.data.paths import DatasetNotFoundError, not_found_message, require_dir
from dpglow.data.sources.base import (
    RecordSource,
    finish_records,
    labels_from_findings,
    read_label_csv,
)

log = logging.getLogger(__name__)

# Spelling and order of torchxrayvision (xrv.datasets.NIH_Dataset().pathologies, sorted).
NIH_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
]  # fmt: skip


class NIHSource(RecordSource):
    """NIH ChestX-ray14: ``Data_Entry_2017*.csv``, images in ``images/`` or ``images_0XX/images/``.

    NIH's ``train_val_list.txt`` / ``test_list.txt`` in root, when present, give ``official_split``
    (test from test_list, the rest train; validation is carved from train by patient later).
    ``extra_roots``: more folders in NIH's layout (e.g. another sample of the same dataset), read
    the same way and merged; patients are NIH's ``Patient ID`` across all of them.
    """

    name = "nih"
    pathologies = NIH_PATHOLOGIES

    def __init__(
        self,
        root: str | os.PathLike[str],
        csv_name: str | None = None,
        use_official_split: bool = True,
        extra_roots: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        super().__init__(root)
        self.csv_name = csv_name
        self.use_official_split = use_official_split
        self.extra_roots = [require_dir(r).resolve() for r in extra_roots]

    def _csv_path(self) -> Path:
        if self.csv_name is not None:
            path = self.root / self.csv_name
            if not path.is_file():
                raise DatasetNotFoundError(not_found_message(path, "NIH label file"))
            return path
        found = sorted(self.root.glob("Data_Entry_2017*.csv"))
        if not found:
            raise DatasetNotFoundError(
                f"No Data_Entry_2017*.csv in {self.root}. Put NIH's label file there or pass "
                "data.source.csv_name=<file>.\n" + not_found_message(self.root)
            )
        if len(found) > 1:
            log.warning("nih: several label files %s; using %s", [f.name for f in found], found[0])
        return found[0]

    def _index_images(self) -> dict[str, str]:
        """Map file name -> absolute path over NIH's flat and per-archive folder layouts."""
        folders = [self.root / "images"]
        for sub in sorted(self.root.glob("images_*")):
            folders += [sub / "images", sub]
        index: dict[str, str] = {}
        for folder in folders:
            if not folder.is_dir():
                continue
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                        index.setdefault(entry.name, entry.path)
        return index

    def _official_split(self, image_ids: pd.Series) -> pd.Series:
        split = pd.Series(np.nan, index=image_ids.index, dtype=object)
        train_list, test_list = self.root / "train_val_list.txt", self.root / "test_list.txt"
        if not self.use_official_split or not (train_list.is_file() or test_list.is_file()):
            return split
        for name, path in (("train", train_list), ("test", test_list)):
            if path.is_file():
                listed = {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}
                split[image_ids.isin(listed)] = name
        log.info("nih: official split lists: %s", split.value_counts(dropna=False).to_dict())
        return split

    def _load_records(self) -> pd.DataFrame:
        frames = [self._load_root()]
        for extra in self.extra_roots:
            part = NIHSource(extra, use_official_split=self.use_official_split)
            frames.append(part._load_root())
        return finish_records(pd.concat(frames, ignore_index=True), self.pathologies, self.name)

    def _load_root(self) -> pd.DataFrame:
        csv_path = self._csv_path()
        df = read_label_csv(csv_path, ["Image Index", "Finding Labels", "Patient ID"])
        index = self._index_images()
        if not index:
            raise DatasetNotFoundError(
                f"No images in {self.root}/images/ or {self.root}/images_0XX/images/ "
                "(NIH's layouts).\n" + not_found_message(self.root)
            )
        out = pd.DataFrame(
            {
                "image_id": df["Image Index"].str.strip(),
                "patient_id": df["Patient ID"].str.strip(),
            }
        )
        out["path"] = out["image_id"].map(index)
        out["official_split"] = self._official_split(out["image_id"])
        out = pd.concat([out, labels_from_findings(df["Finding Labels"], self.pathologies)], axis=1)
        absent = out["path"].isna()
        if absent.any():
            log.warning(
                "nih: %d of %d rows of %s have no image on disk and were dropped",
                absent.sum(),
                len(out),
                csv_path.name,
            )
        return out.loc[~absent]
