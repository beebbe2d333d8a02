"""Sources: records, labels and layouts of NIH, CheXpert, pediatric, folder and MedMNIST."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SYNTHETIC, needs_real_data
from dpglow.data import DataFormatError, DatasetNotFoundError
from dpglow.data.sources import (
    CHESTMNIST_PATHOLOGIES,
    CheXpertSource,
    FolderSource,
    MedMNISTSource,
    NIHSource,
    PediatricSource,
    TableSource,
)
from synthetic_data import NIH_IMAGES

BASE_COLUMNS = ["image_id", "path", "patient_id", "official_split"]


def check_records(df: pd.DataFrame, pathologies: list[str]) -> None:
    assert list(df.columns) == BASE_COLUMNS + pathologies
    assert df["image_id"].is_unique
    assert df["patient_id"].map(type).eq(str).all()
    for p in pathologies:
        assert df[p].dtype == np.float32
        assert set(df[p].dropna().unique()) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def nih_records(nih_sample_dir: Path) -> pd.DataFrame:
    return NIHSource(nih_sample_dir).records()


def test_nih_sample_records(nih_sample_dir: Path, nih_records: pd.DataFrame) -> None:
    src = NIHSource(nih_sample_dir)
    check_records(nih_records, src.pathologies)
    assert len(src.pathologies) == 14
    assert len(nih_records) == (NIH_IMAGES if SYNTHETIC else 1000)
    assert nih_records["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    # No NIH official lists in the sample; splits.csv (not patient-disjoint) is not used.
    assert nih_records["official_split"].isna().all()


def test_nih_sample_counts_match_its_readme(
    nih_sample_dir: Path, nih_records: pd.DataFrame
) -> None:
    needs_real_data("the counts documented in the NIH sample's README")
    src = NIHSource(nih_sample_dir)
    assert nih_records["patient_id"].nunique() == 264
    # Per-finding counts documented in the folder's README.
    counts = nih_records[src.pathologies].sum().astype(int).to_dict()
    assert counts["Effusion"] == 170 and counts["Infiltration"] == 162
    assert counts["Pleural_Thickening"] == 29 and counts["Hernia"] == 9
    assert (nih_records[src.pathologies].sum(axis=1) == 0).sum() == 499  # "No Finding"


def test_nih_label_spot_checks_against_csv(nih_records: pd.DataFrame) -> None:
    needs_real_data("NIH's own labels of named images")
    rec = nih_records.set_index("image_id")
    positives = {
        "00000001_001.png": {"Cardiomegaly", "Emphysema"},
        "00000116_007.png": {"Consolidation", "Effusion", "Infiltration"},
        "00000193_019.png": {"Pneumonia"},  # NIH v2020 label (README caveat)
    }
    for image_id, expected in positives.items():
        row = rec.loc[image_id, NIHSource.pathologies]
        assert set(row.index[row == 1]) == expected, image_id
        assert (row[row != 1] == 0).all()
    assert rec.loc["00000001_001.png", "patient_id"] == "1"
    assert rec.loc["00000116_007.png", "patient_id"] == "116"


def test_nih_matches_torchxrayvision(nih_sample_dir: Path, nih_records: pd.DataFrame) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    csv = next(nih_sample_dir.glob("Data_Entry_2017*.csv"))
    ds = xrv.datasets.NIH_Dataset(
        imgpath=str(nih_sample_dir / "images"),
        csvpath=str(csv),
        views=["*"],
        unique_patients=False,
    )
    assert ds.pathologies == NIHSource.pathologies
    theirs = pd.DataFrame(ds.labels, columns=ds.pathologies, index=ds.csv["Image Index"])
    ours = nih_records.set_index("image_id")[NIHSource.pathologies]
    np.testing.assert_array_equal(ours.to_numpy(), theirs.loc[ours.index].to_numpy())


def test_nih_archive_layout_and_official_lists(
    tiny_nih: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        df = NIHSource(tiny_nih).records()
    check_records(df, NIHSource.pathologies)
    assert len(df) == 10  # the 11th CSV row has no image on disk
    assert "1 of 11 rows" in caplog.text
    assert {Path(p).parent.parent.name for p in df["path"]} == {"images_001", "images_002"}
    split = df.set_index("image_id")["official_split"]
    assert (split.iloc[:8] == "train").all() and (split.iloc[8:] == "test").all()
    rec = df.set_index("image_id")
    assert rec.loc["00000002_000.png", ["Cardiomegaly", "Emphysema"]].tolist() == [1.0, 1.0]
    assert rec.loc["00000000_000.png", NIHSource.pathologies].sum() == 0  # No Finding
    assert NIHSource(tiny_nih, use_official_split=False).records()["official_split"].isna().all()


def test_nih_csv_missing_columns(tmp_path: Path, tiny_nih: Path) -> None:
    csv = tiny_nih / "Data_Entry_2017_v2020.csv"
    text = csv.read_text().replace("Finding Labels", "Findings").replace("Patient ID", "PID")
    csv.write_text(text)
    with pytest.raises(DataFormatError) as err:
        NIHSource(tiny_nih).records()
    msg = str(err.value)
    assert "Finding Labels" in msg and "Patient ID" in msg and str(csv) in msg


def test_nih_without_csv_or_images(tmp_path: Path, nih_csv_text: Callable[..., str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="Data_Entry_2017"):
        NIHSource(empty).records()
    (empty / "Data_Entry_2017.csv").write_text(nih_csv_text([("a.png", "Mass", "1")]))
    with pytest.raises(DatasetNotFoundError, match="images"):
        NIHSource(empty).records()


def test_chexpert_layout(tiny_chexpert: Path) -> None:
    src = CheXpertSource(tiny_chexpert)
    df = src.records()
    check_records(df, src.pathologies)
    assert len(df) == 7  # 9 rows, 2 lateral dropped
    assert not df["image_id"].str.contains("lateral").any()
    assert df["path"].map(lambda p: Path(p).is_file()).all()
    rec = df.set_index("image_id")
    p1 = rec.loc["train/patient00001/study1/view1_frontal.jpg"]
    assert p1["patient_id"] == "patient00001" and p1["official_split"] == "train"
    assert p1["Cardiomegaly"] == 1 and p1["Effusion"] == 0  # "Pleural Effusion" -> "Effusion"
    assert np.isnan(p1["Edema"])  # -1 (uncertain) -> NaN
    assert np.isnan(p1["Fracture"])  # blank -> NaN
    p2 = rec.loc["train/patient00002/study1/view1_frontal.jpg"]  # No Finding = 1
    findings = [p for p in src.pathologies if p != "Support Devices"]
    assert (p2[findings] == 0).all() and p2["Support Devices"] == 1
    assert np.isnan(rec.loc["train/patient00003/study1/view1_frontal.jpg", "Atelectasis"])
    valid = df[df["image_id"].str.startswith("valid/")]
    assert len(valid) == 2 and (valid["official_split"] == "test").all()
    assert set(valid["patient_id"]) == {"patient64541", "patient64542"}
    assert len(CheXpertSource(tiny_chexpert, frontal_only=False).records()) == 9


def test_chexpert_matches_torchxrayvision(tiny_chexpert: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    ds = xrv.datasets.CheX_Dataset(
        imgpath=str(tiny_chexpert),
        csvpath=str(tiny_chexpert / "train.csv"),
        views=["PA", "AP"],
        unique_patients=False,
    )
    ours = CheXpertSource(tiny_chexpert).records()
    ours = ours[ours["official_split"] == "train"]
    assert ds.pathologies == CheXpertSource.pathologies
    np.testing.assert_array_equal(ours[ds.pathologies].to_numpy(), ds.labels)


def test_chexpert_csv_missing_columns(tiny_chexpert: Path) -> None:
    csv = tiny_chexpert / "train.csv"
    csv.write_text(csv.read_text().replace("Frontal/Lateral", "View"))
    with pytest.raises(DataFormatError) as err:
        CheXpertSource(tiny_chexpert).records()
    assert "'Frontal/Lateral'" in str(err.value) and str(csv) in str(err.value)


def test_pediatric_records(pediatric_dir: Path) -> None:
    needs_real_data("the counts of the bundled pediatric set")
    df = PediatricSource(pediatric_dir).records()
    check_records(df, ["Pneumonia"])
    assert len(df) == 5216
    assert df["patient_id"].nunique() == 2913
    assert int(df["Pneumonia"].sum()) == 3875
    labels = pd.read_csv(pediatric_dir / "labels.csv").set_index("Image Index")
    rec = df.set_index("image_id")
    for image_id in rec.index[::997]:
        assert rec.loc[image_id, "Pneumonia"] == float(labels.loc[image_id, "class"] == "PNEUMONIA")
        assert rec.loc[image_id, "patient_id"] == labels.loc[image_id, "patient_key"]


def test_folder_source(tmp_path: Path, gray_images: list[Path]) -> None:
    root = tmp_path / "xrays"
    (root / "site_a").mkdir(parents=True)
    (root / "site_b" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    img = Image.open(gray_images[0])
    img.save(root / "site_a" / "scan.png")
    img.save(root / "site_b" / "deep" / "scan.JPG")
    img.save(root / "top.jpeg")
    img.save(root / ".hidden" / "skip.png")
    (root / "notes.txt").write_text("not an image")
    src = FolderSource(root)
    df = src.records()
    check_records(df, [])
    assert src.pathologies == []
    assert sorted(df["image_id"]) == ["site_a/scan.png", "site_b/deep/scan.JPG", "top.jpeg"]
    assert df["patient_id"].is_unique  # each image is its own patient, even with equal stems
    assert sorted(FolderSource(root, extensions=("png",)).records()["image_id"]) == [
        "site_a/scan.png"
    ]
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetNotFoundError, match="No images"):
        FolderSource(tmp_path / "none").records()


def test_table_source_reads_the_holders_own_labels(tmp_path: Path, gray_images: list[Path]):
    root = tmp_path / "hospital"
    (root / "ward").mkdir(parents=True)
    img = Image.open(gray_images[0])
    for name in ("ward/a.png", "b.png", "c.png"):
        img.save(root / name)
    (root / "labels.csv").write_text(
        "path,patient_id,Effusion,Mass\nward/a.png,p1,1,0\nb.png,p1,,-1\nc.png,p2,0.0,1.0\n"
        "gone.png,p3,1,1\n"
    )
    source = TableSource(root)
    df = source.records()
    check_records(df, ["Effusion", "Mass"])
    assert list(df["image_id"]) == ["ward/a.png", "b.png", "c.png"]  # gone.png: not on disk
    assert list(df["patient_id"]) == ["p1", "p1", "p2"]
    assert df["Effusion"].tolist()[0] == 1.0 and df["Mass"].tolist()[2] == 1.0
    assert df[["Effusion", "Mass"]].iloc[1].isna().all()  # blank and -1 are unknown
    assert TableSource(root, pathologies=["Mass"]).pathologies == ["Mass"]
    with pytest.raises(DataFormatError, match="Pneumonia"):
        TableSource(root, pathologies=["Pneumonia"])
    (root / "bad.csv").write_text("path,Mass\nb.png,yes\n")
    with pytest.raises(DataFormatError, match=r"'Mass' holds \['yes'\]"):
        TableSource(root, csv="bad.csv").records()
    (root / "bare.csv").write_text("path\nb.png\n")
    with pytest.raises(DataFormatError, match="no finding columns"):
        TableSource(root, csv="bare.csv")
    with pytest.raises(DatasetNotFoundError):
        TableSource(root, csv="missing.csv")


@pytest.mark.parametrize("flag", ["chestmnist", "pneumoniamnist"])
def test_medmnist_offline_npz(medmnist_root: Path, flag: str) -> None:
    src = MedMNISTSource(flag=flag, root=medmnist_root, size=64)
    df = src.records()
    expected = CHESTMNIST_PATHOLOGIES if flag == "chestmnist" else ["Pneumonia"]
    check_records(df, expected)
    assert df["official_split"].value_counts().to_dict() == {"train": 30, "test": 8, "val": 6}
    assert df["path"].isna().all()
    assert (df["patient_id"] == df["image_id"]).all()
    npz = np.load(medmnist_root / f"{flag}_64.npz")
    test = df[df["official_split"] == "test"]
    np.testing.assert_array_equal(test[expected].to_numpy(), npz["test_labels"])
    np.testing.assert_array_equal(src.array_images(test["image_id"].tolist()), npz["test_images"])


def test_medmnist_28px_file_name_and_missing_npz(
    tmp_path: Path, write_medmnist_npz: Callable[..., Path]
) -> None:
    write_medmnist_npz(tmp_path / "mm", "pneumoniamnist", 28, {"train": 3, "val": 1, "test": 2})
    assert len(MedMNISTSource("pneumoniamnist", tmp_path / "mm", size=28).records()) == 6
    with pytest.raises(DatasetNotFoundError) as err:
        MedMNISTSource("chestmnist", tmp_path / "mm", size=64).records()
    assert "chestmnist_64.npz" in str(err.value) and "data.download=true" in str(err.value)
    with pytest.raises(ValueError, match="flag"):
        MedMNISTSource("pathmnist", tmp_path / "mm")


@pytest.mark.parametrize(
    ("image_size", "size"), [(16, 28), (28, 28), (29, 64), (64, 64), (100, 128), (256, 224)]
)
def test_medmnist_size_chosen_from_image_size(tmp_path: Path, image_size: int, size: int) -> None:
    # size=None: the smallest file not below image_size (nothing upsampled), else the largest.
    assert MedMNISTSource("chestmnist", tmp_path, image_size=image_size).size == size
    assert MedMNISTSource.size_for(image_size) == size


def test_medmnist_explicit_size_wins_and_is_checked(tmp_path: Path) -> None:
    assert MedMNISTSource("chestmnist", tmp_path, size=224, image_size=32).size == 224
    with pytest.raises(ValueError, match=r"one of \(28, 64, 128, 224\)"):
        MedMNISTSource("chestmnist", tmp_path, size=100)
    with pytest.raises(ValueError, match=r"size .* or image_size"):
        MedMNISTSource("chestmnist", tmp_path)


def test_missing_root_raises_dataset_not_found(tmp_path: Path) -> None:
    for cls in (NIHSource, CheXpertSource, PediatricSource, FolderSource):
        with pytest.raises(DatasetNotFoundError) as err:
            cls(tmp_path / "nope")
        assert str(tmp_path / "nope") in str(err.value) and "data.root=" in str(err.value)
