"""RandomZoom and the augmented training split, on the bundled pediatric X-rays: a whole-image
box is exactly the unaugmented image, boxes are reproducible per (seed, epoch, item) and new
every epoch, and only the training split is augmented."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dpglow.data import PediatricSource, RandomZoom, read_image


@pytest.fixture(scope="module")
def source_image(pediatric_dir: Path) -> tuple[np.ndarray, Path]:
    path = sorted((pediatric_dir / "images").iterdir())[0]
    return read_image(path, 224), path


def test_a_whole_image_box_is_the_unaugmented_image(source_image):
    image, path = source_image
    whole = RandomZoom(source_size=224, min_scale=1.0)
    assert np.array_equal(whole(image, 64, np.random.default_rng(0)), read_image(path, 64))


def test_zooms_stay_inside_the_image_and_change_it(source_image):
    image, path = source_image
    zoom = RandomZoom(source_size=224, min_scale=0.85)
    plain = read_image(path, 64).astype(int)
    outs = [zoom(image, 64, np.random.default_rng(s)) for s in range(4)]
    assert all(o.shape == (64, 64) and o.dtype == np.uint8 for o in outs)
    assert all(np.abs(o.astype(int) - plain).mean() > 1 for o in outs)
    # A box of 85% of the image at least: the zoomed image keeps its intensity range.
    assert all(abs(float(o.mean()) - float(plain.mean())) < 25 for o in outs)


def test_flips_mirror_the_crop_and_leave_the_boxes_alone(source_image):
    image, path = source_image
    plain = read_image(path, 64)
    always = RandomZoom(source_size=224, min_scale=1.0, flip_probability=1.0)
    assert np.array_equal(always(image, 64, np.random.default_rng(0)), plain[:, ::-1])
    # Without flips no extra number is drawn: the boxes are those of the option's absence.
    never = RandomZoom(source_size=224, min_scale=0.85, flip_probability=0.0)
    default = RandomZoom(source_size=224, min_scale=0.85)
    for seed in range(3):
        a = never(image, 64, np.random.default_rng(seed))
        assert np.array_equal(a, default(image, 64, np.random.default_rng(seed)))
    # With flips the box is still the same draw; about half the crops come back mirrored.
    half = RandomZoom(source_size=224, min_scale=0.85, flip_probability=0.5)
    mirrored = 0
    for seed in range(40):
        box = default(image, 64, np.random.default_rng(seed))
        out = half(image, 64, np.random.default_rng(seed))
        assert np.array_equal(out, box) or np.array_equal(out, box[:, ::-1])
        mirrored += not np.array_equal(out, box)
    assert 10 <= mirrored <= 30


def test_bad_arguments_are_refused(source_image):
    image, _ = source_image
    with pytest.raises(ValueError, match="min_scale"):
        RandomZoom(source_size=224, min_scale=0.0)
    with pytest.raises(ValueError, match="flip_probability"):
        RandomZoom(source_size=224, flip_probability=1.5)
    with pytest.raises(ValueError, match="source_size"):
        RandomZoom(source_size=0)
    with pytest.raises(ValueError, match="expected a 128x128"):
        RandomZoom(source_size=128)(image, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="below the training resolution"):
        RandomZoom(source_size=224)(image, 256, np.random.default_rng(0))


def test_the_datamodule_augments_the_training_split_only(pediatric_dir: Path, make_dm: Callable):
    zoom = RandomZoom(source_size=224, min_scale=0.85)
    dm = make_dm(PediatricSource, pediatric_dir, max_images=40, seed=3, augment=zoom)
    plain = make_dm(PediatricSource, pediatric_dir, max_images=40, seed=3)
    dm.setup(), plain.setup()
    train, reference = dm.dataset("train"), plain.dataset("train")
    assert torch.equal(train.images, reference.images)  # unaugmented copy kept
    assert torch.equal(dm.init_batch(8), plain.init_batch(8))
    for split in ("val", "test"):
        assert torch.equal(dm.dataset(split).images, plain.dataset(split).images)

    def epoch_images(epoch: int) -> torch.Tensor:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["image"] for b in loader])

    first, second = epoch_images(0), epoch_images(1)
    assert first.shape == (len(train) // 4 * 4, 1, 32, 32)
    assert not torch.equal(first, second)
    assert torch.equal(epoch_images(0), first)  # reproducible: a resumed epoch sees the same
    item = train[0]
    assert item["image"].shape == (1, 32, 32) and torch.equal(item["index"], reference[0]["index"])
    assert not torch.equal(item["image"], reference[0]["image"])


def test_a_source_size_below_the_training_size_is_refused(pediatric_dir: Path, make_dm: Callable):
    with pytest.raises(ValueError, match="source_size=32 is below image_size=64"):
        make_dm(PediatricSource, pediatric_dir, image_size=64, augment=RandomZoom(source_size=32))
