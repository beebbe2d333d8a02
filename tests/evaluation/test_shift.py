"""Shifts of the evaluated images: what each changes, and that it changes nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_run
from dpglow.data.subsets import LabelledImages
from dpglow.evaluation.shift import Acquisition, Collection, NoShift, Prevalence, build_shift


def _images(n: int = 40, positives: int = 30) -> LabelledImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.zeros(n, 1)
    labels[:positives] = 1
    return LabelledImages(
        images=images,
        labels=labels,
        pathologies=["Pneumonia"],
        patients=[f"p{i}" for i in range(n)],
        paths=[f"/x/{i}.png" for i in range(n)],
    )


def test_no_shift_is_the_identity() -> None:
    images = _images()
    assert NoShift()(images) is images
    assert NoShift().describe() == {"shift": "none"}


def test_prevalence_keeps_every_scarce_image_and_the_asked_share() -> None:
    images = _images(n=120, positives=90)
    shifted = Prevalence(positive_fraction=0.25)(images)
    labels = shifted.labels[:, 0]
    assert int((labels == 0).sum()) == 30  # all negatives kept
    assert int((labels == 1).sum()) == 10  # 30 * 0.25 / 0.75
    assert set(shifted.paths) <= set(images.paths)
    again = Prevalence(positive_fraction=0.25)(images)
    assert again.paths == shifted.paths  # seeded
    with pytest.raises(ValueError, match="remain"):
        Prevalence(positive_fraction=0.02)(images)


def test_acquisition_changes_pixels_only() -> None:
    images = _images()
    shifted = Acquisition(kind="blur", value=1.0)(images)
    assert not torch.equal(shifted.images, images.images)
    assert torch.equal(shifted.labels, images.labels)
    assert shifted.paths == images.paths and shifted.patients == images.patients
    assert Acquisition(kind="gamma", value=1.5).describe() == {"shift": "gamma", "shift_value": 1.5}
    with pytest.raises(ValueError, match="kind"):
        Acquisition(kind="rotate", value=1.0)


def _pediatric_layout(root, n: int = 24):
    (root / "images").mkdir(parents=True)
    rows = ["Image Index,Finding Labels,class,pneumonia_type,patient_key"]
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"IM-{i:04d}-0001.png"
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "images" / name)
        finding = "Pneumonia" if i % 3 else "No Finding"
        rows.append(f"{name},{finding},X,none,IM-{i:04d}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_collection_replaces_the_images_by_every_image_of_another_dataset(tmp_path) -> None:
    root = _pediatric_layout(tmp_path / "other")
    cfg = compose_run(
        "evaluate", ["shift=collection", f"shift.data.root={root}", "image_size=16"], tmp_path
    )
    shift = build_shift(cfg)
    assert isinstance(shift, Collection)
    shifted = shift(_images())
    assert len(shifted.images) == 24 and shifted.images.shape[-1] == 16
    assert int(shifted.labels[:, 0].sum()) == 16
    assert all(str(root) in p for p in shifted.paths)
    assert shift.describe()["shift"] == "collection"


def test_every_shift_config_builds(tmp_path) -> None:
    for name in ("none", "prevalence", "gamma", "contrast", "noise", "blur", "zoom"):
        cfg = compose_run("evaluate", [f"shift={name}"], tmp_path)
        assert build_shift(cfg).describe()["shift"] == name
