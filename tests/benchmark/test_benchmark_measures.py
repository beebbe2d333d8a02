"""The benchmark's measuring parts on fakes with known answers: timing, rates, memory, batch
search, combining processes (no wall-clock assertions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dpglow.benchmark import TIMINGS, combine_processes, largest_batch, timed
from dpglow.benchmark.timing import rates
from dpglow.utils.memory import peak_rss_mb


def test_timed_runs_warmup_then_synced_repeats_and_takes_the_median():
    events = []
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # three timed calls of 3, 1 and 2 s

    def clock():
        events.append("clock")
        return next(ticks)

    result = timed(
        lambda: events.append("fn"),
        warmup=2,
        repeats=3,
        sync=lambda: events.append("sync"),
        clock=clock,
    )
    assert result == {"median": 2.0, "min": 1.0, "max": 3.0}
    # Warmup calls untimed; each timed call between a sync and the clock on both sides.
    assert events == ["fn", "fn", *["sync", "clock", "fn", "sync", "clock"] * 3]


@pytest.mark.parametrize(("warmup", "repeats"), [(-1, 3), (0, 0)])
def test_timed_refuses_impossible_counts(warmup, repeats):
    with pytest.raises(ValueError, match="repeats >= 1"):
        timed(lambda: None, warmup=warmup, repeats=repeats, sync=lambda: None)


def test_rates_from_median_seconds():
    median = {"train_step": 0.5, "encode": 0.25, "decode": 0.75, "privatize": 3.0}
    assert rates(median, 6) == {
        "train_steps_per_s": 2.0,
        "encode_img_per_s": 24.0,
        "decode_img_per_s": 8.0,
        "privatize_img_per_s": 2.0,
        "privatize_s_per_img": 0.5,
        "privatize_over_encode_decode": 3.0,
    }


def test_largest_batch_doubles_until_memory_runs_out():
    tried = []

    def fits(batch):
        tried.append(batch)
        if batch > 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    assert largest_batch(fits, start=4, limit=1024) == 32
    assert tried == [4, 8, 16, 32, 64]
    assert largest_batch(fits, start=3, limit=1024) == 48  # 3 * 2**4; 96 does not fit
    assert largest_batch(fits, start=4, limit=16) == 16  # the limit stops the search
    with pytest.raises(RuntimeError, match="does not fit"):
        largest_batch(fits, start=64, limit=1024)


def test_largest_batch_takes_out_of_memory_runtime_errors_and_nothing_else():
    def cudnn(batch):  # some kernels report memory as a plain RuntimeError
        if batch > 8:
            raise RuntimeError("cuDNN error: out of memory")

    assert largest_batch(cudnn, start=2, limit=64) == 8

    def broken(batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):  # not a memory error: not swallowed
        largest_batch(broken, start=4, limit=1024)
    with pytest.raises(ValueError, match="start"):  # would double 0 forever
        largest_batch(cudnn, start=0, limit=64)
    with pytest.raises(ValueError, match="limit"):
        largest_batch(cudnn, start=8, limit=4)


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_peak_rss_grows_with_a_known_allocation():
    before = peak_rss_mb()
    rss = _current_rss_mb()
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, every page written
    after = peak_rss_mb()
    assert block.nbytes == 256 * 2**20
    # The peak holds at least what is resident now, in MiB (KiB would be 1024 times more).
    assert rss + 250 <= after <= max(before, rss + 256) + 64


def _process_row(train_step, rss, cuda=None):
    row = {"model": "m", "batch": 4, "peak_rss_mb": rss, "heldout_bpd": 3.9}
    for name in TIMINGS:
        t = train_step if name == "train_step" else 2 * train_step
        row |= {f"{name}_s": t, f"{name}_s_min": t - 1, f"{name}_s_max": t + 1}
    if cuda is not None:
        row["cuda_max_allocated_mb"] = cuda
    return row


def test_processes_combine_into_median_and_overall_spread():
    rows = [_process_row(10.0, 100.0, 7.0), _process_row(30.0, 300.0, 5.0)]
    out = combine_processes([*rows, _process_row(12.0, 200.0, 9.0)])
    assert out["train_step_s"] == 12.0 and out["privatize_s"] == 24.0  # median of the medians
    assert (out["encode_s_min"], out["encode_s_max"]) == (19.0, 61.0)
    assert (out["train_step_s_min"], out["train_step_s_max"]) == (9.0, 31.0)
    assert out["train_steps_per_s"] == round(1 / 12.0, 3)
    assert out["encode_img_per_s"] == round(4 / 24.0, 2)
    assert out["privatize_over_encode_decode"] == 0.5
    assert (out["peak_rss_mb"], out["cuda_max_allocated_mb"]) == (300.0, 9.0)
    assert out["processes"] == 3
    assert out["train_step_s_per_process"] == "10 / 30 / 12"
    assert out["privatize_s_per_process"] == "20 / 60 / 24"
    assert out["heldout_bpd"] == 3.9 and out["model"] == "m"  # from the first row
