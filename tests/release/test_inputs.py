"""Every file under input_dir gets a manifest row that matches the disk: odd names, clashing
names, files that are not images, unreadable folders, huge and non-finite images, and inputs
deleted between runs."""

from __future__ import annotations

import os
import unicodedata

import numpy as np
import pytest
from PIL import Image

from dpglow.release.files import collision_key
from release.conftest import read_manifest, write_dicom, write_png


def _outputs_on_disk(out) -> set[str]:
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.suffix in (".png", ".dcm")
    }


def _assert_manifest_matches_disk(out) -> dict:
    rows = read_manifest(out)
    ok = [r["output"] for r in rows.values() if r["status"] == "ok"]
    assert len({collision_key(o) for o in ok}) == len(ok), "two rows share an output"
    assert set(ok) == _outputs_on_disk(out)
    return rows


def test_outputs_never_collide(tmp_path, run_privatize):
    src = tmp_path / "scans"
    cafe = "caf\u00e9.png"
    nfd = unicodedata.normalize("NFD", cafe)
    names = [
        "case/a.png", "case/a.PNG",  # one stem, suffixes differing in case
        f"nf/{cafe}", f"nf/{nfd}",  # one name in two Unicode normalisations
        "Ward/x.png", "ward/x.png",  # folders differing in case
        "taken/A.png", "taken/A.png.png", "taken/a.png",  # a.png: its name and fallback taken
        "Manifest.csv/x.png",  # a folder that would replace the release's own manifest
    ]  # fmt: skip
    for i, name in enumerate(names):
        write_png(src / name, seed=i)
    counts = run_privatize(src, tmp_path / "out")
    rows = _assert_manifest_matches_disk(tmp_path / "out")
    assert set(rows) == set(names)
    output = {k: r["output"] for k, r in rows.items()}
    assert output["case/a.png"] == "case/a.png" and output["case/a.PNG"] == "case/a.PNG.png"
    first, second = sorted((cafe, nfd))  # the first in sorted order keeps its name
    assert output[f"nf/{first}"] == f"nf/{first}" and output[f"nf/{second}"] == f"nf/{second}.png"
    assert output["Ward/x.png"] == "Ward/x.png" and output["ward/x.png"] == "ward/x.png.png"
    assert output["taken/A.png"] == "taken/A.png"
    assert output["taken/A.png.png"] == "taken/A.png.png"
    # taken/a.png can have neither "a.png" nor "a.png.png": it fails, saying what to do.
    failed = rows["taken/a.png"]
    assert failed["status"] == "failed" and "rename one" in failed["error"]
    failed = rows["Manifest.csv/x.png"]
    assert failed["status"] == "failed" and "the name of a file of the release" in failed["error"]
    assert counts["ok"] == len(names) - 2 and counts["failed"] == 2


def test_names_that_are_not_utf8(tmp_path, run_privatize):
    src = tmp_path / "scans"
    raw = [b"scan\xff.png", b"ward\xfe/x.png", b"ok.png"]
    for i, name in enumerate(raw):
        write_png(src / os.fsdecode(name), seed=i)
    assert run_privatize(src, tmp_path / "out")["ok"] == 3
    manifest = (tmp_path / "out" / "manifest.csv").read_bytes()
    for name in raw:
        assert name in manifest  # written byte for byte, as on disk
        assert os.path.isfile(os.path.join(os.fsencode(tmp_path / "out"), name))
    _assert_manifest_matches_disk(tmp_path / "out")
    again = run_privatize(src, tmp_path / "out")  # and it can be read back
    assert again["ok"] == 3 and again["written_this_run"] == 0


def test_every_file_gets_a_row(tmp_path, run_privatize, monkeypatch):
    src = tmp_path / "scans"
    write_png(src / "scan.png")
    write_png(src / "locked" / "hidden.png")
    (src / "README.txt").write_text("scans from ward B")
    (src / "data.bin").write_bytes(b"\0" * 300)
    write_dicom(src / "IM000001", np.full((20, 20), 100, np.uint8))  # DICOM without a suffix
    os.mkfifo(src / "pipe.png")
    os.symlink(src / "gone.png", src / "dangling.png")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", src / "linked")
    real = os.scandir

    def scandir(path="."):  # "locked" cannot be listed (chmod 000 would not stop root)
        if os.fspath(path) == os.fspath(src / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    counts = run_privatize(src, tmp_path / "out")
    monkeypatch.undo()
    rows = _assert_manifest_matches_disk(tmp_path / "out")
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {
        "scan.png": "ok",
        "IM000001": "ok",
        "README.txt": "skipped",
        "data.bin": "skipped",
        "pipe.png": "skipped",
        "linked/": "skipped",
        "dangling.png": "failed",
        "locked/": "failed",
    }
    assert rows["IM000001"]["output"] == "IM000001.png"
    assert "not an image" in rows["README.txt"]["error"]
    assert "not a regular file" in rows["pipe.png"]["error"]
    assert "broken symbolic link" in rows["dangling.png"]["error"]
    assert "cannot list this folder" in rows["locked/"]["error"]
    assert counts["failed"] == 2  # the command exits 1


def test_images_above_max_pixels_and_non_finite_images_fail(tmp_path, run_privatize):
    src = tmp_path / "scans"
    write_png(src / "small.png", size=20)
    write_png(src / "large.png", size=40)
    Image.fromarray(np.full((20, 20), np.nan, np.float32)).save(src / "nan.tiff")
    partly = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    partly[3, 4] = np.inf
    Image.fromarray(partly).save(src / "inf.tiff")
    counts = run_privatize(src, tmp_path / "out", "max_pixels=1000")
    rows = _assert_manifest_matches_disk(tmp_path / "out")
    assert rows["small.png"]["status"] == "ok" and counts["failed"] == 3
    assert "more than max_pixels=1,000" in rows["large.png"]["error"]
    for name in ("nan.tiff", "inf.tiff"):
        assert rows[name]["status"] == "failed" and "NaN or infinity" in rows[name]["error"]
    with pytest.raises(ValueError, match="max_pixels"):
        run_privatize(src, tmp_path / "out2", "max_pixels=0")


def test_a_rerun_reflects_the_folder_as_it_is_now(tmp_path, run_privatize):
    src = tmp_path / "scans"
    for i in range(3):
        write_png(src / f"scan{i}.png", seed=i)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "notes.txt").write_text("x")
    out = tmp_path / "out"
    assert run_privatize(src, out)["failed"] == 1
    (src / "broken.png").unlink()
    (src / "notes.txt").unlink()
    (src / "scan0.png").unlink()  # released already: its output stays, and so does its row
    write_png(src / "new.png", seed=9)
    counts = run_privatize(src, out)
    assert counts["failed"] == 0 and counts["ok"] == 4 and counts["written_this_run"] == 1
    rows = _assert_manifest_matches_disk(out)
    assert set(rows) == {"scan0.png", "scan1.png", "scan2.png", "new.png"}
    import json

    report = json.loads((out / "privacy_report.json").read_text())
    assert sorted(report["dropped_this_run"]) == ["broken.png", "notes.txt"]
    assert report["counts"]["dropped_this_run"] == 2
