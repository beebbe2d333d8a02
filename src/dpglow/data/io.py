"""Decode any chest X-ray file (PNG 8/16-bit, JPEG, TIFF, DICOM) into a square 8-bit gray array.

Decoding memory is bounded: a file above ``max_pixels`` is refused before its pixels are decoded,
and high-bit-depth pixels are mapped to 8 bits through a lookup table (integers) or in row blocks
(floats), so no full-size float copy is made (a 16-bit image needs about 5 bytes per pixel).
"""

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
# Every file name ending dpglow reads as an image (compared lower-cased).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)
# 10,000 x 10,000: far above any radiograph (~3000 x 3000), low enough that decoding stays
# within about 1 GB. Raise it (``max_pixels=``) only where the machine has the memory.
DEFAULT_MAX_PIXELS = 100_000_000
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_LUT_MAX = 1 << 17  # integer ranges up to this go through a lookup table
_BLOCK = 1 << 20  # elements per block of the float path: ~8 MB of float64 temporaries
_truncation_lock = threading.Lock()


class NonFinitePixelsError(ValueError):
    """The image holds NaN or infinite values: it has no valid intensity range."""


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


def _integer_lut(lo: int, hi: int) -> np.ndarray:
    """The 8-bit value of every integer in lo..hi under the min..max stretch."""
    values = np.arange(lo, hi + 1, dtype=np.float64)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly map ``arr``'s min..max to 0..255 (a constant image maps to 0).

    Integers of up to 16 bits go through a lookup table, anything else is converted in blocks
    of rows: the result equals the whole-array float64 formula without its full-size copies.
    Raises :class:`NonFinitePixelsError` if any value is NaN or infinite.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = arr.min(), arr.max()  # NaN propagates through min and max
    if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        raise NonFinitePixelsError(
            "the pixel values include NaN or infinity, so the image has no valid intensity "
            "range: export it again without invalid pixels"
        )
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    if arr.dtype.kind in "uib" and int(hi) - int(lo) < _LUT_MAX:
        return _lookup(arr, _integer_lut(int(lo), int(hi)), int(lo))
    lo, scale = float(lo), 255.0 / (float(hi) - float(lo))
    out = np.empty(arr.shape, dtype=np.uint8)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        block = flat_in[start : start + _BLOCK].astype(np.float64)
        flat_out[start : start + _BLOCK] = np.round((block - lo) * scale)
    return out


def _lookup(arr: np.ndarray, table: np.ndarray, offset: int) -> np.ndarray:
    """``table[arr - offset]``, in blocks so the index array never has the image's size."""
    out = np.empty(arr.shape, dtype=table.dtype)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        index = flat_in[start : start + _BLOCK].astype(np.int64) - offset
        flat_out[start : start + _BLOCK] = table[index]
    return out


def has_dicom_marker(path: str | os.PathLike[str]) -> bool:
    """Whether the file has the "DICM" marker the standard puts after a 128-byte preamble."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom(path: Path) -> bool:
    # Many DICOM exports have no suffix: those are recognised by their marker.
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_marker(path)


def check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return max_pixels


def _refuse_above(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DataFormatError(
            f"{path}: {width} x {height} = {width * height:,} pixels is more than "
            f"max_pixels={max_pixels:,}; it is not decoded, to bound memory (about 5 bytes per "
            "pixel for a 16-bit image). Downscale the file, or raise max_pixels=<n> where the "
            "machine has the memory."
        )


def _read_dicom(path: Path, max_pixels: int) -> np.ndarray:
    import pydicom  # lazy: only DICOM users pay for the import

    ds = pydicom.dcmread(path)
    _refuse_above(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), max_pixels)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        ds.pixel_array_options(index=0)  # multi-frame: a radiograph's first frame, decoded alone
    arr = ds.pixel_array
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected a grayscale DICOM, got pixel shape {arr.shape}")
    out = _dicom_to_uint8(arr, ds)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 stores bright bone as low values
    return out


def _dicom_to_uint8(arr: np.ndarray, ds) -> np.ndarray:
    """Rescale slope/intercept (modality LUT), then the stored window or VOI LUT, so the contrast
    matches what a radiologist's viewer shows, then min..max to 8 bits.

    Both LUTs act value by value, so for integer pixels they are evaluated once per stored value
    in the image's range and applied as one table (the result is the same, without float copies
    of the image)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def display(values: np.ndarray) -> np.ndarray:
        return apply_voi_lut(apply_modality_lut(values, ds), ds)

    if arr.dtype.kind not in "ui" or int(arr.max()) - int(arr.min()) >= _LUT_MAX:
        return stretch_to_uint8(display(arr))
    lo, hi = int(arr.min()), int(arr.max())
    values = display(np.arange(lo, hi + 1).astype(arr.dtype))
    present = np.zeros(hi - lo + 1, dtype=bool)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _BLOCK):
        index = flat[start : start + _BLOCK].astype(np.int64) - lo
        present |= np.bincount(index, minlength=present.size) > 0
    shown = values[present]  # the display values the image really has: its min..max
    table = np.zeros(values.shape, dtype=np.uint8)
    table[present] = stretch_to_uint8(shown)
    return _lookup(arr, table, lo)


def _pil_to_gray_uint8(img: Image.Image) -> np.ndarray:
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.uint8)
    # RGB, RGBA (alpha ignored), P, CMYK, 1, ...: ITU-R 601-2 luminance via PIL.
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _read_pil(path: Path, max_pixels: int) -> np.ndarray:
    with _strict_truncation(), Image.open(path) as img:
        _refuse_above(path, *img.size, max_pixels)
        img.load()
        if img.mode not in _HIGH_DEPTH_MODES:
            return _pil_to_gray_uint8(img)
        # 16-bit (or 32-bit) radiographs rarely use the full range (12-bit detectors, varied
        # windowing), so a fixed /257 would give dark, low-contrast images that differ per
        # source; a per-image min..max stretch puts every source on the same 8-bit range, as
        # the DICOM path does after windowing.
        arr = np.asarray(img)
        img.close()  # frees PIL's copy of the pixels before the stretch
    return stretch_to_uint8(arr)


def decode_gray(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``path`` to a uint8 HxW grayscale array at its native size.

    Refuses (DataFormatError naming the file) a file above ``max_pixels`` before decoding it,
    and one whose pixels include NaN or infinity.
    """
    path, max_pixels = Path(path), check_max_pixels(max_pixels)
    try:
        return _read_dicom(path, max_pixels) if is_dicom(path) else _read_pil(path, max_pixels)
    except (DataFormatError, FileNotFoundError):
        raise
    except NonFinitePixelsError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
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


def read_image(
    path: str | os.PathLike[str], size: int | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read a chest X-ray as a uint8 ``size`` x ``size`` grayscale array.

    PNG (8/16-bit), JPEG, TIFF, RGB/RGBA (-> luminance) and DICOM (modality/VOI LUT, MONOCHROME1
    inverted, min-max to 8 bit) are supported; the image is centre-cropped to a square and
    resized with antialiased bilinear filtering. Corrupt or truncated files, files above
    ``max_pixels`` and images with NaN or infinite pixels raise DataFormatError naming the file.
    """
    return center_crop_resize(decode_gray(path, max_pixels=max_pixels), size)
