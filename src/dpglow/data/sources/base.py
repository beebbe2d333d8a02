"""What every dataset source shares: the records contract, label-file reading and checks."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpglow.data.paths import DataFormatError, DatasetNotFoundError, require_dir

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def read_label_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """Read a label CSV as strings, raising DataFormatError naming missing columns and file."""
    required = list(required)
    try:
        # index_col=False: NIH's header quirk (unquoted commas in two column names) must not
        # make pandas shift the first column into the index.
        df = pd.read_csv(path, dtype=str, index_col=False, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot parse CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
            "Is this the right label file for this dataset?"
        )
    return df


def labels_from_findings(findings: pd.Series, pathologies: Sequence[str]) -> pd.DataFrame:
    """One 0/1 float column per pathology from NIH-style ``A|B`` strings ("No Finding" -> 0s)."""
    tokens = findings.fillna("").map(lambda s: {t.strip() for t in s.split("|")})
    return pd.DataFrame(
        {p: tokens.map(lambda ts, p=p: float(p in ts)).to_numpy() for p in pathologies},
        index=findings.index,
    )


def drop_missing_files(df: pd.DataFrame, what: str) -> pd.DataFrame:
    exists = df["path"].map(os.path.isfile)
    n_missing = int((~exists).sum())
    if n_missing:
        log.warning(
            "%s: %d of %d listed images are absent on disk and were dropped (e.g. %s)",
            what,
            n_missing,
            len(df),
            df.loc[~exists, "path"].iloc[0],
        )
    return df.loc[exists].reset_index(drop=True)


def finish_records(df: pd.DataFrame, pathologies: Sequence[str], what: str) -> pd.DataFrame:
    """Order columns, check uniqueness and set dtypes of a records frame."""
    if "official_split" not in df:
        df["official_split"] = np.nan
    dup = df["image_id"].duplicated()
    if dup.any():
        log.warning("%s: %d duplicate image ids; keeping the first of each", what, dup.sum())
        df = df.loc[~dup]
    df = df.reset_index(drop=True)
    df["image_id"] = df["image_id"].astype(str)
    df["patient_id"] = df["patient_id"].astype(str)
    df["official_split"] = df["official_split"].astype(object)
    for p in pathologies:
        df[p] = df[p].astype(np.float32)
    return df[["image_id", "path", "patient_id", "official_split", *pathologies]]


class RecordSource:
    """Base class: subclasses set ``pathologies`` and implement ``_load_records``."""

    name: str = "source"
    pathologies: list[str]

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = require_dir(root).resolve()
        self._records: pd.DataFrame | None = None

    def records(self) -> pd.DataFrame:
        """The dataset's records (computed once, then reused)."""
        if self._records is None:
            self._records = self._load_records()
            if self._records.empty:
                raise DatasetNotFoundError(f"{self.name}: no images found under {self.root}")
            log.info(
                "%s: %d images of %d patients from %s",
                self.name,
                len(self._records),
                self._records["patient_id"].nunique(),
                self.root,
            )
        return self._records.copy()

    def _load_records(self) -> pd.DataFrame:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"
