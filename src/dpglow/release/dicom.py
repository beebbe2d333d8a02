"""Write privatized pixels back as DICOM with a de-identified header.

A private image whose header still names the patient protects nothing. The header goes through
the DICOM standard's Basic Application Level Confidentiality Profile (PS3.15 Annex E, the
actions of Table E.1-1) as dicom-anonymizer implements it (KitwareMedical; its tag table is
generated from the standard, edition :data:`PROFILE_EDITION`), with dpglow's stricter rules on
top, because the library applies the table to the top level of the header only:

- the table is applied inside every sequence item as well;
- every UID that is not a registered DICOM UID (SOP classes, transfer syntaxes, coding schemes)
  is replaced, anywhere in the header: the same original UID gets the same new one within a
  run (all ranks share the key), through a keyed hash whose key is drawn per run and never
  stored, so references between the released files hold but nothing links them back;
- every date, time and date-time anywhere is replaced by a dummy, and every person name the
  profile left is emptied (its own dummy, "ANONYMIZED", stays);
- private tags, overlays, the icon image and pixel attributes that no longer describe the
  pixels are removed, and the file meta header is rebuilt.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_EDITION = "dicomfields_2026c"
# Pixel-related attributes that no longer describe the rewritten 8-bit pixels.
STALE_PIXEL_KEYWORDS = (
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "RescaleIntercept",
    "RescaleSlope", "RescaleType", "VOILUTSequence", "ModalityLUTSequence", "PixelSpacing",
    "ImagerPixelSpacing", "LargestImagePixelValue", "SmallestImagePixelValue",
    "PixelPaddingValue", "IconImageSequence", "NumberOfFrames", "PlanarConfiguration",
)  # fmt: skip
DATE_VRS = ("DA", "DT", "TM")
# De-identification Method: LO values of at most 64 characters each.
METHOD = (
    "dpglow: DP-GLOW privatized pixels",
    "PS3.15 Annex E Basic Application Confidentiality Profile",
    f"dicom-anonymizer {PROFILE_EDITION}, in every sequence item",
    "dates removed, person names emptied, UIDs remapped",
)


@functools.cache
def _profile_rules() -> dict[tuple[int, ...], Any]:
    """Table E.1-1's action per tag; its U (replace UID) actions are done beforehand, keyed."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from dicomanonymizer.simpledicomanonymizer import initialize_actions, keep

    rules = initialize_actions(PROFILE_EDITION)
    for tag in dicom_anonymization_database_selector(PROFILE_EDITION)["U_TAGS"]:
        rules[tag] = keep
    return rules


def _apply_profile(ds: Any) -> None:
    """Table E.1-1 on ``ds`` and, recursively, on every item of its remaining sequences."""
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset

    rules = _profile_rules()
    anonymize_dataset(ds, base_rules_gen=lambda: dict(rules), delete_private_tags=True)
    for element in list(ds):
        if element.VR == "SQ":
            for item in element.value:
                _apply_profile(item)


class DicomDeidentifier:
    """De-identified DICOM bytes for a source file and its privatized pixels.

    ``uid_key``: the secret of the UID mapping (one per run, shared by the ranks, not stored).
    """

    def __init__(self, *, uid_key: str) -> None:
        if not isinstance(uid_key, str) or len(uid_key) < 16:
            raise ValueError("uid_key must be a secret string of at least 16 characters")
        self._uid_key = uid_key

    def new_uid(self, uid: str) -> str:
        """The release's UID for an original (non-registered) UID."""
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[self._uid_key, str(uid)])

    def _remap_uids(self, ds: Any) -> None:
        from pydicom.multival import MultiValue
        from pydicom.uid import UID

        def mapped(value: str) -> str:
            return value if not value or UID(value).keyword else self.new_uid(value)

        def visit(_dataset: Any, element: Any) -> None:
            if element.VR != "UI" or not element.value:
                return
            if isinstance(element.value, MultiValue):
                element.value = [mapped(str(v)) for v in element.value]
            else:
                element.value = mapped(str(element.value))

        ds.walk(visit)

    @staticmethod
    def _clear_dates_and_names(ds: Any) -> None:
        from dicomanonymizer.simpledicomanonymizer import replace_date_time_element

        def visit(_dataset: Any, element: Any) -> None:
            if element.VR in DATE_VRS and element.value not in (None, ""):
                replace_date_time_element(element)
            elif element.VR == "PN" and element.value not in (None, "", "ANONYMIZED"):
                element.value = ""

        ds.walk(visit)

    @staticmethod
    def _drop_stale(ds: Any) -> None:
        for keyword in STALE_PIXEL_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
        for element in list(ds):
            if 0x6000 <= element.tag.group <= 0x60FF:  # overlays describe the original pixels
                del ds[element.tag]

    def deidentify(self, ds: Any) -> None:
        """De-identify the header of ``ds`` in place (pixels untouched)."""
        self._remap_uids(ds)
        _apply_profile(ds)
        self._clear_dates_and_names(ds)
        self._drop_stale(ds)

    def dicom_bytes(self, source: Path, pixels: np.ndarray) -> bytes:
        """The DICOM file ``source`` with ``pixels`` (uint8 HxW) as its image, de-identified."""
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        ds = pydicom.dcmread(source)
        self.deidentify(ds)
        meta = FileMetaDataset()  # rebuilt: the original names the sending station
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.set_pixel_data(
            np.ascontiguousarray(pixels, dtype=np.uint8),
            "MONOCHROME2",
            8,
            generate_instance_uid=False,
        )
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "REMOVED"
        ds.DeidentificationMethod = list(METHOD)
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = [code]
        ds.BurnedInAnnotation = "NO"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
