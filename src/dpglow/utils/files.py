"""The one atomic file writer: a reader sees the old file or the whole new one, never a part.

A write goes to a temporary beside the target (``.dpglow-<token>-<random>.tmp``, created
exclusively with mode 0666 minus the umask), is flushed and fsynced, renamed over the target, and
the folder is fsynced so the rename survives a crash. A failed write removes its temporary. A
caller that must find its own leftovers after a kill (the release folder) passes its run
``token``; otherwise a random one is used.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".dpglow-"
# Text keeps any file name byte for byte: names that are not UTF-8 are read as surrogate escapes
# and written back as the same bytes.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}


def temporary_name(token: str | None = None) -> str:
    """``.dpglow-<token>-<8 hex>.tmp`` (a random token when none is given)."""
    return f"{TEMP_PREFIX}{token or secrets.token_hex(8)}-{secrets.token_hex(4)}.tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w", *, token: str | None = None) -> Iterator[IO]:
    """A handle on a temporary beside ``path`` that replaces ``path`` when the block ends (see
    the module docstring); text modes use :data:`TEXT`. Parent folders are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temporary_name(token)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else TEXT)) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, token: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path, "wb", token=token) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str, *, token: str | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8, see :data:`TEXT`) atomically."""
    with atomic_writer(path, "w", token=token) as fh:
        fh.write(text)


def atomic_save(value: Any, path: str | Path, *, token: str | None = None) -> None:
    """``torch.save(value)`` to ``path`` atomically."""
    import torch

    with atomic_writer(path, "wb", token=token) as fh:
        torch.save(value, fh)
