"""Speed, memory and held-out bits/dim of the flow family: training step, encode, decode, privatize.

Each model runs in a fresh process so that its peak memory (RSS; CUDA max allocated on a GPU) is
its own. Timings: ``warmup`` untimed repetitions, then ``repeats`` timed ones; median and spread.
Held-out bits/dim need a trained flow: a checkpoint whose stored architecture is the model's,
evaluated on its run's test split beside PNG and WebP on the very same 8-bit images.
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

NO_CHECKPOINT = "no trained checkpoint"
# What is timed: a training step, and encode, decode, privatize of one batch.
TIMINGS = ("train_step", "encode", "decode", "privatize")


def _timed(fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None]) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
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


# -- held-out bits/dim ------------------------------------------------------------------------
def _stored_architecture(path: Path) -> dict[str, Any] | None:
    """The architecture a dpglow checkpoint stores, without loading its tensors (memory-mapped,
    ``weights_only``); ``None`` for anything else."""
    from dpglow.privatization.checkpoint import architecture
    from dpglow.training.module import CHECKPOINT_KEY

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # unreadable, truncated or holding pickled code
        log.info("skipping %s: %s", path, str(err).splitlines()[0] if str(err) else err)
        return None
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not meta or "net_config" not in meta:
        return None
    return architecture(meta["net_config"])


def find_checkpoint(
    runs_dir: str | os.PathLike[str], model: Mapping[str, Any], *, data_target: str | None = None
) -> Path | None:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt`` whose stored architecture is ``model``'s
    and, with ``data_target``, whose run trained on that data source (a run whose
    ``.hydra/config.yaml`` does not say is not ruled out).

    Files that are not dpglow flow checkpoints are skipped.
    """
    from dpglow.evaluation.discovery import data_of
    from dpglow.privatization.checkpoint import architecture

    wanted = architecture(model)
    candidates = sorted(Path(runs_dir).glob("*/checkpoints/last.ckpt"), reverse=True)
    for path in candidates:  # run folders are named <date>_<time>: newest first
        source = data_of(path.parent.parent)[0]
        if data_target is not None and source is not None and source != data_target:
            continue
        if _stored_architecture(path) == wanted:
            return path
    return None


def heldout_bits_per_dim(
    flow: torch.nn.Module, images: torch.Tensor, *, n_bits: int = 8, batch_size: int = 16
) -> float:
    """Mean test bits/dim, with the training module's evaluation protocol: uniform
    dequantisation from :func:`~dpglow.training.module.eval_noise_generator` per batch (so with
    the run's evaluation batch size it reproduces its ``test/bpd``)."""
    from dpglow.flow import bits_per_dim, to_flow_input
    from dpglow.training.module import eval_noise_generator

    device = next(flow.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i, chunk in enumerate(images.split(batch_size)):
            gen = eval_noise_generator(i, device)
            chunk = chunk.to(device)
            x = to_flow_input(chunk, n_bits=n_bits, dequantize=True, generator=gen)
            bpd = bits_per_dim(flow.log_prob(x), num_dims=flow.num_dims, n_bits=n_bits)
            total += bpd.double().sum().item()
    return total / len(images)


def heldout_images(
    checkpoint: Path, size: int, *, data: Mapping[str, Any] | None, max_images: int | None
) -> tuple[torch.Tensor, str]:
    """The test images of the checkpoint's run: its ``splits.csv`` when there, else the seeded
    test split of the datamodule config ``data``. uint8 ``[N, 1, size, size]`` and where from."""
    import pandas as pd

    from dpglow.data import read_image

    splits = checkpoint.parent.parent / "splits.csv"
    if splits.is_file():
        table = pd.read_csv(splits)
        paths = table.loc[table["split"] == "test", "path"].tolist()[:max_images]
        images = torch.stack([torch.tensor(read_image(p, size))[None] for p in paths])
        return images, f"test split of {splits.parent.name}"
    if data is None:
        raise FileNotFoundError(
            f"{splits} is missing and no data config was given: cannot tell the test images"
        )
    from hydra.utils import instantiate

    datamodule = instantiate(dict(data, image_size=size))
    datamodule.setup("test")
    return datamodule.dataset("test").images[:max_images], "seeded test split (datamodule)"


def _heldout_row(spec: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    from dpglow.evaluation.codecs import codec_bits_per_dim
    from dpglow.flow import to_flow_input
    from dpglow.privatization.checkpoint import architecture, load_flow

    checkpoint = spec.get("checkpoint")
    if not checkpoint:
        return {"heldout_bpd": NO_CHECKPOINT, "png_bpd": "", "webp_bpd": "", "checkpoint": ""}
    checkpoint = Path(checkpoint)
    flow, info = load_flow(checkpoint, expected=architecture(spec["model"]))
    flow = flow.to(device)
    images, where = heldout_images(
        checkpoint,
        flow.image_size,
        data=spec.get("data"),
        max_images=spec.get("heldout_images"),
    )
    bpd = heldout_bits_per_dim(
        flow, images, n_bits=info["n_bits"], batch_size=spec.get("heldout_batch_size", 16)
    )
    codecs = codec_bits_per_dim(images.numpy())
    with torch.no_grad():
        x = to_flow_input(images[:64].to(device), n_bits=info["n_bits"])
        inverse_error = (flow.decode(flow.encode(x)) - x).abs().amax().item()
    return {
        "heldout_bpd": round(bpd, 4),
        "png_bpd": round(codecs["png_bpd"], 4),
        "webp_bpd": round(codecs["webp_bpd"], 4) if "webp_bpd" in codecs else "no WebP in Pillow",
        "heldout_images": len(images),
        "heldout_source": where,
        "inverse_max_abs_error": float(f"{inverse_error:.3g}"),
        "checkpoint": str(checkpoint),
    }


# -- speed ------------------------------------------------------------------------------------
def _sig(seconds: float) -> float:
    return float(f"{seconds:.4g}")  # 4 significant digits: a tiny model's milliseconds too


PRECISIONS = ("32", "bf16-mixed")


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def largest_batch(fits: Callable[[int], None], *, start: int, limit: int) -> int:
    """The largest batch of ``start * 2**k`` (at most ``limit``) for which ``fits(batch)`` runs
    without running out of (GPU) memory; other errors propagate."""
    best, batch = None, start
    while batch <= limit:
        try:
            fits(batch)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not _out_of_memory(err):
                raise
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        best, batch = batch, batch * 2
    if best is None:
        raise RuntimeError(f"a batch of {start} does not fit in memory: lower batch_size")
    return best


def _rates(median: Mapping[str, float], batch: int) -> dict[str, float]:
    """Steps and images per second and privatize / (encode + decode), from median seconds."""
    return {
        "train_steps_per_s": round(1 / median["train_step"], 3),
        "encode_img_per_s": round(batch / median["encode"], 2),
        "decode_img_per_s": round(batch / median["decode"], 2),
        "privatize_img_per_s": round(batch / median["privatize"], 2),
        "privatize_s_per_img": _sig(median["privatize"] / batch),
        "privatize_over_encode_decode": round(
            median["privatize"] / (median["encode"] + median["decode"]), 3
        ),
    }


def bench_model(spec: dict[str, Any]) -> dict[str, Any]:
    """One model: runs in its own process (see :func:`run_benchmark`)."""
    from dpglow.flow import bits_per_dim, to_flow_input
    from dpglow.privacy import LaplaceL1, noise_generator
    from dpglow.privatization.privatizer import DPGlowPrivatizer
    from dpglow.training.module import GlowModule
    from dpglow.training.schedules import fused_supported

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    precision = str(spec.get("precision", "32"))
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    torch.manual_seed(0)
    module = GlowModule(**spec["model"]).to(device)
    net = module.net
    batch = int(spec["batch_size"])
    images, source = _load_images(spec["data_dir"], net.image_size, batch)
    x = to_flow_input(images.to(device), dequantize=True)
    net.initialize(x)
    # Fused where training runs it fused (build_optimizers): one kernel for all parameters.
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5, fused=fused_supported(net.parameters()))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step_on(inputs: torch.Tensor) -> None:
        # bf16-mixed as trainer.precision=bf16-mixed trains: the flow's own autocast handling
        # keeps log-dets, the 1x1 convolutions and the latents in float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "32"):
            loss = bits_per_dim(net.log_prob(inputs), num_dims=net.num_dims).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50.0)
        optimizer.step()

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
    images = images.to(device)

    def train_step() -> None:
        step_on(x)

    timing = {"warmup": spec["warmup"], "repeats": spec["repeats"], "sync": sync}
    row: dict[str, Any] = {
        "model": spec["name"],
        "precision": precision,
        "image_size": net.image_size,
        "levels": len(net.levels),
        "depth": spec["model"]["depth"],
        "width": spec["model"]["hidden_channels"],
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "batch": batch,
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
    for name, t in zip(TIMINGS, (train, enc, dec, priv), strict=True):
        row[f"{name}_s"] = _sig(t["median"])
        row[f"{name}_s_min"] = _sig(t["min"])
        row[f"{name}_s_max"] = _sig(t["max"])
    medians = dict(zip(TIMINGS, (t["median"] for t in (train, enc, dec, priv)), strict=True))
    row.update(
        **_rates(medians, batch),
        # Before the held-out evaluation, which loads a second model and the test images.
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if device.type == "cuda":
        row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row.update(_heldout_row(spec, device))
    return row


def combine_processes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of several fresh processes of the same model: per measure the median
    of the processes' medians, the smallest minimum and the largest maximum; rates and ratios
    from those medians; the largest peak memory. The first row gives everything else."""
    out = dict(rows[0])
    for name in TIMINGS:
        out[f"{name}_s"] = _sig(statistics.median(r[f"{name}_s"] for r in rows))
        out[f"{name}_s_min"] = min(r[f"{name}_s_min"] for r in rows)
        out[f"{name}_s_max"] = max(r[f"{name}_s_max"] for r in rows)
    out.update(
        **_rates({name: out[f"{name}_s"] for name in TIMINGS}, out["batch"]),
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


# -- output -----------------------------------------------------------------------------------
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


def _spread(row: Mapping[str, Any], name: str) -> str:
    return f"{row[name + '_s']:.3g} s ({row[name + '_s_min']:.3g}-{row[name + '_s_max']:.3g})"


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The README's view of the benchmark rows: one readable cell per measure."""
    out = []
    for row in rows:
        summary = {
            "model": row["model"],
            "precision": row.get("precision", "32"),
            "L / K / width": f"{row['levels']} / {row['depth']} / {row['width']}",
            "params": f"{row['params_m']} M",
            "batch": row["batch"],
            "threads": row["threads"],
            "train step (fwd+bwd+Adam)": (
                f"{_spread(row, 'train_step')}, {row['train_steps_per_s']} steps/s"
            ),
            "encode (per batch)": f"{_spread(row, 'encode')}, {row['encode_img_per_s']} img/s",
            "decode (per batch)": f"{_spread(row, 'decode')}, {row['decode_img_per_s']} img/s",
            "privatize (per batch)": (
                f"{_spread(row, 'privatize')}, {row['privatize_img_per_s']} img/s"
            ),
            "privatize / (encode + decode)": row["privatize_over_encode_decode"],
            "peak RSS": f"{row['peak_rss_mb']:.0f} MB",
        }
        if row.get("processes", 1) > 1:
            summary["train step per process"] = row["train_step_s_per_process"]
        if "cuda_max_allocated_mb" in row:
            summary["CUDA max allocated"] = f"{row['cuda_max_allocated_mb']:.0f} MB"
        summary.update(
            {
                "held-out bits/dim": row.get("heldout_bpd", NO_CHECKPOINT),
                "PNG (optimised)": row.get("png_bpd", ""),
                "WebP lossless": row.get("webp_bpd", ""),
                "held-out images": (
                    f"{row['heldout_images']}, {row['heldout_source']}"
                    if row.get("heldout_images")
                    else ""
                ),
            }
        )
        out.append(summary)
    return [{k: ("" if v is None else v) for k, v in r.items()} for r in out]


def load_average() -> str:
    """The 1 / 5 / 15 minute load average (other work on the machine slows every timing)."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


def machine_description() -> str:
    """CPU model, logical CPUs, torch version (and the GPU where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{platform.system()}, {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_tables(rows: list[dict[str, Any]], out_dir: Path, machine: str) -> str:
    """``benchmark.csv`` (every measure) and ``benchmark.md`` (the README table); returns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    threads = sorted({str(r["threads"]) for r in rows})
    table = (
        f"Machine: {machine}; torch threads: {', '.join(threads)}\n\n"
        f"{markdown_table(summary_rows(rows))}\n"
    )
    (out_dir / "benchmark.md").write_text(table)
    return table
