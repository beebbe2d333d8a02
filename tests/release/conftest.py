"""The release folder's fixtures: real X-rays in nested folders with odd and corrupt files, a
fast privatize run (the pixel baseline, no flow), and helpers to write PNGs and DICOMs."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_run
from dpglow.data import default_data_dir


@pytest.fixture
def input_folder(tmp_path) -> Path:
    """Real X-rays in nested folders, plus odd and corrupt files."""
    data = default_data_dir()
    if data is None:
        pytest.skip("no chest X-ray data")
    src = sorted((data / "pediatric_pneumonia224" / "images").glob("*.png"))
    root = tmp_path / "hospital"
    (root / "ward_a").mkdir(parents=True)
    (root / "ward_b" / "deep").mkdir(parents=True)
    for i, path in enumerate(src[:6]):
        shutil.copyfile(path, root / ("ward_a" if i < 3 else "ward_b/deep") / path.name)
    # RGB JPEG of a real image, non-square
    rgb = Image.open(src[6]).convert("RGB").resize((200, 160))
    rgb.save(root / "ward_a" / "colour.jpg", quality=90)
    # 16-bit PNG
    arr16 = (np.asarray(Image.open(src[7]), dtype=np.uint16) * 257 // 16).astype(np.uint16)
    Image.fromarray(arr16).save(root / "ward_b" / "sixteen.png")
    # a stem shared by two files in one folder
    shutil.copyfile(src[8], root / "ward_a" / "twin.png")
    Image.open(src[9]).convert("L").save(root / "ward_a" / "twin.jpg")
    # truncated PNG
    blob = src[10].read_bytes()
    (root / "ward_a" / "broken.png").write_bytes(blob[: len(blob) // 3])
    # not an image at all, with an image suffix
    (root / "notes.png").write_text("this is not a PNG")
    # a text file that is not an image: ignored
    (root / "README.txt").write_text("scans")
    return root


_runs = itertools.count()


def read_manifest(out: Path) -> dict[str, dict[str, str]]:
    """manifest.csv by input (names that are not UTF-8 as surrogate escapes)."""
    with open(out / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


@pytest.fixture
def run_privatize(tmp_path):
    """``run(src, out, *overrides)``: ``privatize(cfg)`` in this process with the pixel baseline
    (no flow, 16 px): a fraction of a second per run. Returns the counts."""

    def run(src: Path, out: Path, *overrides: str) -> dict[str, int]:
        from dpglow.release.task import privatize

        cfg = compose_run(
            "privatize",
            [
                f"input_dir={src}",
                f"output_dir={out}",
                "privacy=pixel_laplace",
                "image_size=16",
                "batch_size=4",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
            tmp_path / "runs" / str(next(_runs)),
        )
        return privatize(cfg)[0]

    return run


def write_png(path: Path, seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def write_dicom(path: Path, pixels: np.ndarray, **extra: object) -> Path:
    """An uncompressed 12-bit MONOCHROME1 DICOM with a patient, a hospital and a private tag."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "HOSP-12345", "19700101"
    ds.InstitutionName, ds.StudyDate, ds.AccessionNumber = "General Hospital", "20240102", "A77"
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.add_new(0x00291010, "LO", "private vendor data")
    for key, value in extra.items():
        setattr(ds, key, value)
    arr = pixels.astype(np.uint16) * 16
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
