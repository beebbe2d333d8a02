"""`python src/train.py ...` as a user runs it (a subprocess: the CLI, a multirun, W&B, the
no-data message), and every data module through the same train(cfg) in this process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY_MODEL, compose_run, run_entry
from dpglow.data import DatasetNotFoundError
from dpglow.training.task import train

FAST = [*TINY_MODEL, "debug=fast_dev_run", "data.batch_size=4", "trainer.enable_progress_bar=false"]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def _check_ok(proc, run_dir: Path) -> dict:
    if proc is not None:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 1
    assert {"train/bpd", "val/bpd", "test/bpd"} <= set(summary["metrics"])
    return summary


def _train_here(tmp_path: Path, *extra: str) -> None:
    """What ``python src/train.py <FAST> <extra>`` runs, in this process."""
    overrides = [*FAST, f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    train(compose_run("train", overrides, tmp_path / "run"))


def test_fast_dev_run_from_the_command_line(tmp_path, data_dir):
    proc = run_entry("train.py", *_args(tmp_path, "data=pediatric", "data.max_images=60"))
    _check_ok(proc, tmp_path / "run")
    assert (tmp_path / "run" / "splits.csv").is_file()


def test_fast_dev_run_nih(tmp_path, data_dir):
    _train_here(tmp_path, "data=nih", "data.max_images=60")
    _check_ok(None, tmp_path / "run")
    assert (tmp_path / "run" / "splits.csv").is_file()


def test_fast_dev_run_chexpert(tmp_path, tiny_chexpert):
    _train_here(tmp_path, "data=chexpert", f"data.root={tiny_chexpert}", "data.val_fraction=0.2")
    _check_ok(None, tmp_path / "run")


def test_fast_dev_run_folder(tmp_path, gray_images):
    folder = tmp_path / "my_xrays" / "nested"
    folder.mkdir(parents=True)
    for src in gray_images[:12]:
        shutil.copyfile(src, folder / src.name)
    _train_here(tmp_path, "data=folder", f"data.root={folder.parent}")
    _check_ok(None, tmp_path / "run")


@pytest.mark.parametrize("flag", ["chestmnist", "pneumoniamnist"])
def test_fast_dev_run_medmnist_offline(tmp_path, flag, medmnist_root):
    _train_here(
        tmp_path,
        f"data={flag}",
        f"data.root={medmnist_root}",
        "model.net.image_size=64",
        "model.net.num_levels=2",
    )
    _check_ok(None, tmp_path / "run")


def test_multirun_sweeps_depth(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = run_entry(
        "train.py",
        "-m",
        *[a for a in FAST if not a.startswith("model.net.depth")],
        "data=nih",
        "data.max_images=40",
        "model.net.depth=1,2",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, depth in (("0", 1), ("1", 2)):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["global_step"] == 1
        overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert f"model.net.depth={depth}" in overrides


def test_missing_dataset_root_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        _train_here(tmp_path, "data=nih", f"data.root={tmp_path / 'nowhere'}")
    message = str(err.value)
    assert "nowhere" in message
    assert "data.root=" in message and "DPGLOW_DATA_DIR" in message and "chestmnist" in message


def test_no_data_dir_anywhere_says_what_to_do(tmp_path):
    # A copy of the entry point and configs, away from ../shared/data, with no env var.
    proc = run_entry(
        "train.py", *_args(tmp_path, "paths.data_dir='<no-data-dir>'"), env={"DPGLOW_DATA_DIR": ""}
    )
    assert proc.returncode != 0
    assert "DPGLOW_DATA_DIR" in proc.stderr + proc.stdout


def test_wandb_logger_runs_offline(tmp_path, data_dir):
    # Not fast_dev_run: Lightning swaps loggers for a dummy in that mode.
    short = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
    ]
    proc = run_entry(
        "train.py",
        *[
            a
            for a in _args(tmp_path, "data=nih", "data.max_images=40", "logger=wandb")
            if "debug=" not in a
        ],
        *short,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline W&B run"
    assert list((runs[0] / "files" / "media" / "images" / "val").glob("samples_*.png"))
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/bpd", b"val/bpd", b"lr-Adam", b"hidden_channels"):
        assert key in record, key


def test_train_refiner_without_a_trained_flow_says_what_to_run(tmp_path, data_dir):
    proc = run_entry(
        "train_refiner.py", f"paths.log_dir={tmp_path / 'outputs'}", f"hydra.run.dir={tmp_path}/r"
    )
    assert proc.returncode != 0
    assert "python src/train.py" in proc.stderr and "flow.ckpt_path=" in proc.stderr
    proc = run_entry(
        "train_refiner.py",
        f"flow.ckpt_path={tmp_path / 'missing.ckpt'}",
        f"hydra.run.dir={tmp_path}/r",
    )
    assert proc.returncode != 0 and "missing.ckpt" in proc.stderr
