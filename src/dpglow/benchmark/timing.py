"""Repeated timing of one operation, and the rates the benchmark reports from median seconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

# What is timed: a training step, and encode, decode, privatize of one batch.
TIMINGS = ("train_step", "encode", "decode", "privatize")


def timed(
    fn: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """``{"median", "min", "max"}`` seconds of ``repeats`` timed calls of ``fn``, after
    ``warmup`` untimed ones. Each timed call reads ``clock`` after a ``sync()`` (e.g. CUDA
    synchronisation) before and after it, so queued device work is not left out."""
    if warmup < 0 or repeats < 1:
        raise ValueError(
            f"need warmup >= 0 and repeats >= 1 (got warmup={warmup}, repeats={repeats})"
        )
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def four_digits(seconds: float) -> float:
    """``seconds`` rounded to 4 significant digits (a tiny model's milliseconds too)."""
    return float(f"{seconds:.4g}")


def rates(median: Mapping[str, float], batch: int) -> dict[str, float]:
    """Steps and images per second and privatize / (encode + decode), from the median seconds
    of each of :data:`TIMINGS` for a batch of ``batch`` images."""
    return {
        "train_steps_per_s": round(1 / median["train_step"], 3),
        "encode_img_per_s": round(batch / median["encode"], 2),
        "decode_img_per_s": round(batch / median["decode"], 2),
        "privatize_img_per_s": round(batch / median["privatize"], 2),
        "privatize_s_per_img": four_digits(median["privatize"] / batch),
        "privatize_over_encode_decode": round(
            median["privatize"] / (median["encode"] + median["decode"]), 3
        ),
    }
