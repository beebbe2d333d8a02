"""Real X-rays at the tiny test flow's resolution (the flow itself: tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from dpglow.data import default_data_dir


@pytest.fixture(scope="session")
def xray_batch(flow) -> torch.Tensor:
    from dpglow.data import read_image

    paths = sorted((default_data_dir() / "pediatric_pneumonia224" / "images").glob("*.png"))[:16]
    return torch.stack([torch.tensor(read_image(p, flow.image_size))[None] for p in paths])
