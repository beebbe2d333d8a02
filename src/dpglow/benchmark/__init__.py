"""The benchmark of the flow family: speed (training step, encode, decode, privatize), memory and
held-out bits/dim, written as ``benchmark.csv`` and a table for docs/benchmarks.md
(``python src/benchmark.py``).

Each model runs in a fresh process so that its peak memory (RSS; CUDA max allocated on a GPU) is
its own. Timings: ``warmup`` untimed repetitions, then ``repeats`` timed ones; median and spread.
Held-out bits/dim need a trained flow: a checkpoint whose stored architecture is the model's,
evaluated on its run's test split::

    rows = run_benchmark(specs, processes=3)  # one combined row per spec
    write_tables(rows, out_dir=Path("out"), machine=machine_description())
"""

from dpglow.benchmark.heldout import (
    NO_CHECKPOINT,
    find_checkpoint,
    heldout_bits_per_dim,
    heldout_images,
)
from dpglow.benchmark.machine import load_average, machine_description
from dpglow.benchmark.memory import largest_batch
from dpglow.benchmark.run import PRECISIONS, bench_model, combine_processes, run_benchmark
from dpglow.benchmark.tables import summary_rows, write_release_table, write_tables
from dpglow.benchmark.timing import TIMINGS, timed

__all__ = [
    "NO_CHECKPOINT",
    "PRECISIONS",
    "TIMINGS",
    "bench_model",
    "combine_processes",
    "find_checkpoint",
    "heldout_bits_per_dim",
    "heldout_images",
    "largest_batch",
    "load_average",
    "machine_description",
    "run_benchmark",
    "summary_rows",
    "timed",
    "write_release_table",
    "write_tables",
]
