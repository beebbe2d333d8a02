"""The refiner's networks, its checkpoint, and a release followed by it (post-processing)."""

from __future__ import annotations

import pytest
import torch

from dpglow.flow import CheckpointError
from dpglow.privacy import OS_ENTROPY, PrivacyRecord
from dpglow.privatizers import Privatizer, RefinedPrivatizer, with_refiner
from dpglow.privatizers.prior import public_record
from dpglow.refiner import REFINER_KEY, PatchDiscriminator, Refiner, load_refiner


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=generator, dtype=torch.uint8)


def _trained_like(refiner: Refiner, seed: int = 1) -> Refiner:
    """The refiner with random (non-zero) last-layer weights, as training would leave them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        refiner.tail.weight.copy_(torch.randn(refiner.tail.weight.shape, generator=generator))
        refiner.tail.weight.mul_(0.05)
    return refiner


class _AddNoise(Privatizer):
    """A stand-in release: each pixel plus a draw from the generator (record: fixed)."""

    name = "add_noise"
    needs_flow = False

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        return public_record(self.name, noise_source=noise_source)

    def describe(self):
        return {"mechanism": self.name, "epsilon": 0.0}

    def __call__(self, images, *, generator, noise_source, names=None):
        noise = torch.randint(-20, 21, images.shape, generator=generator)
        return (images.long() + noise).clamp(0, 255).to(torch.uint8)


def test_an_untrained_refiner_is_exactly_the_identity():
    images = _images()
    refiner = Refiner(channels=8, blocks=2)
    assert torch.equal(refiner.refine(images), images)
    x = torch.rand(3, 1, 16, 16) - 0.5
    assert torch.equal(refiner(x), x)


def test_a_trained_refiner_changes_images_and_keeps_uint8_in_range():
    images = _images()
    refined = _trained_like(Refiner(channels=8, blocks=2)).refine(images)
    assert refined.dtype == torch.uint8 and refined.shape == images.shape
    assert not torch.equal(refined, images)


def test_refiner_refuses_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        Refiner(channels=0)
    with pytest.raises(ValueError, match="blocks must be a positive integer"):
        Refiner(blocks=1.5)
    refiner = Refiner(channels=4, blocks=1)
    with pytest.raises(TypeError, match="uint8"):
        refiner.refine(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 1, S, S\]"):
        refiner(torch.zeros(2, 3, 8, 8))


def test_patch_discriminator_gives_one_logit_per_8x8_patch():
    logits = PatchDiscriminator(channels=4)(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 1, 8, 8)


def _save(path, refiner: Refiner, **meta) -> None:
    section = {
        "net_config": refiner.config,
        "image_size": 32,
        "n_bits": 8,
        "flow_sha256": "f" * 64,
        "flow_path": "/flow.ckpt",
        "temperature": 1.0,
        **meta,
    }
    state = {f"net.{k}": v for k, v in refiner.state_dict().items()}
    state["discriminator.net.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, REFINER_KEY: section}, path)


def test_checkpoint_round_trip(tmp_path):
    refiner = _trained_like(Refiner(channels=8, blocks=2))
    _save(tmp_path / "r.ckpt", refiner)
    loaded, info = load_refiner(tmp_path / "r.ckpt")
    images = _images()
    assert torch.equal(loaded.refine(images), refiner.refine(images))
    assert info["image_size"] == 32 and info["flow_sha256"] == "f" * 64
    assert len(info["sha256"]) == 64 and not loaded.training


def test_checkpoint_errors_say_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match=r"train_refiner\.py"):
        load_refiner(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a dpglow refiner checkpoint"):
        load_refiner(tmp_path / "other.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_refiner(tmp_path / "bad.ckpt")
    torch.save({"state_dict": {}, REFINER_KEY: _AddNoise()}, tmp_path / "code.ckpt")
    with pytest.raises(CheckpointError, match=r"refusing .* pickled objects"):
        load_refiner(tmp_path / "code.ckpt")


def test_refined_release_keeps_the_record_and_refines_the_inner_output(tmp_path):
    refiner = _trained_like(Refiner(channels=8, blocks=2))
    _save(tmp_path / "r.ckpt", refiner)
    inner = _AddNoise()
    refined = with_refiner(inner, str(tmp_path / "r.ckpt"), image_size=32)
    assert isinstance(refined, RefinedPrivatizer)
    assert refined.record().as_dict() == inner.record().as_dict()
    images = _images()
    out = refined(images, generator=torch.Generator().manual_seed(5), noise_source="seeded")
    plain = inner(images, generator=torch.Generator().manual_seed(5), noise_source="seeded")
    assert torch.equal(out, refiner.refine(plain)) and not torch.equal(out, plain)
    described = refined.describe()
    assert described["mechanism"] == "add_noise"
    assert described["refiner"] == str((tmp_path / "r.ckpt").resolve())
    assert len(described["refiner_sha256"]) == 64
    assert set(refined.modules()) == {"refiner"}
    with pytest.raises(ValueError, match="already refined"):
        RefinedPrivatizer(refined, refiner=refiner, refiner_info=refined.refiner_info)


def test_with_refiner_without_a_checkpoint_or_at_another_resolution(tmp_path):
    inner = _AddNoise()
    assert with_refiner(inner, None, image_size=32) is inner
    _save(tmp_path / "r.ckpt", Refiner(channels=4, blocks=1))
    with pytest.raises(CheckpointError, match="trained on 32 px images, this release is 64 px"):
        with_refiner(inner, str(tmp_path / "r.ckpt"), image_size=64)
