"""The classifier's input contract, loss, offline behaviour, and train_classifier.py end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_run, run_entry
from dpglow.classifier import ClassifierModule, PretrainedWeightsError, to_xrv_input
from dpglow.classifier.module import masked_bce
from dpglow.flow import to_flow_input

TINY = ["model.growth_rate=4", "model.block_config=[1,1,1,1]", "model.num_init_features=8"]


def test_uint8_contract_matches_torchxrayvision_normalize():
    import torchxrayvision as xrv

    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    expected = xrv.utils.normalize(images.numpy(), 255)
    np.testing.assert_allclose(to_xrv_input(images).numpy(), expected, rtol=0, atol=1e-3)


def test_flow_range_maps_to_the_same_scale():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8).expand(1, 1, 3, 3).contiguous()
    from_flow = to_xrv_input(to_flow_input(images))
    from_uint8 = to_xrv_input(images)
    # Bin centres sit half a level (2048 / 256 / 2 = 4 units) from the 0..255 grid points.
    assert (from_flow - from_uint8).abs().max() <= 4.01
    ends = to_xrv_input(torch.tensor([[-0.5, 0.5], [0.5, -0.5]]).view(1, 1, 2, 2))
    assert ends.flatten().tolist() == [-1024.0, 1024.0, 1024.0, -1024.0]


def test_contract_crops_resizes_and_validates():
    x = torch.zeros(1, 1, 40, 60, dtype=torch.uint8)
    x[..., :, :10] = 255  # only in the left margin, which the centre crop removes
    out = to_xrv_input(x, resolution=20)
    assert out.shape == (1, 1, 20, 20) and out.max().item() == -1024.0
    with pytest.raises(ValueError, match="grayscale"):
        to_xrv_input(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError):
        to_xrv_input(torch.zeros(1, 1, 8, 8, dtype=torch.int32))


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    torch.testing.assert_close(masked_bce(logits, labels), expected)
    assert masked_bce(logits, torch.full_like(labels, float("nan"))).item() == 0.0


def test_pretrained_weights_offline_say_what_to_do(monkeypatch):
    import torchxrayvision as xrv

    def offline(weights):  # what torchxrayvision raises when the download cannot connect
        raise ConnectionError(f"cannot reach the server for {weights}")

    monkeypatch.setattr(xrv.models, "get_model", offline)
    with pytest.raises(PretrainedWeightsError, match=r"train_classifier\.py"):
        ClassifierModule(pathologies=["Pneumonia"], weights="densenet121-res224-chex")


def test_pretrained_weights_missing_a_pathology_are_refused(monkeypatch):
    import torchxrayvision as xrv

    class Pretrained(torch.nn.Module):
        pathologies = ("Atelectasis", "", "Pneumonia")  # "": an output these weights never saw

    monkeypatch.setattr(xrv.models, "get_model", lambda weights: Pretrained())
    with pytest.raises(PretrainedWeightsError, match=r"no output for 'Effusion'"):
        ClassifierModule(pathologies=["Pneumonia", "Effusion"], weights="densenet121-res224-chex")


def test_own_architecture_outputs_one_logit_per_pathology():
    model = ClassifierModule(
        pathologies=["Pneumonia", "Effusion"], image_size=32, growth_rate=4,
        block_config=(1, 1, 1, 1), num_init_features=8,
    )  # fmt: skip
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    assert model(images).shape == (3, 2)
    assert model.embed(images).shape[0] == 3
    with pytest.raises(ValueError, match="labelled data"):
        ClassifierModule(pathologies=[])


def test_train_classifier_entry_point(tmp_path, data_dir):
    from hydra.utils import instantiate

    from dpglow.metrics import auc_per_pathology

    overrides = [
        "data=pediatric", "data.max_images=80", "data.batch_size=8", "model.image_size=32", *TINY,
        "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.enable_progress_bar=false", "logger=csv", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    proc = run_entry("train_classifier.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "test/auc_Pneumonia" in summary["metrics"] and "val/auc_mean" in summary["metrics"]
    # The reported test AUC is the one the saved best checkpoint scores on the test split.
    module = ClassifierModule.load_from_checkpoint(
        summary["best_checkpoint"], map_location="cpu", weights_only=True
    ).eval()
    datamodule = instantiate(compose_run("train_classifier", overrides, tmp_path / "again").data)
    datamodule.setup("test")
    test = datamodule.dataset("test")
    with torch.no_grad():
        scores = module(test.images).float()
    auc = auc_per_pathology(scores, test.labels, module.pathologies)["Pneumonia"]
    assert auc == pytest.approx(summary["metrics"]["test/auc_Pneumonia"], abs=1e-4)


def test_train_classifier_refuses_unlabelled_data(tmp_path, gray_images):
    from hydra.errors import InstantiationException

    from dpglow.training.task import train

    overrides = [
        "data=folder", f"data.root={gray_images[0].parent}", *TINY, "debug=fast_dev_run",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    with pytest.raises(InstantiationException, match="labelled data"):  # as the CLI shows it
        train(compose_run("train_classifier", overrides, tmp_path / "run"))
