"""Decode any chest X-ray file (PNG 8/16-bit, JPEG, DICOM) into a square 8-bit grayscale array."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from dpglow.data.paths import DataFormatError

# Bump when the decoded pixels would change (part of every cache key).
PREPROCESS_VERSION = "v1"

DICOM_SUFFIXES = (".dcm", ".dicom")
_truncation_lock = threading.Lock()


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated files even if another library set LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield  # common case: already strict, no global state to touch
        return
    with _truncation_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly map ``arr``'s min..max to 0..255 (a constant image maps to 0)."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    # Many DICOM exports have no suffix; the standard puts "DICM" after a 128-byte preamble.
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom  # lazy: only DICOM users pay for the import

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # multi-frame: a radiograph's first frame
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected a grayscale DICOM, got pixel shape {arr.shape}")
    # Rescale slope/intercept (modality LUT), then the stored window or VOI LUT, so the
    # contrast matches what a radiologist's viewer shows.
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds)
    out = stretch_to_uint8(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 stores bright bone as low values
    return out


def _pil_to_gray_uint8(img: Image.Image) -> np.ndarray:
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit (or 32-bit) radiographs rarely use the full range (12-bit detectors, varied
        # windowing), so a fixed /257 would give dark, low-contrast images that differ per
        # source; a per-image min..max stretch puts every source on the same 8-bit range,
        # as the DICOM path does after windowing.
        return stretch_to_uint8(np.asarray(img))
    if img.mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.uint8)
    # RGB, RGBA (alpha ignored), P, CMYK, 1, ...: ITU-R 601-2 luminance via PIL.
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def decode_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to a uint8 HxW grayscale array at its native size."""
    path = Path(path)
    try:
        if _is_dicom(path):
            return _read_dicom(path)
        with _strict_truncation(), Image.open(path) as img:
            img.load()
            return _pil_to_gray_uint8(img)
    except DataFormatError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL/pydicom raise OSError, SyntaxError, ValueError, ...
        raise DataFormatError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def center_crop_resize(arr: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop a uint8 HxW array to a square, then resize to ``size`` (None keeps the crop).

    Resizing uses PIL's antialiased BILINEAR filter (a triangle filter scaled to the reduction
    factor), so downsampling 1024 -> 64 averages pixels instead of aliasing.
    """
    h, w = arr.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    arr = arr[top : top + side, left : left + side]
    if size is None or size == side:
        return np.ascontiguousarray(arr)
    img = Image.fromarray(np.ascontiguousarray(arr))  # uint8 2-D -> mode "L"
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def read_image(path: str | os.PathLike[str], size: int | None) -> np.ndarray:
    """Read a chest X-ray as a uint8 ``size`` x ``size`` grayscale array.

    PNG (8/16-bit), JPEG, RGB/RGBA (-> luminance) and DICOM (modality/VOI LUT, MONOCHROME1
    inverted, min-max to 8 bit) are supported; the image is centre-cropped to a square and
    resized with antialiased bilinear filtering. Corrupt or truncated files raise
    DataFormatError naming the file.
    """
    return center_crop_resize(decode_gray(path), size)
