"""``trainer=ddp``: Lightning DDP on CPU with 2 processes (gloo), end to end on real X-rays."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

from conftest import run_entry, tiny_overrides
from dpglow.data.datamodule import EpochSeededSampler

HERE = Path(__file__).resolve().parent


def _train_ddp(tmp_path, run, *extra):
    proc = run_entry(
        "train.py",
        *tiny_overrides(tmp_path),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data=pediatric",
        "test=false",
        "+callbacks.ddp_probe._target_=ddp_probe.DDPProbe",
        f"+callbacks.ddp_probe.out_dir={run}",
        f"hydra.run.dir={run}",
        *extra,
        env={"PYTHONPATH": str(HERE)},  # the probe, in every rank Lightning launches
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((run / f"probe_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow  # a multi-process run (tens of seconds): the full suite runs it
def test_ddp_two_cpu_processes_agree_after_the_first_step(tmp_path):
    run = tmp_path / "run"
    probes = _train_ddp(tmp_path, run, "trainer.max_epochs=2")
    for probe in probes:
        assert probe["world_size"] == 2
        assert probe["actnorm_initialized"] is True
        gathered = torch.tensor(probe["gathered_checksums"])
        assert gathered.shape[0] == 2 and torch.equal(gathered[0], gathered[1])
    # Each rank initialised ActNorm from the same images to the same values, and after the first
    # step (gradients all-reduced) every parameter and buffer is identical on both ranks.
    assert probes[0]["actnorm_init"] == probes[1]["actnorm_init"]
    assert probes[0]["after_step1"] == probes[1]["after_step1"]
    assert probes[0]["actnorm_init"] != probes[0]["after_step1"]
    # Disjoint shares of each epoch, reshuffled between epochs.
    for epoch in ("0", "1"):
        first, second = (set(p["batches"][epoch]) for p in probes)
        assert first and second and not first & second
    assert probes[0]["batches"]["0"] != probes[0]["batches"]["1"]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4

    # Each rank draws its own dequantisation noise; the checkpoint keeps every rank's generator
    # and a resumed DDP run continues each rank's own.
    assert probes[0]["noise_state_at_start"] != probes[1]["noise_state_at_start"]
    ckpt = run / "checkpoints" / "last.ckpt"
    states = torch.load(ckpt, map_location="cpu", weights_only=True)["dpglow"]["noise_states"]
    assert states.shape[0] == 2 and not torch.equal(states[0], states[1])
    resumed = _train_ddp(
        tmp_path, tmp_path / "resumed", "trainer.max_epochs=3", f"resume_from={ckpt}"
    )
    for rank, probe in enumerate(resumed):
        assert probe["noise_state_at_start"] == hashlib.sha256(states[rank].numpy()).hexdigest()
        assert list(probe["batches"]) == ["2"]


def test_distributed_sampler_keeps_the_epoch_seeded_order():
    """What Lightning does with our sampler under DDP: it wraps it in a DistributedSamplerWrapper
    and forwards set_epoch, so rank r reads every world_size-th index of the (seed, epoch)
    permutation: disjoint, complete, reproducible and different each epoch."""

    def shares(epoch: int) -> list[list[int]]:
        out = []
        for rank in range(2):
            sampler = DistributedSamplerWrapper(
                EpochSeededSampler(10, seed=7), num_replicas=2, rank=rank, shuffle=False
            )
            sampler.set_epoch(epoch)
            out.append(list(sampler))
        return out

    for epoch in (0, 1):
        a, b = shares(epoch)
        inner = EpochSeededSampler(10, seed=7)
        inner.set_epoch(epoch)
        order = list(inner)
        assert a == order[0::2] and b == order[1::2]
        assert sorted(a + b) == list(range(10))
        assert shares(epoch) == [a, b]
    assert shares(0) != shares(1)
