"""Speed and memory of the flow family: training step, encode, decode, privatize.

Each model runs in a fresh process so that its peak memory (RSS; CUDA max allocated on a GPU) is
its own. Timings: ``warmup`` untimed repetitions, then ``repeats`` timed ones; median and spread.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def _timed(fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None]) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _load_images(data_dir: str | None, size: int, n: int) -> tuple[torch.Tensor, str]:
    """Real X-rays when the pediatric set is there, else uniform noise (said in the table)."""
    from dpglow.data import read_image

    folder = Path(data_dir) / "pediatric_pneumonia224" / "images" if data_dir else None
    if folder is not None and folder.is_dir():
        paths = sorted(folder.glob("*.png"))[:n]
        images = torch.stack([torch.tensor(read_image(p, size))[None] for p in paths])
        return images, "pediatric"
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8), "uniform noise"


def bench_model(spec: dict[str, Any]) -> dict[str, Any]:
    """One model: runs in its own process (see :func:`run_benchmark`)."""
    from dpglow.flow import bits_per_dim, to_flow_input
    from dpglow.privacy import LaplaceL1, noise_generator
    from dpglow.privatization.privatizer import DPGlowPrivatizer
    from dpglow.training.module import GlowModule

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    module = GlowModule(**spec["model"]).to(device)
    net = module.net
    images, source = _load_images(spec["data_dir"], net.image_size, spec["batch_size"])
    images = images.to(device)
    x = to_flow_input(images, dequantize=True)
    net.initialize(x)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step() -> None:
        loss = bits_per_dim(net.log_prob(x), num_dims=net.num_dims).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50.0)
        optimizer.step()

    timing = {"warmup": spec["warmup"], "repeats": spec["repeats"], "sync": sync}
    rows: dict[str, Any] = {
        "model": spec["name"],
        "image_size": net.image_size,
        "levels": len(net.levels),
        "depth": spec["model"]["depth"],
        "width": spec["model"]["hidden_channels"],
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "batch": spec["batch_size"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "images": source,
    }
    train = _timed(train_step, **timing)
    net.eval()
    xc = to_flow_input(images)
    with torch.no_grad():
        latents = net.encode(xc)
        enc = _timed(lambda: net.encode(xc), **timing)
        dec = _timed(lambda: net.decode(latents), **timing)
    generator, source_name = noise_generator(noise_seed=0, device=device)
    privatizer = DPGlowPrivatizer(
        flow=net, mechanism=LaplaceL1(epsilon=1.0), postprocess="posterior_mean"
    )
    priv = _timed(
        lambda: privatizer(images, generator=generator, noise_source=source_name), **timing
    )
    per_image = 1.0 / spec["batch_size"]
    rows.update(
        train_step_s=round(train["median"], 4),
        train_step_s_min=round(train["min"], 4),
        train_step_s_max=round(train["max"], 4),
        encode_img_per_s=round(1 / (enc["median"] * per_image), 2),
        decode_img_per_s=round(1 / (dec["median"] * per_image), 2),
        privatize_img_per_s=round(1 / (priv["median"] * per_image), 2),
        privatize_s_per_img=round(priv["median"] * per_image, 4),
        privatize_over_encode_decode=round(priv["median"] / (enc["median"] + dec["median"]), 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if device.type == "cuda":
        rows["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return rows


def run_benchmark(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Benchmark each spec in a fresh spawned process (clean peak-memory figures)."""
    ctx = mp.get_context("spawn")
    results = []
    for spec in specs:
        log.info("benchmarking %s ...", spec["name"])
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            row = pool.apply(bench_model, (spec,))
        log.info("%s", row)
        results.append(row)
    return results


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, "")
            cells.append(f"{v:g}" if isinstance(v, float) and math.isfinite(v) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {mp.cpu_count()} cores, torch {torch.__version__}"
