"""Sweeps through Hydra's launcher plugins: joblib (parallel processes) and submitit (SLURM)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, ROOT, run_entry


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


@pytest.mark.parametrize("config_name", ["train", "privatize"])
def test_submitit_slurm_launcher_composes(config_name):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose(
                config_name=config_name,
                return_hydra_config=True,
                overrides=[
                    "hydra/launcher=submitit_slurm",
                    "hydra.launcher.gpus_per_node=4",
                    "hydra.launcher.tasks_per_node=4",
                ],
            )
    finally:
        GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4
