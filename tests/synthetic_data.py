"""A synthetic stand-in for ``../shared/data``, so that the suite runs where the real data is not
installed: the pediatric layout (``labels.csv`` + ``images/``) and the two NIH sample layouts
(``Data_Entry_2017_v2020_subset.csv`` + ``images/``), with chest-like images whose labels are
visible in them (so that classifiers, probes and renderers have something to learn).

An image is a bright body with two dark lung fields; a positive label adds bright blotches inside
the lungs (pneumonia; for NIH, each finding has its own blotch position). Patients have one to
three images each. Everything is seeded: the same files every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PEDIATRIC_IMAGES = 480
NIH_IMAGES = 240
NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
]  # fmt: skip


def chest(rng: np.random.Generator, size: int, blotches: list[tuple[float, float]]) -> np.ndarray:
    """One uint8 ``[size, size]`` chest-like image with bright blotches at relative positions."""
    y, x = np.mgrid[0:size, 0:size] / size
    shift_x, shift_y = rng.normal(0, 0.03, 2)
    body = 170 + 40 * np.exp(-(((x - 0.5 - shift_x) / 0.45) ** 2))
    lungs = np.zeros_like(body)
    for cx in (0.33, 0.67):
        lungs += np.exp(-(((x - cx - shift_x) / 0.13) ** 2 + ((y - 0.48 - shift_y) / 0.28) ** 2))
    image = body - 110 * np.clip(lungs, 0, 1)
    for bx, by in blotches:
        cx, cy = bx + rng.normal(0, 0.03), by + rng.normal(0, 0.03)
        image += 70 * np.exp(-(((x - cx) / 0.07) ** 2 + ((y - cy) / 0.07) ** 2))
    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _patients(rng: np.random.Generator, n: int) -> list[int]:
    """A patient index per image, one to three images each."""
    out, patient = [], 0
    while len(out) < n:
        out.extend([patient] * int(rng.integers(1, 4)))
        patient += 1
    return out[:n]


def pediatric(root: Path, n: int = PEDIATRIC_IMAGES) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = ["Image Index,Finding Labels,class,pneumonia_type,patient_key"]
    for i, patient in enumerate(_patients(rng, n)):
        sick = rng.random() < 0.7  # the real set is 74 % pneumonia
        spots = (
            [(rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.65)) for _ in range(2)] if sick else []
        )
        name = f"IM-{patient:04d}-{i:04d}.png"
        Image.fromarray(chest(rng, 224, spots)).save(root / "images" / name)  # as the real set
        finding, kind = ("Pneumonia", "bacteria") if sick else ("No Finding", "none")
        rows.append(f"{name},{finding},{'PNEUMONIA' if sick else 'NORMAL'},{kind},IM-{patient:04d}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def _nih_header() -> str:
    return (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )


def nih(root: Path, *, n: int, size: int, first_patient: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    positions = {name: (0.25 + 0.5 * (j % 4) / 3, 0.3 + 0.4 * (j // 4) / 3)
                 for j, name in enumerate(NIH_FINDINGS)}  # fmt: skip
    rows = [_nih_header()]
    for i, patient in enumerate(_patients(rng, n)):
        count = int(rng.choice([0, 0, 1, 1, 2]))
        findings = sorted(rng.choice(NIH_FINDINGS, size=count, replace=False).tolist())
        name = f"{first_patient + patient:08d}_{i:03d}.png"
        image = chest(rng, size, [positions[f] for f in findings])
        Image.fromarray(image).save(root / "images" / name)
        label = "|".join(findings) or "No Finding"
        rows.append(f"{name},{label},0,{first_patient + patient},50,M,PA,2500,2048,0.168,0.168")
    (root / "Data_Entry_2017_v2020_subset.csv").write_text("\n".join(rows) + "\n")


def make_synthetic_data(root: Path) -> Path:
    """Write the synthetic data folder under ``root`` (a ``shared/data`` stand-in)."""
    root.mkdir(parents=True, exist_ok=True)
    pediatric(root / "pediatric_pneumonia224")
    nih(root / "nih_chestxray14_sample64", n=NIH_IMAGES, size=64, first_patient=1, seed=1)
    nih(root / "nih_chestxray14_sample256", n=NIH_IMAGES // 2, size=128, first_patient=5000, seed=2)
    (root / "README.md").write_text(
        "Synthetic chest-like images made by tests/synthetic_data.py for a run without the real "
        "shared data. Not X-rays.\n"
    )
    return root
