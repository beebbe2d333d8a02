"""The end-to-end audit of released files: correct releases stay within their claim, and every
negative control (a privacy bug injected through monkeypatch, never through library code) is
caught. Tiny flow and few runs: the full audit is `python src/audit.py` (docs/results.md)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_run
from dpglow.audit.task import REPORT_JSON, audit
from dpglow.privacy import LaplaceL1
from dpglow.privacy import latent as latent_module
from dpglow.privatizers.label_release import LabelRelease
from dpglow.privatizers.predict_module import PrivatizeModule

pytestmark = pytest.mark.slow


def _audit(tmp_path, *overrides: str, runs: int = 300) -> dict:
    cfg = compose_run(
        "audit",
        [
            f"audit.runs={runs}",
            "audit.candidates=160",
            "audit.fillers=16",
            "data.max_images=200",
            "batch_size=16",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ],
        tmp_path / "audit",
    )
    report, _ = audit(cfg)
    assert json.loads((tmp_path / "audit" / REPORT_JSON).read_text())["runs"] == runs
    return report


def _label_channel(trained_ckpt, epsilon: float) -> list[str]:
    return [
        f"flow.ckpt_path={trained_ckpt}",
        "privacy=label_channel",
        "privacy.labeler.kind=probe",
        f"epsilon={epsilon}",
    ]


def _subspace(trained_ckpt) -> list[str]:
    return [
        f"flow.ckpt_path={trained_ckpt}",
        "privacy=subspace",
        "privacy.mechanism.radius=1",
        "privacy.render.candidates=1",
        "epsilon=3",
    ]


def test_correct_releases_stay_within_their_claim(tmp_path, trained_ckpt) -> None:
    label = _audit(tmp_path / "label", *_label_channel(trained_ckpt, 1.0))
    assert label["claimed_epsilon"] == 1.0 and label["within_claim"]
    assert label["pair"]["separation"] == 1.0
    latent = _audit(tmp_path / "latent", *_subspace(trained_ckpt))
    assert latent["within_claim"] and latent["pair"]["separation"] > 0.9
    assert latent["epsilon_lower_bound"] > 0.5  # the audit sees the real release, not nothing
    pixels = _audit(tmp_path / "pixels", "privacy=pixel_laplace", "image_size=4", "epsilon=3")
    assert pixels["within_claim"]


def test_the_true_label_passed_to_the_renderer_is_caught(tmp_path, trained_ckpt, monkeypatch):
    def leak(self, y, *, generator, noise_source):
        return y.clone(), self.record(noise_source=noise_source)

    monkeypatch.setattr(LabelRelease, "__call__", leak)
    report = _audit(tmp_path, *_label_channel(trained_ckpt, 1.0))
    assert report["epsilon_lower_bound"] > 1.0 and not report["within_claim"]


def test_sensitivity_r_instead_of_2r_is_caught(tmp_path, trained_ckpt, monkeypatch) -> None:
    calibration = LaplaceL1._calibration

    def half(self, shape, d):
        out = calibration(self, shape, d)
        return out | {"noise_scale": out["noise_scale"] / 2}

    monkeypatch.setattr(LaplaceL1, "_calibration", half)
    report = _audit(tmp_path, *_subspace(trained_ckpt), runs=600)
    assert report["epsilon_lower_bound"] > 3.0


def test_clipping_over_the_batch_is_caught(tmp_path, trained_ckpt, monkeypatch) -> None:
    def batch_ball(u, radius, *, ord):
        norms = torch.linalg.vector_norm(u, ord=ord, dim=1)
        return u * min(1.0, float(radius * len(u) / norms.sum().clamp_min(1e-12)))

    monkeypatch.setattr(latent_module, "scale_into_ball", batch_ball)
    # A small ball: the audited images' statistics lie far outside it, and beside the quiet
    # fillers (public images with their statistic moved to 0) a clip over the batch lets them
    # through (true epsilon several times the claim);
    # released as noised, since a posterior mean over the ball would hide what lies beyond it.
    overrides = [
        o for o in _subspace(trained_ckpt) if not o.startswith(("epsilon", "privacy.mech"))
    ]
    report = _audit(
        tmp_path,
        *overrides,
        "privacy.mechanism.radius=0.05",
        "epsilon=1",
        "privacy.postprocess=none",
        "audit.fillers_per_run=15",  # batches of 16: one audited copy beside 15 quiet fillers
        runs=600,
    )
    assert report["epsilon_lower_bound"] > 1.0 and not report["within_claim"]


def test_a_seeded_generator_reused_across_images_is_caught(tmp_path, monkeypatch) -> None:
    release = PrivatizeModule.release

    def reseeded(self, images, keys, names=None):
        self.generator.manual_seed(1234)  # every batch draws the same noise
        return release(self, images, keys, names)

    monkeypatch.setattr(PrivatizeModule, "release", reseeded)
    report = _audit(tmp_path, "privacy=pixel_laplace", "image_size=4", "epsilon=1")
    # every release of an input is the same image: the bound is as high as the runs allow
    assert report["epsilon_lower_bound"] > 2.0 and not report["within_claim"]


def _dataset_labels(trained_ckpt, epsilon: float) -> list[str]:
    # the data holder's own labels (the pediatric table's Pneumonia column), rendered in one draw
    return [
        *_label_channel(trained_ckpt, epsilon)[:-2],
        "privacy.labeler.kind=dataset",
        "privacy.render.candidates=1",
        f"epsilon={epsilon}",
    ]


def test_the_holders_own_labels_are_audited_through_their_label_table(tmp_path, trained_ckpt):
    report = _audit(tmp_path / "ok", *_dataset_labels(trained_ckpt, 1.0))
    assert report["within_claim"] and report["privatizer"]["labeler"].startswith("dataset:")
    assert report["pair"]["labels"] == {"a": [], "b": ["Pneumonia"]}
    table = (tmp_path / "ok" / "audit" / "b" / "inputs" / "labels.csv").read_text().splitlines()
    assert table[0] == "path,Pneumonia" and table[1] == "000000_a.png,1"
    # the negative control: the true label passed on unprivatized is caught through the files
    leak = _audit_leaking_labels(tmp_path / "leak", *_dataset_labels(trained_ckpt, 1.0))
    assert leak["epsilon_lower_bound"] > 1.0 and not leak["within_claim"]


def _audit_leaking_labels(tmp_path, *overrides: str) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            LabelRelease,
            "__call__",
            lambda self, y, *, generator, noise_source: (
                y.clone(),
                self.record(noise_source=noise_source),
            ),
        )
        return _audit(tmp_path, *overrides)
