"""Sweeps through Hydra's launcher plugins: joblib (parallel processes) and submitit (SLURM)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import ROOT, run_entry
from dpglow.privacy import GaussianL2


def test_joblib_launcher_sweep_writes_one_release_per_job(tmp_path, data_dir):
    src = tmp_path / "scans"
    src.mkdir()
    for path in sorted((data_dir / "pediatric_pneumonia224" / "images").glob("*.png"))[:3]:
        shutil.copyfile(path, src / path.name)
    sweep = tmp_path / "sweep"
    proc = run_entry(
        "privatize.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "epsilon=1,2",
        "privacy=pixel_laplace",
        "image_size=32",
        f"input_dir={src}",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    for job, epsilon in (("0", 1.0), ("1", 2.0)):
        release = sweep / job / "images"
        report = json.loads((release / "privacy_report.json").read_text())
        assert report["record"]["mechanism"] == "pixel_laplace"
        assert report["record"]["epsilon_per_image"] == epsilon
        assert report["private"] is True and report["counts"]["ok"] == 3
        # The worker resolved the project's own resolvers (${dpglow_root:}, ${dpglow_data_dir:}).
        assert report["config"]["paths"]["root_dir"] == str(ROOT)
        assert report["config"]["output_dir"] == str(release)
        with open(release / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["status"] for r in rows] == ["ok"] * 3
        assert len(list(release.glob("*.png"))) == 3
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()


def test_submitit_launcher_runs_each_job_with_its_own_settings(tmp_path):
    # submitit's local executor: the plugin that also drives SLURM (hydra/launcher=submitit_slurm)
    # pickles the task, starts one worker process per job and collects the results.
    sweep = tmp_path / "sweep"
    proc = run_entry(
        "noise_table.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "delta=1e-6,1e-3",
        "epsilons=[10]",
        f"hydra.sweep.dir={sweep}",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    sigma = {}
    for job, delta in (("0", 1e-6), ("1", 1e-3)):
        table = (sweep / job / "noise_table.md").read_text().splitlines()
        row = next(line for line in table if line.startswith("| gaussian_l2 | all |"))
        sigma[delta] = float(row.rstrip(" |").rsplit("|", 1)[1])
    # Each worker calibrated with its own delta (glow_64: d = 4096 latent elements).
    for delta, value in sigma.items():
        expected = GaussianL2(epsilon=10, delta=delta).record((4096,)).noise_scale
        assert value == pytest.approx(expected, rel=5e-3)  # the table rounds to 3 digits
    assert sigma[1e-6] > sigma[1e-3]
