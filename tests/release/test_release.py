"""A release folder keeps its promises: the report comes before the first image, the folders
never overlap, only this tool's temporaries are deleted, files follow the umask, and a failure
while finishing loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from dpglow.release import task as pipeline
from dpglow.release import writer as predict
from dpglow.release.files import check_folders, collision_key
from dpglow.release.report import SettingsMismatchError, UnrecordedOutputsError
from release.conftest import read_manifest, write_png


@pytest.fixture
def scans(tmp_path):
    src = tmp_path / "scans"
    for i in range(10):
        write_png(src / ("ward" if i % 2 else ".") / f"scan{i}.png", seed=i)
    return src


class Killed(BaseException):
    """Stands in for kill -9 in this process (the command-line test uses a real one); not an
    Exception, so the writer does not report it as one file's failure."""


def _kill_after(monkeypatch, n: int) -> None:
    real, written = predict.atomic_write_png, []

    def write(path, image, *, run_token):
        if len(written) == n:
            raise Killed
        real(path, image, run_token=run_token)
        written.append(path)

    monkeypatch.setattr(predict, "atomic_write_png", write)


def _report(out):
    return json.loads((out / "privacy_report.json").read_text())


def test_settings_and_record_are_written_before_the_first_image(
    scans, tmp_path, run_privatize, monkeypatch
):
    out, seen = tmp_path / "release", []
    real = predict.atomic_write_png

    def write(path, image, *, run_token):
        seen.append(_report(out))  # what a kill right now would leave
        real(path, image, run_token=run_token)

    monkeypatch.setattr(predict, "atomic_write_png", write)
    run_privatize(scans, out, "epsilon=1000")
    assert len(seen) == 10
    for report in seen:
        assert report["status"] == "running"
        assert report["record"]["epsilon_per_image"] == 1000.0
        assert report["settings"]["privacy"]["mechanism"]["epsilon"] == 1000.0
    final = _report(out)
    assert final["status"] == "complete" and final["record"] == seen[0]["record"]
    assert final["counts"]["ok"] == 10


def test_a_killed_run_cannot_be_resumed_with_other_settings(
    scans, tmp_path, run_privatize, monkeypatch
):
    out = tmp_path / "release"
    _kill_after(monkeypatch, 4)
    with pytest.raises(Killed):
        run_privatize(scans, out, "epsilon=1000")
    monkeypatch.undo()
    assert len(list(out.rglob("*.png"))) == 4 and not (out / "manifest.csv").exists()
    assert _report(out)["record"]["epsilon_per_image"] == 1000.0  # the images say how
    with pytest.raises(SettingsMismatchError, match="other settings"):
        run_privatize(scans, out, "epsilon=5")
    assert len(list(out.rglob("*.png"))) == 4  # nothing was written under epsilon=5

    counts = run_privatize(scans, out, "epsilon=1000")
    assert counts["ok"] == 10 and counts["written_this_run"] == 6
    report = _report(out)
    assert report["record"]["epsilon_per_image"] == 1000.0 and len(report["runs"]) == 2
    assert not list(out.rglob(".dpglow-*"))  # temporaries and row files all gone


def test_a_folder_with_outputs_and_no_report_is_refused(scans, tmp_path, run_privatize):
    made = tmp_path / "made"
    run_privatize(scans, made)
    bare = tmp_path / "bare"
    shutil.copytree(made, bare)
    (bare / "privacy_report.json").unlink()  # as an older dpglow killed early would leave it
    before = sorted(bare.rglob("*"))
    with pytest.raises(UnrecordedOutputsError, match=r"no privacy_report\.json"):
        run_privatize(scans, bare)
    assert sorted(bare.rglob("*")) == before
    (tmp_path / "empty").mkdir()
    assert run_privatize(scans, tmp_path / "empty")["ok"] == 10  # an empty folder is fine


def test_the_folders_may_not_overlap_either_way(tmp_path, run_privatize):
    out = tmp_path / "out"
    src = out / "in"
    write_png(src / "scan.png")
    (src / ".scan.tmp").write_text("a user's file")
    for a, b in ((src, out), (out, src), (src, src)):
        with pytest.raises(ValueError, match="inside"):
            check_folders(a, b)
    os.symlink(out, tmp_path / "link")  # the same folders through a symbolic link
    with pytest.raises(ValueError, match="inside output_dir"):
        check_folders(src, tmp_path / "link")
    with pytest.raises(ValueError, match="inside output_dir"):
        run_privatize(src, out)
    assert sorted(p.name for p in src.iterdir()) == [".scan.tmp", "scan.png"]
    assert not (out / "privacy_report.json").exists()


def test_only_this_tools_temporaries_are_deleted(scans, tmp_path, run_privatize, monkeypatch):
    out = tmp_path / "release"
    _kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        run_privatize(scans, out)
    monkeypatch.undo()
    token = _report(out)["runs"][0]["token"]
    ours = out / "ward" / f".dpglow-{token}-0123abcd.tmp"  # a partial file of the killed run
    ours.parent.mkdir(exist_ok=True)
    ours.write_bytes(b"partial")
    users = [
        out / ".scan.tmp",
        out / ".scan.png.x8k2.tmp",
        out / ".dpglow-0000000000000000-0123abcd.tmp",
    ]
    for path in users:
        path.write_text("not dpglow's")
    run_privatize(scans, out)
    assert not ours.exists()
    assert all(p.read_text() == "not dpglow's" for p in users)


def test_files_follow_the_umask(scans, tmp_path, run_privatize):
    old = os.umask(0o027)
    try:
        run_privatize(scans, tmp_path / "release")
    finally:
        os.umask(old)
    out = tmp_path / "release"
    for name in ("manifest.csv", "privacy_report.json", "scan0.png", "ward/scan1.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE((out / "ward").stat().st_mode) == 0o750


def test_a_failure_while_finishing_loses_no_row(scans, tmp_path, run_privatize, monkeypatch):
    out = tmp_path / "release"
    write_png(scans / os.fsdecode(b"r\xe9sum\xe9.png"))  # Latin-1: not UTF-8

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_manifest", full_disk)
    with pytest.raises(OSError, match="No space"):
        run_privatize(scans, out)
    monkeypatch.undo()
    assert len(list(out.glob(".dpglow-*-rows0.jsonl"))) == 1  # this run's rows, kept
    counts = run_privatize(scans, out)
    assert counts["ok"] == 11 and counts["written_this_run"] == 0
    rows = read_manifest(out)
    assert len(rows) == 11 and {r["status"] for r in rows.values()} == {"ok"}
    assert not list(out.glob(".dpglow-*"))
    assert len({collision_key(r["output"]) for r in rows.values()}) == 11
