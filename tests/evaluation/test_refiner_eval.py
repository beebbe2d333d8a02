"""A refiner trained on public data (the tiny flow's samples, the training split) and releases
followed by it, in the evaluation and in privatize."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_run
from dpglow.flow import file_sha256
from dpglow.refiner import load_refiner
from dpglow.refiner.config import resolve_flow
from evaluation.conftest import DATA
from evaluation.test_evaluate import run_eval  # noqa: F401 (the fixture)


def test_training_scores_realism_on_validation_and_saves_the_refiner(eval_refiner, eval_models):
    ckpt, metrics = eval_refiner
    for key in ("val/realism_auc", "val/realism_gap", "val/realism_auc_unrefined"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["val/realism_gap"] == pytest.approx(abs(metrics["val/realism_auc"] - 0.5))
    refiner, info = load_refiner(ckpt)
    assert info["flow_sha256"] == file_sha256(eval_models["flow"]) and info["image_size"] == 32
    # Trained: the zero-initialised last layer moved, so the refiner is no longer the identity.
    assert refiner.tail.weight.abs().sum() > 0
    assert (ckpt.parent.parent / "splits.csv").is_file()


def test_the_refiner_finds_its_flow_and_refuses_another_resolution(eval_models, tmp_path):
    overrides = [*DATA, f"paths.log_dir={eval_models['log_dir']}"]
    cfg = resolve_flow(compose_run("train_refiner", overrides, tmp_path / "run"))
    # The newest trained flow under log_dir (the tiny flow's run), its best checkpoint.
    found = Path(cfg.flow.ckpt_path)
    assert found.parent == eval_models["flow"].parent and found.is_file()
    assert cfg.image_size == 32
    cfg = compose_run("train_refiner", [*overrides, "image_size=64"], tmp_path / "run")
    with pytest.raises(ValueError, match="drop image_size"):
        resolve_flow(cfg)


def test_a_refined_release_keeps_its_record_and_names_the_refiner(
    run_eval,  # noqa: F811 (the imported fixture)
    eval_refiner,
    tmp_path,
):
    ckpt, _ = eval_refiner
    common = ["privacy=laplace_l1", "privacy.levels=coarsest", "epsilon=10", "noise_seed=3"]
    plain = run_eval(*common, out=tmp_path / "plain")
    refined = run_eval(*common, f"refiner.ckpt_path={ckpt}", out=tmp_path / "refined")
    for key in ("epsilon_per_image", "noise_scale", "d", "mechanism", "private"):
        assert refined[key] == plain[key]
    assert refined["refiner"] == str(ckpt.resolve()) and "refiner" not in plain
    assert refined["refiner_sha256"] == file_sha256(ckpt)
    for key in ("realism/auc", "realism/prior_auc", "u1/retention"):
        assert math.isfinite(refined[key])
    # The refiner changed the released pixels.
    assert refined["fidelity/psnr"] != plain["fidelity/psnr"]


def test_the_realism_prior_samples_of_a_refined_release_are_refined(eval_models, eval_refiner):
    from dpglow.evaluation.realism import prior_samples
    from dpglow.flow import load_flow

    flow, info = load_flow(eval_models["flow"])
    refiner, _ = load_refiner(eval_refiner[0])
    common = dict(n=12, temperature=1.0, noise_seed=5, batch_size=5, device=torch.device("cpu"))
    common |= dict(cache_dir=None, flow_sha256=info["sha256"])
    plain = prior_samples(flow, **common)
    refined = prior_samples(flow, **common, refine=refiner.refine)
    assert refined.dtype == torch.uint8 and refined.shape == plain.shape
    assert torch.equal(refined, refiner.refine(plain)) and not torch.equal(refined, plain)


def test_privatize_writes_refined_images_and_says_so(eval_models, eval_refiner, tmp_path):
    from PIL import Image

    from dpglow.release.task import privatize

    ckpt, _ = eval_refiner
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        pixels = torch.randint(0, 256, (32, 32), generator=torch.Generator().manual_seed(i))
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(src / f"{i}.png")
    outputs = {}
    for name, extra in (("plain", []), ("refined", [f"refiner.ckpt_path={ckpt}"])):
        out = tmp_path / name
        cfg = compose_run(
            "privatize",
            [
                f"flow.ckpt_path={eval_models['flow']}",
                f"input_dir={src}",
                f"output_dir={out}",
                "privacy=laplace_l1",
                "epsilon=10",
                "noise_seed=1",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                *extra,
            ],
            tmp_path / f"run_{name}",
        )
        privatize(cfg)
        outputs[name] = out
    report = json.loads((outputs["refined"] / "privacy_report.json").read_text())
    text = json.dumps(report)
    assert str(ckpt.resolve()) in text and file_sha256(ckpt) in text
    plain_report = json.loads((outputs["plain"] / "privacy_report.json").read_text())
    assert plain_report["record"] == report["record"]
    plain_px, refined_px = (np.asarray(Image.open(outputs[n] / "0.png")) for n in outputs)
    assert plain_px.shape == refined_px.shape and (plain_px != refined_px).any()
