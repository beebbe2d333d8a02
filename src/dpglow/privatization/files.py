"""Input listing, output naming and atomic writes: a killed run never leaves a partial file."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from dpglow.data.io import DICOM_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)


def check_folders(input_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    """Resolve both folders; refuse an output folder that is, or lies inside, the input folder."""
    src = Path(input_dir).expanduser().resolve()
    dst = Path(output_dir).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(
            f"input_dir {str(src)!r} is not a folder: pass input_dir=<folder of images>"
        )
    if dst == src or src in dst.parents:
        raise ValueError(
            f"output_dir {str(dst)!r} lies inside input_dir {str(src)!r}: dpglow never writes into "
            "the input folder. Choose an output_dir outside it."
        )
    return src, dst


def iter_inputs(root: Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, relative output name) for every image below ``root``, lazily, sorted per folder
    (only one folder's listing is held at a time).

    Outputs keep the relative path with a ``.png`` suffix; where two inputs of one folder share a
    stem (``a.jpg``, ``a.dcm``) they keep their full name (``a.jpg.png``) so neither overwrites
    the other.
    """
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        images = sorted(f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        # Counted once: a list.count per file is quadratic in a folder of 50,000 files.
        stems = Counter(Path(f).stem for f in images)
        for name in images:
            path = Path(folder) / name
            rel = path.relative_to(root)
            unique = stems[Path(name).stem] == 1 or Path(name).suffix.lower() == ".png"
            out = rel.with_suffix(".png") if unique else rel.with_name(name + ".png")
            yield path, out.as_posix()


@contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file handle on a temporary file beside ``path`` that is fsynced and renamed over
    ``path`` when the block ends (and removed if it raises): written as it goes, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_png(path: Path, image: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def remove_stale_temporaries(root: Path) -> int:
    """Delete temporaries left by a killed run (never complete outputs)."""
    count = 0
    if root.is_dir():
        for tmp in root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            count += 1
    return count
