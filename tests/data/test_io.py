"""read_image: formats, bit depths, DICOM LUTs, centre crop, resize and corrupt files."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dpglow.data import DataFormatError, read_image


def ramp(h: int = 48, w: int = 48) -> np.ndarray:
    """A uint8 image whose every pixel differs from its neighbours (catches flips and crops)."""
    y, x = np.mgrid[:h, :w]
    return ((3 * x + 5 * y) % 256).astype(np.uint8)


def write_dicom(
    path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **extra: object
) -> Path:
    """A minimal uncompressed 16-bit DICOM written with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_8bit_roundtrip(tmp_path: Path) -> None:
    img = ramp()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png", None)
    assert out.dtype == np.uint8 and out.shape == (48, 48)
    np.testing.assert_array_equal(out, img)


def test_png_16bit_is_stretched_min_max(tmp_path: Path) -> None:
    # A 12-bit detector range inside 16 bits: 1000..5000 must span the full 0..255.
    values = np.linspace(1000, 5000, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode.startswith("I")  # really a 16-bit file
    out = read_image(tmp_path / "b.png", None)
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone mapping
    expected = np.round((values - 1000.0) * 255.0 / 4000.0)
    np.testing.assert_allclose(out, expected, atol=1)


def test_rgb_jpeg_to_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    out = read_image(tmp_path / "c.jpg", None)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # ITU-R 601-2
    assert out.shape == (32, 32)
    assert abs(float(out.mean()) - luma) < 3


def test_rgba_png_ignores_alpha(tmp_path: Path) -> None:
    gray = ramp(32, 32)
    rgba = np.stack([gray, gray, gray, np.linspace(0, 255, 32 * 32).reshape(32, 32)], -1)
    Image.fromarray(rgba.astype(np.uint8), mode="RGBA").save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_image(tmp_path / "d.png", None), gray)


def test_dicom_monochrome2_and_monochrome1_inverted(tmp_path: Path) -> None:
    pixels = (ramp(40, 40).astype(np.uint16) * 16).astype(np.uint16)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", pixels), None)
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"), None)
    assert mono2.dtype == np.uint8 and mono2.shape == (40, 40)
    assert mono2.min() == 0 and mono2.max() == 255
    np.testing.assert_array_equal(mono1, 255 - mono2)
    # Brightest stored value is darkest in MONOCHROME1.
    assert mono1.ravel()[pixels.argmax()] == 0


def test_dicom_modality_and_voi_lut_applied(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (40, 1))  # columns 0..3900
    # Rescale to 2p - 1000, then window [1000, 3000] in rescaled units, i.e. raw p in
    # [1000, 2000]; windowing the raw values instead would clip at p = 1000 and 3000.
    path = write_dicom(
        tmp_path / "lut.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=2000,
        WindowWidth=2000,
    )
    row = read_image(path, None)[0].astype(int)
    raw = pixels[0].astype(int)
    assert np.all(row[raw <= 1000] == 0) and np.all(row[raw >= 2000] == 255)
    inside = (raw > 1000) & (raw < 2000)
    assert inside.sum() == 9 and np.all(np.diff(row[inside]) > 0)


def test_dicom_without_suffix_detected_by_magic(tmp_path: Path) -> None:
    pixels = ramp(16, 16).astype(np.uint16)
    path = write_dicom(tmp_path / "image_no_suffix", pixels)
    assert read_image(path, None).shape == (16, 16)


def test_non_square_centre_crop_and_resize(tmp_path: Path) -> None:
    img = ramp(40, 80)
    Image.fromarray(img).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_image(tmp_path / "wide.png", None), img[:, 20:60])
    Image.fromarray(img.T.copy()).save(tmp_path / "tall.png")
    np.testing.assert_array_equal(read_image(tmp_path / "tall.png", None), img.T[20:60, :])
    small = read_image(tmp_path / "wide.png", 16)
    assert small.shape == (16, 16) and small.dtype == np.uint8


def test_resize_is_antialiased(tmp_path: Path) -> None:
    # A 1-pixel checkerboard averages to mid-gray when downsampled with antialiasing;
    # nearest-neighbour or non-antialiased sampling would keep 0/255 pixels.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    out = read_image(tmp_path / "board.png", 8)
    assert out.shape == (8, 8)
    assert np.all(np.abs(out.astype(int) - 128) <= 2)


@pytest.mark.parametrize("lenient", [False, True])
def test_truncated_png_raises_naming_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lenient: bool
) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    bad = tmp_path / "truncated_scan.png"
    bad.write_bytes(data[: len(data) // 2])
    # Even if some library switched PIL to lenient mode, a truncated file must not load.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)
    with pytest.raises(DataFormatError, match=re.escape(str(bad))):
        read_image(bad, 32)
    assert lenient == ImageFile.LOAD_TRUNCATED_IMAGES  # global setting restored


def test_not_an_image_raises_naming_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not a png")
    with pytest.raises(DataFormatError, match=re.escape(str(bad))):
        read_image(bad, 32)


def test_non_finite_pixels_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(tmp_path / "nan.tiff")
    partly = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    partly[2, 3] = -np.inf
    Image.fromarray(partly).save(tmp_path / "inf.tiff")
    for name in ("nan.tiff", "inf.tiff"):
        with pytest.raises(DataFormatError, match=r"nan\.tiff|inf\.tiff") as err:
            read_image(tmp_path / name, 8)
        assert "NaN or infinity" in str(err.value)
    finite = np.linspace(-3, 5, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(finite).save(tmp_path / "ok.tiff")
    out = read_image(tmp_path / "ok.tiff", None)
    assert out.min() == 0 and out.max() == 255


def test_max_pixels_refuses_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(ramp(40, 50)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", 8, max_pixels=2000).shape == (8, 8)
    with pytest.raises(DataFormatError, match="more than max_pixels=1,999"):
        read_image(tmp_path / "a.png", 8, max_pixels=1999)
    pixels = ramp(30, 30).astype(np.uint16)
    with pytest.raises(DataFormatError, match="900 pixels is more than max_pixels=899"):
        read_image(write_dicom(tmp_path / "a.dcm", pixels), 8, max_pixels=899)
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        read_image(tmp_path / "a.png", 8, max_pixels=0)


def write_png16_rows(path: Path, side: int) -> Path:
    """A side x side 16-bit gray PNG written row by row (1-2 MB, no image in memory):
    row y holds the value 5 y."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(1)  # fastest: the rows are constant anyway
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)))
        for y in range(side):
            data = compressor.compress(b"\x00" + struct.pack(">H", 5 * y % 65536) * side)
            if data:
                fh.write(chunk(b"IDAT", data))
        fh.write(chunk(b"IDAT", compressor.flush()))
        fh.write(chunk(b"IEND", b""))
    return path


# In one child process: the peak RSS after importing the decoder and decoding a small image
# (the baseline), then the extra peak of decoding the big file under each limit. The decoder is
# imported without the rest of dpglow.data (torch, Lightning: ~1 GB and seconds to import),
# which the extra peak does not depend on.
MEASURE = """
import json, os, resource, sys, types
import dpglow
package = types.ModuleType("dpglow.data")
package.__path__ = [os.path.join(dpglow.__path__[0], "data")]
sys.modules["dpglow.data"] = package
from dpglow.data.io import read_image

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

read_image(sys.argv[1], 32)
base, results = peak(), []
for limit in sys.argv[3:]:
    try:
        out, error = list(read_image(sys.argv[2], 32, max_pixels=int(limit)).shape), None
    except Exception as err:
        out, error = None, str(err)
    results.append({"shape": out, "error": error, "extra": peak() - base})
print(json.dumps(results))
"""


def test_a_huge_16bit_png_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    big = write_png16_rows(tmp_path / "huge.png", 13000)  # 169 Mpx, 1.5 MB on disk
    assert big.stat().st_size < 2_000_000
    small = tmp_path / "small.png"
    Image.fromarray(ramp()).save(small)
    # The default limit first (refused), then a limit that lets it through (decoded).
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(small), str(big), "100000000", "200000000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused, decoded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert refused["shape"] is None and "more than max_pixels=100,000,000" in refused["error"]
    assert refused["extra"] < 50 * 2**20
    # Allowed: a lookup table maps 16 to 8 bits (the old float64 copies peaked at +4.2 GB).
    assert decoded["shape"] == [32, 32], decoded["error"]
    assert decoded["extra"] < 1.5 * 2**30, decoded
