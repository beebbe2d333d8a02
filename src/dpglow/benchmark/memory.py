"""Memory: the largest batch whose training step fits on the GPU."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


def largest_batch(fits: Callable[[int], None], *, start: int, limit: int) -> int:
    """The largest batch of ``start * 2**k`` (at most ``limit``) for which ``fits(batch)`` runs
    without running out of (GPU) memory; other errors propagate."""
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
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
