"""Evaluation over several processes (Lightning DDP, gloo on CPU) equals one process."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_entry
from dpglow.evaluation.shards import FixedBatches, merge_shards
from evaluation.conftest import DATA


def _eval(models, out, *extra, multirun=False):
    return run_entry(
        "evaluate.py",
        *(["-m"] if multirun else []),  # Hydra's flags come before the overrides
        *DATA,
        f"paths.log_dir={models['log_dir']}",
        f"paths.cache_dir={models['cache']}",
        "eval.batch_size=8",  # the 36 test images: 5 fixed batches, 3 on rank 0, 2 on rank 1
        "eval.cache=false",
        "noise_seed=0",
        "epsilon=300",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={out}",
        *extra,
        timeout=400,
    )


def _same(a, b) -> bool:
    """Equal; floats up to rounding in the 9th digit (a CPU rank runs with fewer threads, and the
    classifier's convolutions may then sum in another order: seen in the Frechet distance)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


@pytest.mark.slow  # a multi-process run (tens of seconds): the full suite runs it
def test_two_processes_give_the_single_process_row(eval_models, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _eval(eval_models, one)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _eval(eval_models, two, "trainer.devices=2", "trainer.strategy=ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    logs = ddp.stdout + ddp.stderr
    assert "MEMBER: 2/2" in logs and "2 process(es)" in logs

    rows = [json.loads((d / "row.json").read_text()) for d in (one, two)]
    assert rows[0]["n_images"] == 36 and rows[0]["private"] is False
    assert rows[0].keys() == rows[1].keys()
    differ = {k: (rows[0][k], rows[1][k]) for k in rows[0] if not _same(rows[0][k], rows[1][k])}
    assert not differ
    # The same released images, and one merged row: no rank's outputs are left behind.
    assert (one / "samples.png").read_bytes() == (two / "samples.png").read_bytes()
    assert not (two / ".eval-shards").exists()
    assert len(list(two.rglob("row.json"))) == 1


def test_merge_needs_every_batch_exactly_once(tmp_path):
    batches = FixedBatches(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), None, 4)
    assert len(batches) == 3 and len(batches[2]["images"]) == 2

    def out(k):
        return {"index": k, "released": torch.full((1, 1, 2, 2), k)}

    torch.save([out(0), out(2)], tmp_path / "rank0.pt")
    torch.save([out(1)], tmp_path / "rank1.pt")
    merged = merge_shards(tmp_path, 2, 3)
    assert merged["released"].flatten(1)[:, 0].tolist() == [0, 1, 2]  # batch order
    with pytest.raises(RuntimeError, match="missing"):
        merge_shards(tmp_path, 2, 4)
    torch.save([out(1), out(2)], tmp_path / "rank1.pt")
    with pytest.raises(RuntimeError, match="twice"):
        merge_shards(tmp_path, 2, 3)
    torch.save([out(1)], tmp_path / "rank1.pt")
    with pytest.raises(RuntimeError, match="rank 2 left no outputs"):
        merge_shards(tmp_path, 3, 3)


def test_a_multirun_job_is_not_relaunched_on_extra_devices(eval_models, tmp_path):
    result = _eval(
        eval_models, tmp_path / "run", "trainer.devices=2", "trainer.strategy=ddp",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "hydra/launcher=submitit_slurm" in result.stderr
    assert "MEMBER: 2/2" not in result.stdout + result.stderr
