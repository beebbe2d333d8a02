"""The pediatric pneumonia set (labels.csv + images/), any folder of images (no labels), and a
folder of images with its own label table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pandas as pd

from dpglow.data.io import IMAGE_SUFFIXES
from dpglow.data.paths import DataFormatError, DatasetNotFoundError, not_found_message
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


class TableSource(RecordSource):
    """A folder of images with the data holder's own label table: ``root/<csv>`` with a ``path``
    column (each image's path relative to ``root``), an optional ``patient_id`` column (default:
    each image its own patient) and one column per finding holding 1 (present), 0 (absent) or
    nothing (unknown; also -1, CheXpert's "uncertain"). The findings are every other column, or
    ``pathologies`` when given (in that order)."""

    name = "table"
    KNOWN: ClassVar[dict[str, float]] = {
        "1": 1.0,
        "1.0": 1.0,
        "0": 0.0,
        "0.0": 0.0,
        "-1": float("nan"),
        "-1.0": float("nan"),
    }

    def __init__(
        self,
        root: str | os.PathLike[str],
        csv: str = "labels.csv",
        pathologies: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root)
        self.csv = csv
        table = self.root / csv
        if not table.is_file():
            raise DatasetNotFoundError(not_found_message(table, "label table (path + findings)"))
        self._table = read_label_csv(table, ["path", *(pathologies or [])])
        columns = [c for c in self._table.columns if c not in ("path", "patient_id")]
        self.pathologies = list(pathologies) if pathologies is not None else columns
        if not self.pathologies:
            raise DataFormatError(
                f"{table}: no finding columns beside path and patient_id: add a 0/1 column "
                "per finding"
            )

    def _load_records(self) -> pd.DataFrame:
        df, table = self._table, self.root / self.csv
        rel = df["path"].str.strip()
        out = pd.DataFrame({"image_id": rel, "path": [str(self.root / r) for r in rel]})
        out["patient_id"] = df["patient_id"].str.strip() if "patient_id" in df else rel
        for name in self.pathologies:
            cells = df[name].fillna("").str.strip()
            bad = sorted(set(cells[(cells != "") & ~cells.isin(self.KNOWN)]))
            if bad:
                raise DataFormatError(
                    f"{table}: column {name!r} holds {bad[:5]}: use 1 (present), 0 (absent) or "
                    "leave the cell empty (unknown)"
                )
            out[name] = cells.map(lambda c: self.KNOWN.get(c, float("nan"))).astype("float32")
        return finish_records(drop_missing_files(out, self.name), self.pathologies, self.name)
