"""Every ``privacy=`` config builds its privatizer; unknown keys are errors; records come first."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dpglow.privacy import noise_generator
from dpglow.privatizers import (
    DPGlowPrivatizer,
    ImagePrivatizer,
    PriorSamples,
    PrivacyConfigError,
    Privatizer,
    build_privatizer,
)
from dpglow.privatizers.predict_module import PrivatizeModule

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "privacy"
# Configs that need files fitted beside a trained flow are built in their own tests.
NEEDS_FILES = {"subspace", "label_channel"}


def _privacy(name: str, **overrides) -> OmegaConf:
    root = OmegaConf.create({"epsilon": 2.0, "delta": 1e-6})
    root.privacy = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(root, f"privacy.{key}", value, force_add=True)
    return root.privacy


@pytest.mark.parametrize(
    "path", [p for p in sorted(CONF_DIR.glob("*.yaml")) if p.stem not in NEEDS_FILES],
    ids=lambda p: p.stem,
)  # fmt: skip
def test_every_config_builds_a_privatizer(path, flow, xray_batch):
    privatizer = build_privatizer(_privacy(path.stem), flow=flow, temperature=0.7)
    assert isinstance(privatizer, Privatizer)
    record = privatizer.record()
    assert record.epsilon_per_image in (2.0, 0.0)
    generator, source = noise_generator(noise_seed=0)
    out = privatizer(xray_batch, generator=generator, noise_source=source)
    assert out.dtype == torch.uint8 and out.shape == xray_batch.shape
    described = privatizer.describe()
    assert described["mechanism"] == record.mechanism


def test_a_key_the_privatizer_does_not_take_is_an_error(flow):
    # dp_pix has no latent levels nor posterior post-processing: never silently ignored.
    with pytest.raises(
        PrivacyConfigError, match=r"privacy\.postprocess.*its keys are privacy\.mechanism"
    ):
        build_privatizer(_privacy("dp_pix", postprocess="none"), flow=flow)
    with pytest.raises(PrivacyConfigError, match=r"privacy\.levels, privacy\.postprocess"):
        build_privatizer(_privacy("laplace_l1", radius=3.0), flow=flow)
    with pytest.raises(PrivacyConfigError, match="come from the task"):
        build_privatizer(_privacy("laplace_l1", temperature=0.5), flow=flow)


def test_latent_privatizers_need_a_flow_and_pixel_ones_a_size(flow):
    with pytest.raises(PrivacyConfigError, match="flow checkpoint"):
        build_privatizer(_privacy("laplace_l1"), flow=None)
    with pytest.raises(PrivacyConfigError, match="image_size"):
        build_privatizer(_privacy("pixel_laplace"), flow=None)
    pixels = build_privatizer(_privacy("pixel_laplace"), image_size=16)
    assert isinstance(pixels, ImagePrivatizer) and pixels.record().d == 16 * 16


def test_record_is_known_before_any_image(flow, xray_batch):
    privatizer = build_privatizer(_privacy("gaussian_l2"), flow=flow)
    assert isinstance(privatizer, DPGlowPrivatizer)
    module = PrivatizeModule(privatizer, noise_keys=lambda b: ["batch"], noise_seed=3)
    assert module.record is None
    module.on_predict_start()
    assert module.record == privatizer.record(noise_source=module.noise_source)
    assert module.record.d == flow.num_dims and not module.record.private


def test_prior_samples_ignore_the_image(flow, xray_batch):
    prior = build_privatizer(_privacy("prior"), flow=flow, temperature=0.7)
    assert isinstance(prior, PriorSamples)
    record = prior.record()
    assert record.epsilon_per_image == 0.0 and record.d == 0 and record.private
    flipped = 255 - xray_batch
    a = prior(xray_batch, **_seeded(11))
    b = prior(flipped, **_seeded(11))
    assert torch.equal(a, b)  # the same draws, whatever the input
    assert not torch.equal(a, prior(xray_batch, **_seeded(12)))


def test_inf_epsilon_config_reproduces_the_image(flow, xray_batch):
    privatizer = build_privatizer(
        _privacy("laplace_l1", postprocess="none", **{"mechanism.epsilon": math.inf}), flow=flow
    )
    out = privatizer(xray_batch, **_seeded(0))
    assert ((out.int() - xray_batch.int()).abs() <= 1).float().mean() > 0.99


def _seeded(seed: int) -> dict:
    generator, source = noise_generator(noise_seed=seed)
    return {"generator": generator, "noise_source": source}
