"""`python src/privatize.py ...` end to end on real X-rays with odd and corrupt files."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, compose_run, run_entry
from dpglow.flow import CheckpointError, load_flow
from dpglow.release.task import SettingsMismatchError, privatize
from release.conftest import write_dicom


def _manifest(out):
    with open(out / "manifest.csv", newline="") as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


def _args(ckpt, src, out, *extra):
    return [
        f"flow.ckpt_path={ckpt}",
        f"input_dir={src}",
        f"output_dir={out}",
        "batch_size=4",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out.parent / 'logs'}",
        *extra,
    ]


def test_privatize_command_end_to_end(trained_ckpt, input_folder, tmp_path):
    pixels = np.asarray(Image.open(next((input_folder / "ward_a").glob("*.png"))).convert("L"))
    write_dicom(input_folder / "ward_b" / "scan.dcm", pixels)
    out = tmp_path / "release"
    proc = run_entry(
        "privatize.py",
        *_args(
            trained_ckpt, input_folder, out, "privacy=laplace_l1", "epsilon=1", "dicom_output=true"
        ),
    )
    # Two corrupt inputs: the run finishes the rest, then exits non-zero.
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = _manifest(out)
    failed = {k for k, r in rows.items() if r["status"] == "failed"}
    assert failed == {"ward_a/broken.png", "notes.png"}
    assert all(rows[k]["error"] for k in failed)
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert len(ok) == 6 + 5  # 6 PNGs, colour.jpg, sixteen.png, twin.png, twin.jpg, scan.dcm
    assert (
        rows["README.txt"]["status"] == "skipped" and "not an image" in rows["README.txt"]["error"]
    )
    assert len(rows) == len([p for p in input_folder.rglob("*") if p.is_file()])
    assert rows["ward_a/twin.jpg"]["output"] == "ward_a/twin.jpg.png"
    assert rows["ward_a/twin.png"]["output"] == "ward_a/twin.png"
    assert rows["ward_b/scan.dcm"]["output"] == "ward_b/scan.png"
    for row in ok.values():
        img = Image.open(out / row["output"])
        assert img.mode == "L" and img.size == (32, 32)
    assert not list(input_folder.rglob("*.tmp")) and not (input_folder / "manifest.csv").exists()

    umask = os.umask(0)
    os.umask(umask)
    for path in (out / "manifest.csv", out / "privacy_report.json", out / "ward_b" / "scan.dcm"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path

    report = json.loads((out / "privacy_report.json").read_text())
    assert report["status"] == "complete"
    record = report["record"]
    assert record["mechanism"] == "laplace_l1" and record["epsilon_per_image"] == 1.0
    assert record["d"] == 32 * 32 and record["noise_source"] == "os_entropy"
    assert report["private"] is True
    assert report["checkpoint"]["sha256"] and report["counts"]["failed"] == 2

    import pydicom

    ds = pydicom.dcmread(out / "ward_b" / "scan.dcm")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "StudyDate"):
        assert ds.get(keyword) in (None, "", "ANONYMIZED", "00010101"), keyword
    data = (out / "ward_b" / "scan.dcm").read_bytes()
    for value in (b"Doe^Jane", b"HOSP-12345", b"19700101", b"General Hospital", b"20240102"):
        assert value not in data
    assert ds.PatientIdentityRemoved == "YES" and ds.Modality == "DX"
    assert not any(elem.tag.is_private for elem in ds)
    assert ds.pixel_array.shape == (32, 32)
    png = np.asarray(Image.open(out / "ward_b" / "scan.png"))
    assert np.array_equal(ds.pixel_array, png)

    # A re-run resumes: nothing finished is redone, the failures are tried again.
    mtimes = {k: (out / r["output"]).stat().st_mtime_ns for k, r in ok.items()}
    again = run_entry(
        "privatize.py",
        *_args(
            trained_ckpt, input_folder, out, "privacy=laplace_l1", "epsilon=1", "dicom_output=true"
        ),
    )
    assert again.returncode == 1
    assert json.loads((out / "privacy_report.json").read_text())["counts"]["written_this_run"] == 0
    assert {k: (out / r["output"]).stat().st_mtime_ns for k, r in ok.items()} == mtimes

    # Other settings into the same folder are refused: one folder, one release.
    other = run_entry(
        "privatize.py", *_args(trained_ckpt, input_folder, out, "privacy=laplace_l1", "epsilon=5")
    )
    assert other.returncode != 0 and "other settings" in other.stderr


def _privatize_here(ckpt, src, out, *extra):
    """What ``python src/privatize.py <_args>`` runs, in this process."""
    overrides = [a for a in _args(ckpt, src, out, *extra) if not a.startswith("hydra.")]
    return privatize(compose_run("privatize", overrides, out.parent / "logs"))


def test_refuses_output_inside_input(trained_ckpt, input_folder):
    with pytest.raises(ValueError, match="inside input_dir"):
        _privatize_here(trained_ckpt, input_folder, input_folder / "private")
    assert not (input_folder / "private").exists()


def test_deprecated_ckpt_path_maps_to_flow_ckpt_path(trained_ckpt, tmp_path, data_dir, caplog):
    src = tmp_path / "few"
    src.mkdir()
    for path in sorted((data_dir / "pediatric_pneumonia224" / "images").glob("*.png"))[:2]:
        os.symlink(path, src / path.name)

    def compose(name: str, *overrides: str):
        return compose_run(
            "privatize",
            [
                f"input_dir={src}",
                f"output_dir={tmp_path / name}",
                "privacy=laplace_l1",
                "noise_seed=0",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
            tmp_path / f"{name}_run",
        )

    cfg = compose("old", f"ckpt_path={trained_ckpt}")
    with caplog.at_level(logging.WARNING, logger="dpglow"):
        counts, objects = privatize(cfg)
    assert counts["ok"] == 2
    assert cfg.flow.ckpt_path == str(trained_ckpt) and cfg.ckpt_path is None
    sha256 = load_flow(trained_ckpt)[1]["sha256"]
    assert objects["report"]["settings"]["checkpoint_sha256"] == sha256
    assert any(
        "ckpt_path= is deprecated" in r.message and "flow.ckpt_path=" in r.message
        for r in caplog.records
    )
    # Both spellings naming different checkpoints: refused before anything is written.
    both = compose("both", f"ckpt_path={trained_ckpt}", "flow.ckpt_path=other.ckpt")
    with pytest.raises(ValueError, match=r"deprecated spelling of flow\.ckpt_path="):
        privatize(both)
    assert not (tmp_path / "both").exists()


# ``python -c KILL_AFTER_20 src/privatize.py args...``: privatize.py with its PNG writer wrapped so
# that the process SIGKILLs itself after the 20th file (a hard kill at a fixed point).
KILL_AFTER_20 = """
import os, runpy, signal, sys
import dpglow.release.writer as writer
real, count = writer.atomic_write_png, [0]
def write(path, image, *, run_token):
    real(path, image, run_token=run_token)
    count[0] += 1
    if count[0] == 20:
        os.kill(os.getpid(), signal.SIGKILL)
writer.atomic_write_png = write
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_killed_run_resumes_to_complete_valid_outputs(trained_ckpt, tmp_path, data_dir):
    src = tmp_path / "many"
    src.mkdir()
    for path in sorted((data_dir / "pediatric_pneumonia224" / "images").glob("*.png"))[:160]:
        os.symlink(path, src / path.name)
    out = tmp_path / "release"
    args = _args(trained_ckpt, src, out, "privacy=laplace_l1", "epsilon=2", "batch_size=1")
    # The real command, killed by SIGKILL from inside right after its 20th image is written (no
    # clock: the same point every time).
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_20, str(ROOT / "src" / "privatize.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    written = len(list(out.glob("*.png")))
    assert written == 20
    # The report was written before the first image: it says how the images were made...
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["status"] == "running" and report["record"]["epsilon_per_image"] == 2.0
    # ... so a resume with another epsilon is refused, and writes nothing (in this process: a
    # third command would only add its start-up time).
    other = [a for a in args if a != "epsilon=2" and not a.startswith("hydra.")] + ["epsilon=5"]
    with pytest.raises(SettingsMismatchError, match="other settings"):
        privatize(compose_run("privatize", other, tmp_path / "other"))
    assert len(list(out.glob("*.png"))) == written
    resumed = run_entry("privatize.py", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    outputs = sorted(out.glob("*.png"))
    assert len(outputs) == 160
    for path in outputs:
        with Image.open(path) as img:
            img.load()  # raises on a truncated file
            assert img.size == (32, 32)
    assert not list(out.glob(".*.tmp"))
    rows = _manifest(out)
    assert len(rows) == 160 and {r["status"] for r in rows.values()} == {"ok"}
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["status"] == "complete" and report["record"]["epsilon_per_image"] == 2.0
    assert report["settings"]["privacy"]["mechanism"]["epsilon"] == 2.0


def test_untrusted_checkpoints_are_refused(trained_ckpt, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "dpglow": {"net_config": {}}, "x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="pickled"):
        load_flow(evil)
    with pytest.raises(CheckpointError, match="does not match"):
        load_flow(trained_ckpt, expected={"image_size": 64, "depth": 2})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_flow(tmp_path / "missing.ckpt")


def test_architecture_mismatch_via_the_model_override(trained_ckpt, input_folder, tmp_path):
    with pytest.raises(CheckpointError, match="does not match the configured model"):
        _privatize_here(trained_ckpt, input_folder, tmp_path / "out", "model=glow_64")
    assert not (tmp_path / "out").exists()


def test_sweep_over_epsilon_and_an_image_baseline(trained_ckpt, tmp_path, data_dir):
    src = tmp_path / "few"
    src.mkdir()
    for path in sorted((data_dir / "pediatric_pneumonia224" / "images").glob("*.png"))[:4]:
        os.symlink(path, src / path.name)
    sweep = tmp_path / "sweep"
    proc = run_entry(
        "privatize.py", "-m", f"flow.ckpt_path={trained_ckpt}", f"input_dir={src}",
        "privacy=laplace_elementwise,dp_pix", "epsilon=1,inf", "noise_seed=0",
        "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [
        json.loads(p.read_text()) for p in sorted(sweep.glob("*/images/privacy_report.json"))
    ]
    assert len(reports) == 4
    seen = {(r["record"]["mechanism"], r["record"]["epsilon_per_image"]) for r in reports}
    assert seen == {
        ("laplace_elementwise", 1.0), ("laplace_elementwise", float("inf")),
        ("dp_pix", 1.0), ("dp_pix", float("inf")),
    }  # fmt: skip
    for report in reports:
        assert report["private"] is False  # noise_seed: reproducible, hence not private
        assert report["counts"]["ok"] == 4
        assert report["record"]["d"] == (
            32 * 32 if report["record"]["mechanism"] != "dp_pix" else 64
        )
