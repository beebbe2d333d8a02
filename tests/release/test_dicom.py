"""DICOM de-identification (PS3.15 Annex E basic profile via dicom-anonymizer, plus dpglow's rules)
on the real JPEG-compressed CR chest DICOM and on a copy enriched with what the old hand-written
list missed."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dpglow.release.dicom import DicomDeidentifier
from release.conftest import read_manifest

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def real_dicom(data_dir):
    path = data_dir / "dicom" / "siim_cr_chest.dcm"
    if not path.is_file():
        pytest.skip("no real DICOM in the shared data")
    return path


def _item(**values) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


@pytest.fixture
def enriched(real_dicom, tmp_path):
    """The real file plus the attributes the old list kept, nested dates and names, a private
    tag, an icon of the original pixels and an overlay."""
    ds = pydicom.dcmread(real_dicom)
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = "20230405", "101500"
    ds.PerformedProcedureStepStartDate = "20230406"
    ds.PerformedProcedureStepID = "PPS-778899"
    ds.FrameOfReferenceUID = "1.2.3.4.5.999"
    ds.InstitutionName, ds.StationName = "Saint Elsewhere Hospital", "XRAY-ROOM-7"
    ds.ReferencedStudySequence = [
        _item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
            ReferencedSOPInstanceUID=ds.StudyInstanceUID,
        )
    ]
    ds.OtherPatientIDsSequence = [_item(PatientID="MRN-5550123", IssuerOfPatientID="SEH")]
    # A sequence the profile's table does not name, holding a date, a name and a UID.
    ds.SourceImageSequence = [
        _item(
            ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.1",
            ReferencedSOPInstanceUID="1.2.3.4.5.6.7.8.9",
            InstanceCreationDate="20230407",
            OperatorsName="Tech^Tina",
        )
    ]
    icon = _item(Rows=2, Columns=2, SamplesPerPixel=1, BitsAllocated=8, BitsStored=8, HighBit=7)
    icon.PhotometricInterpretation, icon.PixelRepresentation = "MONOCHROME2", 0
    icon.add_new(0x7FE00010, "OB", b"\x01\x02\x03\x04")
    ds.IconImageSequence = [icon]
    ds.add_new(0x60003000, "OW", b"\x00" * 8)  # overlay data drawn on the original
    ds.add_new(0x00091010, "LO", "vendor secret")
    path = tmp_path / "enriched.dcm"
    ds.save_as(path)
    return path


def _identifying_values(path) -> list[str]:
    """Every value in the file that could lead back to the patient or the hospital."""
    ds = pydicom.dcmread(path)
    values = []

    def visit(_ds, element):
        keyword = element.keyword
        if element.VR in ("PN", "DA", "DT", "UI", "LO", "SH") and element.value:
            if element.VR == "UI" and pydicom.uid.UID(str(element.value)).keyword:
                return  # registered UIDs (SOP classes, transfer syntaxes) say nothing
            if keyword in ("SpecificCharacterSet", "Modality", "BodyPartExamined"):
                return
            values.append(str(element.value))

    ds.walk(visit)
    return [v for v in values if len(v) >= 6]


def _release(source, deidentifier=None, pixels=None):
    pixels = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) if pixels is None else pixels
    data = (deidentifier or DicomDeidentifier(uid_key=KEY)).dicom_bytes(source, pixels)
    return data, pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("which", ["real", "enriched"])
def test_no_identifying_value_survives(which, real_dicom, enriched):
    source = real_dicom if which == "real" else enriched
    original = pydicom.dcmread(source)
    data, ds = _release(source)
    leaked = [v for v in _identifying_values(source) if v.encode() in data]
    assert not leaked
    for keyword in ("SeriesDescription", "PerformedProcedureStepID", "OtherPatientIDsSequence"):
        assert keyword not in ds, keyword
    assert "IconImageSequence" not in ds  # a thumbnail of the original pixels
    dummies = (None, "", "ANONYMIZED", "00010101")  # the profile's "remove" for a date
    for keyword in (
        "PatientName", "PatientID", "InstitutionName", "StationName", "PatientBirthDate",
        "DateOfSecondaryCapture", "PerformedProcedureStepStartDate",
    ):  # fmt: skip
        assert ds.get(keyword) in dummies, keyword
    for item in ds.get("ReferencedStudySequence", []):  # kept the hospital's study UID before
        assert not item.get("ReferencedSOPInstanceUID")
    assert not any(element.tag.is_private for element in ds)
    assert not any(0x6000 <= element.tag.group <= 0x60FF for element in ds)

    dates, names = [], []

    def visit(_ds, element):
        if element.VR == "DA" and element.value:
            dates.append(element.value)
        if element.VR == "PN" and element.value:
            names.append(str(element.value))

    ds.walk(visit)
    assert set(dates) <= {"00010101"} and set(names) <= {"ANONYMIZED"}  # dates anywhere
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert ds[keyword].value != original[keyword].value
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == original.SOPClassUID and ds.Modality == "CR"
    assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition == "PA"
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert np.array_equal(ds.pixel_array, np.arange(32 * 32, dtype=np.uint8).reshape(32, 32))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_uids_are_remapped_consistently_and_keyed(enriched, tmp_path):
    twin = tmp_path / "twin.dcm"  # another image of the same study and series
    ds = pydicom.dcmread(enriched)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(twin)
    one = DicomDeidentifier(uid_key=KEY)
    _, a = _release(enriched, one)
    _, b = _release(twin, one)
    assert a.StudyInstanceUID == b.StudyInstanceUID  # still one study in the release
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.StudyInstanceUID == one.new_uid(ds.StudyInstanceUID)
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID == one.new_uid("1.2.3.4.5.999")
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    _, other = _release(enriched, DicomDeidentifier(uid_key="another key, another run"))
    assert other.StudyInstanceUID != a.StudyInstanceUID  # no key, no link
    with pytest.raises(ValueError, match="uid_key"):
        DicomDeidentifier(uid_key="short")


def test_privatize_writes_a_deidentified_dicom_of_the_real_file(
    real_dicom, enriched, tmp_path, run_privatize
):
    src = tmp_path / "scans"
    src.mkdir()
    shutil.copyfile(real_dicom, src / "chest.dcm")
    shutil.copyfile(enriched, src / "IM0002")  # no suffix: found by its DICM marker
    counts = run_privatize(src, tmp_path / "out", "dicom_output=true")
    assert counts["ok"] == 2
    rows = read_manifest(tmp_path / "out")
    for name, output in (("chest.dcm", "chest.png"), ("IM0002", "IM0002.png")):
        assert rows[name]["output"] == output
        png = tmp_path / "out" / output
        ds = pydicom.dcmread(png.with_suffix(".dcm"))
        assert ds.pixel_array.shape == (16, 16) and ds.PatientIdentityRemoved == "YES"
        from PIL import Image

        assert np.array_equal(ds.pixel_array, np.asarray(Image.open(png)))
        data = png.with_suffix(".dcm").read_bytes()
        assert not [v for v in _identifying_values(src / name) if v.encode() in data]
