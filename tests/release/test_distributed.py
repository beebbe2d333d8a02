"""Privatization over several processes (Lightning DDP, gloo on CPU) equals one process."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import run_entry
from dpglow.privatizers import Privatizer, public_record
from dpglow.privatizers.predict_module import PrivatizeModule, image_noise_seed
from dpglow.release.inputs import InputImages
from dpglow.release.task import image_noise_keys


@pytest.fixture
def small_folder(tmp_path, data_dir):
    src = tmp_path / "scans"
    images = sorted((data_dir / "pediatric_pneumonia224" / "images").glob("*.png"))[:9]
    for i, path in enumerate(images):
        folder = src / ("a" if i < 5 else "b/deep")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)
    (src / "a" / "broken.png").write_bytes(images[0].read_bytes()[:200])
    return src


def _run(ckpt, src, out, *extra):
    return run_entry(
        "privatize.py",
        f"flow.ckpt_path={ckpt}",
        f"input_dir={src}",
        f"output_dir={out}",
        "privacy=laplace_l1",
        "epsilon=2",
        "noise_seed=3",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out.parent / (out.name + '_logs')}",
        *extra,
        timeout=240,
    )


@pytest.mark.slow  # a multi-process run (tens of seconds): the full suite runs it
def test_two_processes_give_the_single_process_release(trained_ckpt, small_folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run(trained_ckpt, small_folder, one, "batch_size=4")
    assert single.returncode == 1, single.stderr[-3000:]  # broken.png is reported, not fatal
    ddp = _run(
        trained_ckpt,
        small_folder,
        two,
        "batch_size=3",  # other batches too: the seeded noise is per image
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    assert ddp.returncode == 1, ddp.stderr[-3000:]
    assert "Starting with 2 processes" in ddp.stderr + ddp.stdout

    outputs = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(outputs) == 9
    assert outputs == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    for rel in outputs:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    manifest = (one / "manifest.csv").read_text()
    assert manifest == (two / "manifest.csv").read_text()
    assert "a/broken.png" in manifest and manifest.count("\n") == 1 + 10
    assert not list(two.glob(".dpglow-*"))  # the ranks' row files are merged and removed
    reports = [json.loads((d / "privacy_report.json").read_text()) for d in (one, two)]
    for report in reports:
        assert report["counts"] == {
            "ok": 9, "failed": 1, "skipped": 0, "written_this_run": 9, "dropped_this_run": 0,
        }  # fmt: skip
        assert report["status"] == "complete" and len(report["runs"]) == 1
        assert report["private"] is False
        assert report["record"]["noise_source"] == "seeded (NOT PRIVATE)"
    assert reports[0]["settings"] == reports[1]["settings"]


def test_shards_are_disjoint_and_complete(small_folder, tmp_path):
    """(rank, world size) x DataLoader workers: every file is read by exactly one worker."""
    everything = InputImages(small_folder, tmp_path / "out", image_size=8, dicom_output=False)
    expected = sorted(item["input"] for item in everything)
    for workers in (0, 2):
        seen = []
        for rank in range(2):
            shard = InputImages(
                small_folder, tmp_path / "out", image_size=8, dicom_output=False,
                rank=rank, world_size=2,
            )  # fmt: skip
            loader = DataLoader(shard, batch_size=None, num_workers=workers)
            seen.append([item["input"] for item in loader])
        assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == expected
    with pytest.raises(ValueError, match="rank"):
        InputImages(small_folder, tmp_path, image_size=8, dicom_output=False, rank=2, world_size=2)


def test_seeded_noise_is_per_image_and_unseeded_is_batched():
    calls = []

    class Recorder(Privatizer):
        name = "recorder"

        def record(self, *, noise_source="os_entropy"):
            return public_record("recorder", noise_source=noise_source)

        def describe(self):
            return {"mechanism": self.name}

        def __call__(self, images, *, generator, noise_source, names=None):
            calls.append(len(images))
            return images + torch.rand(images.shape, generator=generator)

    privatizer = Recorder()

    batch = {
        "images": torch.zeros(3, 1, 2, 2),
        "ok": [{"path": f"/x/{k}", "input": k, "output": k} for k in ("a", "b", "c")],
        "failed": [],
    }
    seeded = PrivatizeModule(privatizer, noise_seed=5, noise_keys=image_noise_keys)
    seeded.on_predict_start()
    full = seeded.predict_step(batch, 0)["released"]
    assert calls == [1, 1, 1]
    alone = {**batch, "images": batch["images"][1:2], "ok": batch["ok"][1:2]}
    assert torch.equal(seeded.predict_step(alone, 0)["released"][0], full[1])
    assert image_noise_seed(5, "a") != image_noise_seed(5, "b") != image_noise_seed(6, "b")

    calls.clear()
    private = PrivatizeModule(privatizer, noise_keys=image_noise_keys)
    private.on_predict_start()
    private.predict_step(batch, 0)
    assert calls == [3] and private.noise_source == "os_entropy"
