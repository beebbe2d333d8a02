"""``data=chexpert``: the default privatizer releases a CheXpert-layout folder with the data
holder's own labels (``labeler.kind=dataset``): 13 findings go through the label-set mechanism,
uncertain (-1) and blank labels by the stated rule. The layout is synthetic (real CheXpert
images are not here); a tiny flow is trained on it for a few steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import compose_run, tiny_overrides
from data.fixtures import CHEXPERT_COLUMNS
from dpglow.data.sources.chexpert import CHEXPERT_PATHOLOGIES

pytestmark = pytest.mark.slow
CELLS = ((0.15, "1.0"), (0.2, "-1.0"), (0.5, ""), (1.0, "0.0"))


def _chexpert(root, patients: int = 40) -> None:
    """``CheXpert-v1.0-small/{train,valid}.csv`` and frontal JPEGs: a few findings per image,
    some uncertain (-1) or blank."""
    rng = np.random.default_rng(0)
    rows = {"train": [], "valid": []}
    findings = CHEXPERT_COLUMNS[5:]
    for p in range(patients):
        split = "valid" if p % 5 == 0 else "train"
        rel = f"{split}/patient{p:05d}/study1/view1_frontal.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(40, 200, (48, 48), dtype=np.uint8)
        Image.fromarray(pixels).convert("RGB").save(root / rel, quality=95)
        values = {}
        for name in findings:
            draw = rng.random()
            values[name] = (
                "1.0" if draw < 0.15 else "-1.0" if draw < 0.2 else "" if draw < 0.5 else "0.0"
            )
        base = {"Path": f"CheXpert-v1.0-small/{rel}", "Frontal/Lateral": "Frontal", "AP/PA": "AP"}
        cells = {**base, **values}
        rows[split].append(",".join(cells.get(c, "") for c in CHEXPERT_COLUMNS))
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text(",".join(CHEXPERT_COLUMNS) + "\n" + "\n".join(lines))


def test_chexpert_layout_released_with_its_own_labels(tmp_path) -> None:
    from dpglow.privatizers.task import fit_basis
    from dpglow.release.task import privatize
    from dpglow.training.task import train

    root = tmp_path / "CheXpert-v1.0-small"
    _chexpert(root)
    data = ["data=chexpert", f"data.root={root}", "data.max_images=null", "data.val_fraction=0.2"]
    cfg = compose_run(
        "train", [*tiny_overrides(tmp_path), *data, "data.max_images=null", "test=false"],
        tmp_path / "flow",
    )  # fmt: skip
    train(cfg)
    ckpt = tmp_path / "flow" / "checkpoints" / "last.ckpt"
    basis = compose_run(
        "fit_basis",
        [f"flow.ckpt_path={ckpt}", *data, "basis.kind=pca", "basis.k=1"],
        tmp_path / "basis",
    )
    basis_path = fit_basis(basis)[0]["path"]
    source = f"{{_target_: dpglow.data.CheXpertSource, root: '{root}'}}"
    out = tmp_path / "release"
    run = compose_run(
        "privatize",
        [
            f"flow.ckpt_path={ckpt}",
            f"input_dir={root}",
            f"output_dir={out}",
            "epsilon=3",
            "privacy.labeler.kind=dataset",
            f"privacy.labeler.source={source}",
            "privacy.basis.kind=pca",
            f"privacy.basis.path={basis_path}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path / "run",
    )
    counts, _ = privatize(run)
    assert counts["ok"] == 40 and counts["failed"] == 0
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["record"]["mechanism"] == "label_set_response"
    assert report["record"]["d"] == len(CHEXPERT_PATHOLOGIES) == 13
    assert report["record"]["epsilon_per_image"] == 3.0 and report["record"]["private"]
    privatizer = report["settings"]["privatizer"]
    assert privatizer["labeler"].startswith("dataset:CheXpertSource")
    assert len(privatizer["label_domain_sha256"]) == 64
    assert (out / "train/patient00001/study1/view1_frontal.png").is_file()
