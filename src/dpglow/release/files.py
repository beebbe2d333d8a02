"""Input listing, output naming and atomic writes: a killed run never leaves a partial file.

Every file under the input folder is listed (:func:`iter_inputs`): an image to privatize, a file
skipped with its reason, or a failure (an unreadable folder, a broken link, an output name that
would clash with another input's). Outputs never clash, not even on a file system that ignores
case or normalises Unicode. Temporaries carry the run's token (``.dpglow-<token>-...``), so a
later run deletes only what this tool created.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from dpglow.data.io import IMAGE_SUFFIXES, has_dicom_marker, is_dicom
from dpglow.utils.files import atomic_write_bytes

MANIFEST = "manifest.csv"
REPORT = "privacy_report.json"
_TOKEN = re.compile(r"[0-9a-f]{16}")


class InputEntry(NamedTuple):
    """One file (or unreadable folder) under the input folder."""

    path: Path
    input: str  # relative POSIX path; an unreadable folder ends with "/"
    output: str  # relative output path ("" when there is none)
    status: str  # "pending" (an image to privatize), "skipped" or "failed"
    reason: str  # why it is skipped or failed ("" when pending)


def shown(text: str) -> str:
    """``text`` safe to print or log: bytes that are not UTF-8 appear as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _overlap(a: Path, b: Path) -> bool:
    """Whether ``b`` is ``a`` or lies inside it, also through another path to the same folder
    (a bind mount, a hard-linked tree): every existing ancestor of ``b`` is compared with
    ``a`` by device and inode."""
    if b == a or a in b.parents:
        return True
    for ancestor in (b, *b.parents):
        try:
            if ancestor.exists() and os.path.samefile(ancestor, a):
                return True
        except OSError:
            continue
    return False


def check_folders(input_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    """Resolve both folders (following symbolic links); refuse them if either is, or lies
    inside, the other."""
    src = Path(input_dir).expanduser().resolve()
    dst = Path(output_dir).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(
            f"input_dir {shown(str(src))!r} is not a folder: pass input_dir=<folder of images>"
        )
    if _overlap(src, dst):
        raise ValueError(
            f"output_dir {shown(str(dst))!r} lies inside input_dir {shown(str(src))!r}: dpglow "
            "never writes into the input folder. Choose an output_dir outside it."
        )
    if _overlap(dst, src):
        raise ValueError(
            f"input_dir {shown(str(src))!r} lies inside output_dir {shown(str(dst))!r}: the "
            "release would be written around its own inputs. Choose folders side by side."
        )
    return src, dst


def collision_key(rel: str) -> str:
    """The name a case-insensitive, Unicode-normalising file system sees: two outputs with the
    same key would be one file there."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", rel).casefold())


def _classify(path: Path) -> tuple[str, str]:
    """("pending", "") for an image, else ("skipped" | "failed", the reason)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        kind = "a broken symbolic link" if path.is_symlink() else "cannot be read"
        return "failed", f"{kind} ({type(err).__name__}: {err.strerror})"
    if not stat.S_ISREG(mode):
        return "skipped", "not a regular file (a FIFO, socket or device)"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "pending", ""
    try:
        if has_dicom_marker(path):
            return "pending", ""  # a DICOM file without a DICOM suffix
    except OSError as err:
        return "failed", f"cannot be read ({type(err).__name__}: {err.strerror})"
    suffix = path.suffix or "no suffix"
    return "skipped", (
        f"not an image ({suffix}, no DICOM marker); images are {', '.join(IMAGE_SUFFIXES)} "
        "or DICOM files"
    )


def _outputs(rel_folder: Path, names: list[str]) -> dict[str, str]:
    """The preferred output of each image of one folder: ``a.jpg`` -> ``a.png``; where two
    images share a stem (ignoring case and normalisation) the non-PNG ones keep their full name
    (``a.jpg`` -> ``a.jpg.png``, ``a.PNG`` -> ``a.PNG.png``) so neither overwrites the other."""
    stems = Counter(collision_key(Path(n).stem) for n in names)
    out = {}
    for name in names:
        unique = stems[collision_key(Path(name).stem)] == 1 or Path(name).suffix == ".png"
        target = Path(name).with_suffix(".png").name if unique else name + ".png"
        out[name] = (rel_folder / target).as_posix()
    return out


def _claim(claimed: set[str], entry: InputEntry) -> InputEntry:
    """``entry`` with an output no earlier input has (ignoring case and normalisation): its
    preferred one, else its full name + ``.png``, else it fails."""
    top = entry.output.split("/", 1)[0]
    if "/" in entry.output and collision_key(top) in (MANIFEST, REPORT):
        reason = f"it lies in a folder named {top!r}, the name of a file of the release: rename it"
        return entry._replace(output="", status="failed", reason=reason)
    for output in dict.fromkeys((entry.output, entry.input + ".png")):
        key = collision_key(output)
        if key not in claimed:
            claimed.add(key)
            return entry._replace(output=output)
    return entry._replace(
        output="",
        status="failed",
        reason=(
            f"its output {entry.output!r} would be the same file as another input's on a file "
            "system that ignores case or Unicode normalisation (the names differ only there): "
            "rename one of them"
        ),
    )


def _listing_failure(root: Path, err: OSError) -> InputEntry:
    folder = Path(err.filename) if err.filename else root
    rel = folder.relative_to(root).as_posix()
    return InputEntry(
        folder,
        f"{rel}/",
        "",
        "failed",
        f"cannot list this folder ({type(err).__name__}: {err.strerror}): its files are not "
        "privatized; make it readable and re-run",
    )


def iter_inputs(root: Path) -> Iterator[InputEntry]:
    """Every file below ``root`` as an :class:`InputEntry`, lazily and in a fixed order (folders
    and files sorted; one folder's listing held at a time, plus one key per output)."""
    claimed: set[str] = set()
    errors: list[OSError] = []
    for folder, dirs, files in os.walk(root, onerror=errors.append):
        yield from (_listing_failure(root, err) for err in errors)
        errors.clear()
        dirs.sort()
        here = Path(folder)
        rel_folder = here.relative_to(root)
        for name in dirs:
            if (here / name).is_symlink():  # os.walk lists them but does not follow them
                rel = (rel_folder / name).as_posix()
                reason = "a symbolic link to a folder: not followed (link the files instead)"
                yield InputEntry(here / name, f"{rel}/", "", "skipped", reason)
        kinds = {name: _classify(here / name) for name in sorted(files)}
        outputs = _outputs(
            rel_folder, [n for n, (status, _) in kinds.items() if status == "pending"]
        )
        for name, (status, reason) in kinds.items():
            entry = InputEntry(
                here / name, (rel_folder / name).as_posix(), outputs.get(name, ""), status, reason
            )
            yield _claim(claimed, entry) if status == "pending" else entry
    yield from (_listing_failure(root, err) for err in errors)


def is_done(output_dir: Path, entry: InputEntry, *, dicom_output: bool) -> bool:
    """Whether ``entry``'s outputs exist (the PNG, and its DICOM twin with ``dicom_output``)."""
    target = output_dir / entry.output
    if not target.is_file():
        return False
    return not (dicom_output and is_dicom(entry.path)) or target.with_suffix(".dcm").is_file()


def check_token(run_token: str) -> str:
    if not isinstance(run_token, str) or not _TOKEN.fullmatch(run_token):
        raise ValueError(f"run_token must be 16 lowercase hex digits, got {run_token!r}")
    return run_token


def new_run_token() -> str:
    return secrets.token_hex(8)


def atomic_write_png(path: Path, image: np.ndarray, *, run_token: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue(), token=check_token(run_token))


def remove_stale_temporaries(root: Path, *, run_tokens: list[str]) -> int:
    """Delete the temporaries that runs with ``run_tokens`` left when killed (never complete
    outputs, never a file this tool did not name)."""
    tokens = [t for t in run_tokens if isinstance(t, str) and _TOKEN.fullmatch(t)]
    if not tokens or not root.is_dir():
        return 0
    pattern = re.compile(rf"\.dpglow-(?:{'|'.join(tokens)})-[0-9a-f]{{8}}\.tmp")
    count = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if pattern.fullmatch(name):
                (Path(folder) / name).unlink(missing_ok=True)
                count += 1
    return count
