"""ImageCache: decode once, reuse while files are unchanged, re-decode only what changed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dpglow.data.cache as cache_module
from dpglow.data import DataFormatError, PediatricSource
from dpglow.data.cache import ImageCache


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths decoded by the cache (wraps the read_image it calls)."""
    calls: list[str] = []
    real = cache_module.read_image

    def counting(path: str, size: int | None) -> np.ndarray:
        calls.append(str(path))
        return real(path, size)

    monkeypatch.setattr(cache_module, "read_image", counting)
    return calls


@pytest.fixture
def image_dir(tmp_path: Path, gray_images: list[Path]) -> list[str]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for src in gray_images[:8]:
        shutil.copyfile(src, folder / src.name)
        paths.append(str(folder / src.name))
    return paths


def test_second_get_uses_cache(
    tmp_path: Path, image_dir: list[str], decode_counter: list[str]
) -> None:
    cache = ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32, workers=2)
    first = cache.get(image_dir)
    assert sorted(decode_counter) == sorted(image_dir) and first.n_decoded == 8
    assert first.images.dtype == torch.uint8 and first.images.shape == (8, 1, 32, 32)
    assert cache.path.is_file() and not list(cache.path.parent.glob("*.tmp"))  # atomic write

    decode_counter.clear()
    again = ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32).get(image_dir)
    assert decode_counter == [] and again.n_decoded == 0
    assert torch.equal(first.images, again.images)
    # A subset in another order comes from the cache too, in the requested order.
    subset = ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32).get(image_dir[::-2])
    assert decode_counter == [] and torch.equal(subset.images, first.images.flip(0)[::2])


def test_resolution_is_part_of_the_key(
    tmp_path: Path, image_dir: list[str], decode_counter: list[str]
) -> None:
    ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32).get(image_dir)
    decode_counter.clear()
    other = ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 16).get(image_dir)
    assert len(decode_counter) == 8 and other.images.shape[-1] == 16


def test_modified_file_is_redecoded(
    tmp_path: Path, image_dir: list[str], decode_counter: list[str]
) -> None:
    make = lambda: ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32)  # noqa: E731
    before = make().get(image_dir).images
    target = image_dir[3]
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(target)
    stat = os.stat(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime, surely
    decode_counter.clear()
    after = make().get(image_dir).images
    assert decode_counter == [target]
    assert torch.all(after[3] == 7)
    keep = [i for i in range(8) if i != 3]
    assert torch.equal(after[keep], before[keep])
    decode_counter.clear()
    make().get(image_dir)
    assert decode_counter == []  # the rebuilt cache is current again


def test_unreadable_files(tmp_path: Path, image_dir: list[str], decode_counter: list[str]) -> None:
    bad = Path(image_dir[5])
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    make = lambda: ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32)  # noqa: E731
    with pytest.raises(DataFormatError, match=bad.name) as err:
        make().get(image_dir)
    assert "skip_unreadable" in str(err.value)
    decode_counter.clear()
    result = make().get(image_dir, skip_unreadable=True)
    assert result.kept.tolist() == [0, 1, 2, 3, 4, 6, 7] and list(result.failed) == [str(bad)]
    assert len(result.images) == 7
    assert decode_counter == []  # the failure was remembered with the file's stamp
    with pytest.raises(DataFormatError, match=bad.name):
        make().get(image_dir)  # still raises by default


def test_corrupt_cache_file_is_rebuilt(
    tmp_path: Path, image_dir: list[str], decode_counter: list[str]
) -> None:
    cache = ImageCache(tmp_path / "cache", "demo", tmp_path / "imgs", 32)
    reference = cache.get(image_dir).images
    cache.path.write_bytes(b"garbage")
    decode_counter.clear()
    assert torch.equal(cache.get(image_dir).images, reference)
    assert len(decode_counter) == 8


def test_pediatric_datamodule_reuses_cache(
    pediatric_dir: Path, make_dm: Callable, decode_counter: list[str]
) -> None:
    first = make_dm(PediatricSource, pediatric_dir, max_images=120)
    first.setup("fit")
    assert len(decode_counter) == 120
    decode_counter.clear()
    second = make_dm(PediatricSource, pediatric_dir, max_images=120)
    second.setup("fit")
    assert decode_counter == []
    assert torch.equal(first.dataset("train").images, second.dataset("train").images)
