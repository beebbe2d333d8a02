"""What the benchmark ran on: the machine, and how busy it was."""

from __future__ import annotations

import os
import platform

import torch


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
