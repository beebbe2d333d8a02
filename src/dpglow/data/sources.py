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

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from dpglow.data.paths import DataFormatError, DatasetNotFoundError, not_found_message, require_dir

log = logging.getLogger(__name__)

# Spelling and order of torchxrayvision (xrv.datasets.NIH_Dataset().pathologies, sorted).
NIH_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
]  # fmt: skip
# torchxrayvision's CheX_Dataset order: sorted CSV names, then "Pleural Effusion" -> "Effusion".
CHEXPERT_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
_CHEXPERT_CSV_NAME = {"Effusion": "Pleural Effusion"}
# MedMNIST's ChestMNIST label order (medmnist.INFO["chestmnist"]["label"]) in xrv spelling.
CHESTMNIST_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
]  # fmt: skip

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff",
)  # fmt: skip
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


def _drop_missing_files(df: pd.DataFrame, what: str) -> pd.DataFrame:
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


def _finish(df: pd.DataFrame, pathologies: Sequence[str], what: str) -> pd.DataFrame:
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
                    if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
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
        return _finish(pd.concat(frames, ignore_index=True), self.pathologies, self.name)

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
        df = _drop_missing_files(pd.concat(parts, ignore_index=True), self.name)
        return _finish(df, self.pathologies, self.name)


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
        return _finish(_drop_missing_files(out, self.name), self.pathologies, self.name)


class FolderSource(RecordSource):
    """Every image file under ``root`` (recursive, hidden folders skipped), without labels.

    A plain folder carries no patient information, so each image is its own patient
    (``patient_id`` = relative path without suffix, i.e. the file stem for a flat folder):
    splits cannot keep one patient's images together.
    """

    name = "folder"

    def __init__(
        self, root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS
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
        return _finish(out, self.pathologies, self.name)


class MedMNISTSource(RecordSource):
    """ChestMNIST / PneumoniaMNIST from MedMNIST's ``<flag>[_<size>].npz`` (array-backed).

    Loads offline from an existing .npz through the ``medmnist`` package; ``download=True``
    uses medmnist's own downloader when the file is absent. ``size`` is the file's resolution
    (one of ``available_sizes``); ``size=None`` takes the smallest not below ``image_size``
    (the resolution the images are read at), so nothing is upsampled. ``path`` is None and
    image ids are ``<split>_<index>``. MedMNIST ships no patient ids, so each image is its own
    patient; its official split (patient-disjoint for ChestMNIST, per NIH) is kept as
    ``official_split``.
    """

    pathologies_by_flag: ClassVar[dict[str, list[str]]] = {
        "chestmnist": CHESTMNIST_PATHOLOGIES,
        "pneumoniamnist": ["Pneumonia"],
    }
    available_sizes: ClassVar[tuple[int, ...]] = (28, 64, 128, 224)

    def __init__(
        self,
        flag: str = "chestmnist",
        root: str | os.PathLike[str] = "~/.medmnist",
        size: int | None = None,
        download: bool = False,
        image_size: int | None = None,
    ) -> None:
        if flag not in self.pathologies_by_flag:
            raise ValueError(f"flag must be one of {list(self.pathologies_by_flag)}, got {flag!r}")
        if size is None:
            if image_size is None:
                raise ValueError(
                    f"MedMNIST needs size (one of {self.available_sizes}) or image_size (the "
                    "resolution the images are read at, to choose the size from)"
                )
            size = self.size_for(image_size)
        if size not in self.available_sizes:
            raise ValueError(f"MedMNIST size must be one of {self.available_sizes}, got {size}")
        if download:
            Path(root).expanduser().mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self.flag, self.size, self.download = flag, size, download
        self.name = flag
        self.pathologies = list(self.pathologies_by_flag[flag])
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def size_for(cls, image_size: int) -> int:
        """The smallest MedMNIST size not below ``image_size`` (the largest when all are)."""
        return next((s for s in cls.available_sizes if s >= image_size), cls.available_sizes[-1])

    @property
    def npz_path(self) -> Path:
        """The file medmnist reads: ``<flag>.npz`` for 28 px, else ``<flag>_<size>.npz``."""
        return self.root / (
            f"{self.flag}.npz" if self.size == 28 else f"{self.flag}_{self.size}.npz"
        )

    def _load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        import medmnist  # lazy: importing medmnist creates ~/.medmnist

        cls = getattr(medmnist, medmnist.INFO[self.flag]["python_class"])
        # Download only when the file is absent: medmnist would otherwise re-hash it each time.
        download = self.download and not self.npz_path.is_file()
        if not download and not self.npz_path.is_file():
            raise DatasetNotFoundError(
                f"{self.npz_path} does not exist. Run with `data={self.flag} data.download=true` "
                f"on a machine with internet (downloads {self.npz_path.name} from Zenodo), or "
                "copy the file there, or set data.root=/folder/with/the/npz."
            )
        try:
            ds = cls(split=split, root=str(self.root), size=self.size, download=download)
        except RuntimeError as exc:
            raise DatasetNotFoundError(f"{self.flag}: {exc}") from exc
        # ds.imgs / ds.labels, not len(ds): medmnist asserts its published sample counts.
        return np.asarray(ds.imgs), np.asarray(ds.labels)

    def _load_records(self) -> pd.DataFrame:
        frames = []
        for split in SPLIT_NAMES:
            imgs, labels = self._load_split(split)
            if imgs.ndim != 3:
                raise DataFormatError(
                    f"{self.npz_path}: expected grayscale images, got {imgs.shape}"
                )
            self._arrays[split] = imgs
            labels = labels.reshape(len(imgs), -1).astype(np.float32)
            if labels.shape[1] != len(self.pathologies):
                raise DataFormatError(
                    f"{self.npz_path}: {split}_labels has {labels.shape[1]} columns, "
                    f"expected {len(self.pathologies)} ({self.pathologies})"
                )
            ids = [f"{split}_{i:06d}" for i in range(len(imgs))]
            frame = pd.DataFrame(labels, columns=self.pathologies)
            frame.insert(0, "image_id", ids)
            frame.insert(1, "path", None)
            frame.insert(2, "patient_id", ids)
            frame.insert(3, "official_split", split)
            frames.append(frame)
        return _finish(pd.concat(frames, ignore_index=True), self.pathologies, self.name)

    def array_images(self, image_ids: Sequence[str]) -> np.ndarray:
        """uint8 [N, H, W] pixels for ``image_ids`` (as produced by ``records()``)."""
        if not self._arrays:
            self.records()
        parts = pd.Series(list(image_ids), dtype=str).str.rsplit("_", n=1, expand=True)
        out = np.zeros((len(image_ids), self.size, self.size), np.uint8)
        if len(image_ids):
            idx = parts[1].astype(int).to_numpy()
            for split, arr in self._arrays.items():
                rows = (parts[0] == split).to_numpy()
                out[rows] = arr[idx[rows]]
        return out

    def __repr__(self) -> str:
        return f"MedMNISTSource(flag={self.flag!r}, root={str(self.root)!r}, size={self.size})"
