"""Privatizing a large folder keeps memory flat: files are listed lazily and written as they finish,
so only a small manifest row per file is held (what a sorted manifest needs)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

# Runs the real command line (src/privatize.py) with Python's allocations traced inside
# privatize(cfg) only, so the measurement leaves out the imports.
WRAPPER = """
import json, runpy, sys, tracemalloc
import dpglow.release.task as pipeline

inner, stats = pipeline.privatize, sys.argv[1]

def traced(cfg):
    tracemalloc.start()
    try:
        return inner(cfg)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        with open(stats, "w") as fh:
            json.dump({"python_peak": peak}, fh)

pipeline.privatize = traced
script, *args = sys.argv[2:]
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def _folder(root, n: int):
    root.mkdir()
    rng = np.random.default_rng(n)
    for i in range(n):
        pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"scan{i:05d}.png")
    return root


def _privatize(src, out) -> tuple[int, int]:
    """Run the command; return (peak Python allocations in privatize, peak RSS), in bytes."""
    stats = out.parent / f"{out.name}_stats.json"
    args = [
        f"input_dir={src}",
        f"output_dir={out}",
        "privacy=pixel_laplace",
        "image_size=16",
        "batch_size=64",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out.parent / (out.name + '_logs')}",
    ]
    log = out.parent / f"{out.name}_stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(stats), str(ROOT / "src" / "privatize.py"), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        timer = threading.Timer(240, proc.kill)
        timer.start()
        # wait4 gives this one child's peak RSS (Linux: KiB), not the peak of earlier children.
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text()[-3000:]
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list(src.iterdir())) and {r["status"] for r in rows} == {"ok"}
    return json.loads(stats.read_text())["python_peak"], usage.ru_maxrss * 1024


@pytest.mark.slow  # privatizes hundreds of files (tens of seconds): the full suite runs it
def test_memory_does_not_grow_with_the_number_of_files(tmp_path):
    small, large = 400, 2400
    py_small, rss_small = _privatize(_folder(tmp_path / "small", small), tmp_path / "out_small")
    py_large, rss_large = _privatize(_folder(tmp_path / "large", large), tmp_path / "out_large")
    extra = large - small
    # Only the manifest rows grow with the file count (~400 bytes each in Python), far below
    # the images themselves or per-file batches kept alive; the process as a whole stays flat.
    assert (py_large - py_small) / extra < 640, (py_small, py_large)
    assert rss_large - rss_small < 24 * 2**20, (rss_small, rss_large)
