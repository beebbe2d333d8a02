"""The benchmark of one model (training step, encode, decode, privatize; memory; held-out
bits/dim) in fresh processes, and the rows of those processes combined into one."""

from __future__ import annotations

import logging
import multiprocessing as mp
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpglow.benchmark.heldout import heldout_row
from dpglow.benchmark.memory import largest_batch
from dpglow.benchmark.timing import TIMINGS, four_digits, rates, timed
from dpglow.data import read_image
from dpglow.flow import Glow, architecture, bits_per_dim, to_flow_input
from dpglow.privacy import LaplaceL1, noise_generator
from dpglow.privatizers.dp_glow import DPGlowPrivatizer
from dpglow.utils.memory import peak_rss_mb
from dpglow.utils.optim import fused_supported

log = logging.getLogger(__name__)

PRECISIONS = ("32", "bf16-mixed")


def _load_images(data_dir: str | None, size: int, n: int) -> tuple[torch.Tensor, str]:
    """Real X-rays when the pediatric set is there, else uniform noise (said in the table)."""
    folder = Path(data_dir) / "pediatric_pneumonia224" / "images" if data_dir else None
    if folder is not None and folder.is_dir():
        paths = sorted(folder.glob("*.png"))[:n]
        images = torch.stack([torch.tensor(read_image(p, size))[None] for p in paths])
        return images, "pediatric"
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8), "uniform noise"


def _training_step(
    net: Glow, *, device: torch.device, precision: str
) -> Callable[[torch.Tensor], None]:
    """One optimiser step on a batch, as training takes it."""
    # Fused where training runs it fused (build_optimizers): one kernel for all parameters.
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5, fused=fused_supported(net.parameters()))

    def step_on(inputs: torch.Tensor) -> None:
        # bf16-mixed as trainer.precision=bf16-mixed trains: the flow's own autocast handling
        # keeps log-dets, the 1x1 convolutions and the latents in float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "32"):
            loss = bits_per_dim(net.log_prob(inputs), num_dims=net.num_dims).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50.0)
        optimizer.step()

    return step_on


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes the clock wait for the work queued on ``device`` (nothing on a CPU)."""
    if device.type != "cuda":
        return lambda: None
    return lambda: torch.cuda.synchronize(device)


def _describe(spec: Mapping[str, Any], net: Glow, *, batch: int, source: str) -> dict[str, Any]:
    """The columns that say what was measured."""
    device = torch.device(spec["device"])
    return {
        "model": spec["name"],
        "precision": str(spec.get("precision", "32")),
        "image_size": net.image_size,
        "levels": len(net.levels),
        "depth": net.config["depth"],
        "width": net.config["hidden_channels"],
        "spline_bins": net.config.get("spline_bins", 0),
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "batch": batch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "images": source,
    }


def _time_all(
    net: Glow,
    train_step: Callable[[], None],
    images: torch.Tensor,
    *,
    device: torch.device,
    timing: Mapping[str, Any],
) -> dict[str, dict[str, float]]:
    """The timings of :data:`~dpglow.benchmark.timing.TIMINGS`, in that order, on ``images``
    (uint8, on ``device``)."""
    train = timed(train_step, **timing)
    net.eval()
    xc = to_flow_input(images)
    with torch.no_grad():
        latents = net.encode(xc)
        enc = timed(lambda: net.encode(xc), **timing)
        dec = timed(lambda: net.decode(latents), **timing)
    generator, source_name = noise_generator(noise_seed=0, device=device)
    privatizer = DPGlowPrivatizer(
        flow=net, mechanism=LaplaceL1(epsilon=1.0), postprocess="posterior_mean"
    )
    priv = timed(
        lambda: privatizer(images, generator=generator, noise_source=source_name), **timing
    )
    return dict(zip(TIMINGS, (train, enc, dec, priv), strict=True))


def _timing_cells(times: Mapping[str, Mapping[str, float]], batch: int) -> dict[str, float]:
    row = {}
    for name in TIMINGS:
        row[f"{name}_s"] = four_digits(times[name]["median"])
        row[f"{name}_s_min"] = four_digits(times[name]["min"])
        row[f"{name}_s_max"] = four_digits(times[name]["max"])
    return row | rates({name: times[name]["median"] for name in TIMINGS}, batch)


def bench_model(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One model's benchmark row: runs in its own process (see :func:`run_benchmark`).

    ``spec``: ``name``, ``model`` (the flow: a ``model.net`` node, see
    :func:`~dpglow.flow.architecture`), ``device``,
    ``batch_size``, ``warmup``, ``repeats``, ``threads``, ``data_dir`` and optionally
    ``precision`` (one of :data:`PRECISIONS`), ``max_batch`` / ``max_batch_limit`` (on a GPU, the
    largest batch whose training step fits) and the held-out keys of
    :func:`~dpglow.benchmark.heldout.heldout_row`.
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    precision = str(spec.get("precision", "32"))
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    torch.manual_seed(0)
    net = Glow(**architecture(spec["model"])).to(device)
    batch = int(spec["batch_size"])
    images, source = _load_images(spec["data_dir"], net.image_size, batch)
    x = to_flow_input(images.to(device), dequantize=True)
    net.initialize(x)
    step_on = _training_step(net, device=device, precision=precision)
    if spec.get("max_batch") and device.type == "cuda":
        # Largest power-of-two multiple of batch_size whose training step fits (the same images
        # repeated: only the shapes matter for memory and speed).
        batch = largest_batch(
            lambda b: step_on(x.repeat_interleave(-(-b // len(x)), 0)[:b]),
            start=batch,
            limit=int(spec.get("max_batch_limit") or 4096),
        )
        log.info("%s %s: largest batch that fits %d", spec["name"], precision, batch)
        images, source = _load_images(spec["data_dir"], net.image_size, batch)
        x = to_flow_input(images.to(device), dequantize=True)
        torch.cuda.reset_peak_memory_stats(device)
    row = _describe(spec, net, batch=batch, source=source)
    timing = {"warmup": spec["warmup"], "repeats": spec["repeats"], "sync": _synchronizer(device)}
    times = _time_all(net, lambda: step_on(x), images.to(device), device=device, timing=timing)
    # Memory before the held-out evaluation, which loads a second model and the test images.
    row |= _timing_cells(times, batch) | {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row | heldout_row(spec, device)


def combine_processes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of several fresh processes of the same model: per measure the median
    of the processes' medians, the smallest minimum and the largest maximum; rates and ratios
    from those medians; the largest peak memory. The first row gives everything else."""
    out = dict(rows[0])
    for name in TIMINGS:
        out[f"{name}_s"] = four_digits(statistics.median(r[f"{name}_s"] for r in rows))
        out[f"{name}_s_min"] = min(r[f"{name}_s_min"] for r in rows)
        out[f"{name}_s_max"] = max(r[f"{name}_s_max"] for r in rows)
    out.update(
        **rates({name: out[f"{name}_s"] for name in TIMINGS}, out["batch"]),
        processes=len(rows),
        train_step_s_per_process=" / ".join(f"{r['train_step_s']:.4g}" for r in rows),
        privatize_s_per_process=" / ".join(f"{r['privatize_s']:.4g}" for r in rows),
    )
    for key in ("peak_rss_mb", "cuda_max_allocated_mb"):
        if key in out:
            out[key] = max(r[key] for r in rows)
    return out


def run_benchmark(specs: list[dict[str, Any]], *, processes: int = 1) -> list[dict[str, Any]]:
    """Benchmark each spec in ``processes`` fresh spawned processes (clean peak-memory figures;
    on a shared or virtual machine a whole process can run in a faster or slower band, which
    repetitions inside one process do not show), combined by :func:`combine_processes`. The
    held-out bits/dim (the same in every process) are measured in the first one only."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    ctx = mp.get_context("spawn")
    results = []
    for spec in specs:
        rows = []
        for i in range(processes):
            log.info("benchmarking %s (process %d of %d) ...", spec["name"], i + 1, processes)
            run_spec = spec if i == 0 else dict(spec, checkpoint=None)
            with ctx.Pool(1, maxtasksperchild=1) as pool:
                rows.append(pool.apply(bench_model, (run_spec,)))
            log.info("%s", rows[-1])
        results.append(combine_processes(rows))
    return results
