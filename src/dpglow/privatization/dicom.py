"""Write privatized pixels back as DICOM with a de-identified header.

A private image whose header still names the patient protects nothing, so the output keeps only
what describes the image (modality, view, body part) and drops or replaces everything that
identifies a person, place or time (after DICOM PS3.15 Annex E's basic profile, simplified).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dpglow.privatization.files import atomic_write_bytes

# Removed outright (PS3.15 E.1-1 basic profile: identifying attributes).
PHI_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence",
    "PatientBirthName", "MilitaryRank", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "ResponsiblePerson", "ResponsibleOrganization",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician", "StationName", "DeviceSerialNumber", "AccessionNumber", "StudyID",
    "StudyDescription", "SeriesDescription", "RequestAttributesSequence", "ImageComments",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
    "AcquisitionDateTime", "IssuerOfPatientID", "FrameOfReferenceUID", "IrradiationEventUID",
)  # fmt: skip
# Pixel-related attributes that no longer describe the rewritten 8-bit pixels.
STALE_PIXEL_KEYWORDS = (
    "WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "VOILUTSequence", "ModalityLUTSequence", "PixelSpacing", "ImagerPixelSpacing",
    "LargestImagePixelValue", "SmallestImagePixelValue", "PixelPaddingValue",
)  # fmt: skip


def deidentified_dicom_bytes(source: Path, pixels: np.ndarray) -> bytes:
    """The DICOM file ``source`` with ``pixels`` (uint8 HxW) as its image and PHI removed."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source)
    for keyword in (*PHI_KEYWORDS, *STALE_PIXEL_KEYWORDS):
        if keyword in ds:
            delattr(ds, keyword)
    ds.remove_private_tags()
    # Fresh UIDs: the originals would link the release back to the hospital's archive.
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "dpglow: DP-GLOW privatized pixels; PS3.15 E.1-1 basic profile"
    ds.BurnedInAnnotation = "NO"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    for keyword in ("NumberOfFrames", "PlanarConfiguration"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_deidentified_dicom(source: Path, pixels: np.ndarray, target: Path) -> None:
    atomic_write_bytes(target, deidentified_dicom_bytes(source, pixels))
