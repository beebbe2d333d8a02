"""Fixtures for the data tests: the real shared data (skipped when absent) and tiny layouts.

tests/data/conftest.py re-exports them; other test folders can load them as a plugin with
``pytest_plugins = ["data.fixtures"]`` in tests/conftest.py.

Tiny NIH / CheXpert / folder layouts are built in tmp_path from a few real NIH images when the
shared data exists, else from synthetic images, so they also run where no data is installed.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dpglow.data import ChestXrayDataModule, default_data_dir

NIH_SAMPLE = "nih_chestxray14_sample64"
PEDIATRIC = "pediatric_pneumonia224"
NO_DATA = "no shared chest X-ray data: put shared/data beside the checkout or set DPGLOW_DATA_DIR"

CHEXPERT_COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]  # fmt: skip


def _shared_subdir(name: str) -> Path:
    root = default_data_dir()
    if root is None:
        pytest.skip(NO_DATA)
    path = root / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent ({NO_DATA})")
    return path


@pytest.fixture(scope="session")
def nih_sample_dir() -> Path:
    """The shared 1,000-image NIH sample (read-only)."""
    return _shared_subdir(NIH_SAMPLE)


@pytest.fixture(scope="session")
def pediatric_dir() -> Path:
    """The shared 5,216-image pediatric set (read-only)."""
    return _shared_subdir(PEDIATRIC)


@pytest.fixture(scope="session")
def gray_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """16 grayscale 64x64 PNGs: real NIH images when available, else synthetic ones."""
    root = default_data_dir()
    real = root / NIH_SAMPLE / "images" if root is not None else None
    if real is not None and real.is_dir():
        return sorted(real.glob("*.png"))[:16]
    out = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        path = out / f"{i:08d}_000.png"
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def nih_csv_text(rows: list[tuple[str, str, str]]) -> str:
    """NIH's Data_Entry layout, header quirk included, for (image, findings, patient) rows."""
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    lines = [f"{img},{lab},0,{pid},50,M,PA,2500,2048,0.168,0.168" for img, lab, pid in rows]
    return "\n".join([header, *lines]) + "\n"


@pytest.fixture
def tiny_nih(tmp_path: Path, gray_images: list[Path]) -> Path:
    """NIH's per-archive layout (images_001/images, images_002/images) + official split lists.

    Images 0-5 -> images_001, 6-9 -> images_002; image i belongs to patient i // 2; image 10
    is listed in the CSV but absent on disk. train_val_list: images 0-7; test_list: 8-10.
    """
    root = tmp_path / "ChestX-ray14"
    names = [f"0000{i:04d}_000.png" for i in range(11)]
    for i, src in enumerate(gray_images[:10]):
        folder = root / ("images_001" if i < 6 else "images_002") / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / names[i])
    labels = [
        "No Finding", "Effusion", "Cardiomegaly|Emphysema", "Hernia", "No Finding",
        "Pleural_Thickening|Mass", "Nodule", "No Finding", "Pneumonia", "Edema", "Mass",
    ]  # fmt: skip
    rows = [(names[i], labels[i], str(i // 2)) for i in range(11)]
    (root / "Data_Entry_2017_v2020.csv").write_text(nih_csv_text(rows))
    (root / "train_val_list.txt").write_text("\n".join(names[:8]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[8:]) + "\n")
    return root


@pytest.fixture
def tiny_chexpert(tmp_path: Path, gray_images: list[Path]) -> Path:
    """A CheXpert-v1.0-small tree with JPEGs, frontal + lateral rows, -1 and blank labels."""
    root = tmp_path / "CheXpert-v1.0-small"

    def image(split: str, patient: int, view: str, src: Path) -> str:
        rel = f"{split}/patient{patient:05d}/study1/view1_{view}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").save(root / rel, quality=95)
        return f"CheXpert-v1.0-small/{rel}"

    def row(path: str, fl: str, labels: dict[str, str]) -> str:
        base = {
            "Path": path,
            "Sex": "Female",
            "Age": "60",
            "Frontal/Lateral": fl,
            "AP/PA": "AP" if fl == "Frontal" else "",
        }
        return ",".join({**base, **labels}.get(c, "") for c in CHEXPERT_COLUMNS)

    train = [
        row(image("train", 1, "frontal", gray_images[0]), "Frontal",
            {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"}),
        row(image("train", 1, "lateral", gray_images[1]), "Lateral", {"Cardiomegaly": "1.0"}),
        row(image("train", 2, "frontal", gray_images[2]), "Frontal",
            {"No Finding": "1.0", "Support Devices": "1.0"}),
        row(image("train", 3, "frontal", gray_images[3]), "Frontal",
            {"Atelectasis": "-1.0", "Pneumonia": "1.0"}),
        row(image("train", 4, "frontal", gray_images[4]), "Frontal", {"Fracture": "1.0"}),
        row(image("train", 5, "frontal", gray_images[5]), "Frontal", {"Lung Opacity": "1.0"}),
    ]  # fmt: skip
    valid = [
        row(image("valid", 64541, "frontal", gray_images[6]), "Frontal", {"Edema": "1.0"}),
        row(image("valid", 64541, "lateral", gray_images[7]), "Lateral", {"Edema": "1.0"}),
        row(image("valid", 64542, "frontal", gray_images[8]), "Frontal", {"No Finding": "1.0"}),
    ]  # fmt: skip
    header = ",".join(CHEXPERT_COLUMNS)
    (root / "train.csv").write_text("\n".join([header, *train]) + "\n")
    (root / "valid.csv").write_text("\n".join([header, *valid]) + "\n")
    return root


def write_medmnist_npz(root: Path, flag: str, size: int, counts: dict[str, int]) -> Path:
    """A small .npz in MedMNIST's exact layout: ``<flag>_<size>.npz`` with ``<split>_images``
    (uint8 [N, size, size]) and ``<split>_labels`` (uint8 [N, L])."""
    n_labels = 14 if flag == "chestmnist" else 1
    rng = np.random.default_rng(size)
    arrays = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, n_labels), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(name="nih_csv_text")
def nih_csv_text_fixture() -> Callable[[list[tuple[str, str, str]]], str]:
    """The ``nih_csv_text`` helper (fixtures avoid importing conftest as a module)."""
    return nih_csv_text


@pytest.fixture(name="write_medmnist_npz")
def write_medmnist_npz_fixture() -> Callable[..., Path]:
    """The ``write_medmnist_npz`` helper."""
    return write_medmnist_npz


@pytest.fixture
def medmnist_root(tmp_path: Path) -> Path:
    """tmp folder with chestmnist_64.npz and pneumoniamnist_64.npz (train 30, val 6, test 8)."""
    root = tmp_path / "medmnist"
    for flag in ("chestmnist", "pneumoniamnist"):
        write_medmnist_npz(root, flag, 64, {"train": 30, "val": 6, "test": 8})
    return root


@pytest.fixture
def make_dm(tmp_path: Path) -> Callable[..., ChestXrayDataModule]:
    """make_dm(source_cls, root, **kwargs): a datamodule with a tmp cache and small defaults; the
    source partial gets ``root`` and ``source_kwargs``, as the data configs give it."""

    def _make(source_cls: type, root: Path | str, **kwargs: object) -> ChestXrayDataModule:
        source_kwargs = kwargs.pop("source_kwargs", {})
        defaults = {"image_size": 32, "batch_size": 4, "cache_dir": str(tmp_path / "cache")}
        return ChestXrayDataModule(
            source=functools.partial(source_cls, root=str(root), **source_kwargs),
            root=str(root),
            **{**defaults, **kwargs},
        )

    return _make
