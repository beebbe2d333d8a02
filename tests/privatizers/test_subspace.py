"""Subspace and label-channel releases: the basis maths, exact complements, accounting, audits."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_run
from dpglow.flow import flatten_latents, load_flow, to_flow_input
from dpglow.privacy import LaplaceL1, RandomizedResponse, noise_generator
from dpglow.privatizers import SubspacePrivatizer, build_privatizer
from dpglow.privatizers.basis import BasisError, basis_file, fit_basis, load_basis
from dpglow.privatizers.fit import fit_and_save
from privacy.audit import epsilon_lower_bound

# ----------------------------------------------------------------------------- basis maths


def _planted(n=4000, d=12, seed=0):
    """N(0, I) latents whose class means differ along e_3 (and a high-variance axis e_7)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).float()
    u = torch.randn(n, d, generator=g)
    u[:, 3] += 1.5 * (2 * y - 1)
    u[:, 7] *= 3.0
    return u, y[:, None]


def test_supervised_direction_recovers_the_planted_axis():
    u, y = _planted()
    basis = fit_basis(u, y, kind="supervised", k=1, pathologies=["P"], levels=[0], flow_sha256="x")
    row = basis.matrix[0]
    assert abs(float(row[3])) > 0.98 and float(row.norm()) == pytest.approx(1, abs=1e-6)
    a = u @ row
    assert float(a[y[:, 0] > 0].mean()) > float(a[y[:, 0] < 1].mean())  # positives higher
    assert basis.meta["probe_train_auc"]["P"] > 0.9
    # The Bayes threshold on the probe classifies most training points right.
    pred = (u @ basis.probes[0] > basis.probe_thresholds[0]).float()
    assert float((pred == y[:, 0]).float().mean()) > 0.85


def test_pca_and_combined_bases_are_orthonormal():
    u, y = _planted()
    pca = fit_basis(u, y, kind="pca", k=2, pathologies=["P"], levels=[0], flow_sha256="x")
    assert abs(float(pca.matrix[0, 7])) > 0.98  # the high-variance axis comes first
    both = fit_basis(
        u, y, kind="supervised+pca", k=4, pathologies=["P"], levels=[0], flow_sha256="x"
    )
    gram = both.matrix @ both.matrix.T
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)
    assert both.directions == ["P", "pc0", "pc1", "pc2"]
    assert abs(float(both.matrix[0, 3])) > 0.98 and abs(float(both.matrix[1, 7])) > 0.98
    with pytest.raises(BasisError, match="supervised\\+pca"):
        fit_basis(u, y, kind="supervised", k=2, pathologies=["P"], levels=[0], flow_sha256="x")
    with pytest.raises(BasisError, match="kind=pca"):
        fit_basis(u, torch.zeros_like(y), kind="supervised", k=1, pathologies=["P"],
                  levels=[0], flow_sha256="x")  # fmt: skip


def test_basis_file_round_trip_and_flow_check(tmp_path):
    u, y = _planted()
    basis = fit_basis(u, y, kind="supervised+pca", k=3, pathologies=["P"], levels=[0],
                      flow_sha256="abc")  # fmt: skip
    path = basis.save(tmp_path / "b.pt")
    again = load_basis(path, flow_sha256="abc")
    assert torch.equal(again.matrix, basis.matrix) and again.directions == basis.directions
    assert again.sha256 == basis.sha256 and len(again.sha256) == 64
    with pytest.raises(BasisError, match="another flow"):
        load_basis(path, flow_sha256="def")


# ----------------------------------------------------------------------------- on a trained flow


@pytest.fixture(scope="module")
def fitted(trained_ckpt, tmp_path_factory):
    """A supervised k=1 and a supervised+pca k=3 basis of the coarsest level, on the flow's
    training split (the fixture flow's data settings)."""
    cache = trained_ckpt.parent.parent.parent / "cache"
    cfg = compose_run(
        "fit_basis",
        [f"flow.ckpt_path={trained_ckpt}", "data.max_images=200", f"paths.cache_dir={cache}"],
        tmp_path_factory.mktemp("fit"),
    )
    flow, info = load_flow(trained_ckpt)
    fit_and_save(cfg, flow, info, kind="supervised", k=1, levels="coarsest", min_count=20)
    fit_and_save(cfg, flow, info, kind="supervised+pca", k=3, levels="coarsest", min_count=20)
    return flow, info


def _subspace(flow, info, **overrides):
    root = OmegaConf.create({"epsilon": 4.0})
    root.privacy = OmegaConf.load("conf/privacy/subspace.yaml")
    for key, value in overrides.items():
        OmegaConf.update(root, f"privacy.{key}", value, force_add=True)
    return build_privatizer(root.privacy, flow=flow, flow_info=info, temperature=0.5)


def _seeded(seed):
    generator, source = noise_generator(noise_seed=seed)
    return {"generator": generator, "noise_source": source}


def _captured_latents(privatizer, images, seed, monkeypatch):
    seen = {}
    decode = privatizer.flow.decode

    def spy(latents, **kw):
        seen["latents"] = [t.clone() for t in latents]
        return decode(latents, **kw)

    monkeypatch.setattr(privatizer.flow, "decode", spy)
    privatizer(images, **_seeded(seed))
    monkeypatch.setattr(privatizer.flow, "decode", decode)
    return seen["latents"]


def test_basis_is_saved_beside_the_flow_and_recorded(fitted):
    flow, info = fitted
    path = basis_file(info["path"], kind="supervised", k=1, levels=[len(flow.levels) - 1])
    assert path.is_file() and path.parent.name == "bases"
    privatizer = _subspace(flow, info)
    assert isinstance(privatizer, SubspacePrivatizer)
    record = privatizer.record()
    assert record.d == 1 and record.epsilon_per_image == 4.0 and record.mechanism == "laplace_l1"
    described = privatizer.describe()
    assert described["basis_sha256"] == load_basis(path).sha256 and described["k"] == 1


def test_released_projection_and_fresh_complement(fitted, xray_batch, monkeypatch):
    flow, info = fitted
    privatizer = _subspace(flow, info, postprocess="none", **{"mechanism.radius": 1e6,
                                                              "epsilon": math.inf})  # fmt: skip
    images = xray_batch[:6]
    latents = flow.encode(to_flow_input(images))
    top = len(flow.levels) - 1
    P = privatizer.matrix
    a = flatten_latents([latents[top]]) @ P.T
    released = _captured_latents(privatizer, images, 1, monkeypatch)
    u = flatten_latents([released[top]])
    # epsilon = inf, no post-processing: the projection is released exactly ...
    assert torch.allclose(u @ P.T, a, atol=1e-4)
    # ... and the rest does not depend on the image: same draws for other images.
    other = _captured_latents(privatizer, 255 - images, 1, monkeypatch)
    rest = u - (u @ P.T) @ P
    rest_other = flatten_latents([other[top]]) - (flatten_latents([other[top]]) @ P.T) @ P
    assert torch.allclose(rest, rest_other, atol=1e-5)
    for level in range(top):
        assert torch.equal(released[level], other[level])
    assert float(rest.std()) == pytest.approx(0.5, rel=0.2)  # temperature 0.5


def test_other_levels_temperature_draws_only_the_unspanned_levels(fitted, xray_batch, monkeypatch):
    flow, info = fitted
    # One rendering per image (no selection), so that both see the same draws.
    settings = {
        "postprocess": "none", "mechanism.radius": 1e6, "epsilon": math.inf,
        "render.candidates": 1,
    }  # fmt: skip
    base = _subspace(flow, info, **settings)  # temperature 0.5 everywhere
    hot = _subspace(flow, info, other_levels_temperature=1.5, **settings)
    assert hot.describe()["other_levels_temperature"] == 1.5
    assert base.describe()["other_levels_temperature"] == 0.5  # null: the task's temperature
    # Post-processing only: the privacy record is the same.
    assert hot.record().as_dict() == base.record().as_dict()
    images = xray_batch[:6]
    top = len(flow.levels) - 1
    cold_latents = _captured_latents(base, images, 3, monkeypatch)
    hot_latents = _captured_latents(hot, images, 3, monkeypatch)
    # The basis' level (released projection and its fresh complement) is untouched ...
    assert torch.allclose(hot_latents[top], cold_latents[top], atol=1e-6)
    # ... and every other level is the same standard-normal draw at 1.5 instead of 0.5.
    for level in range(top):
        assert torch.allclose(hot_latents[level], 3.0 * cold_latents[level], atol=1e-5)
        assert float(hot_latents[level].std()) == pytest.approx(1.5, rel=0.1)
    with pytest.raises(ValueError, match="temperature"):
        _subspace(flow, info, other_levels_temperature=0.0)


def test_public_posterior_mean_is_bayes_over_training_points(fitted):
    flow, info = fitted
    privatizer = _subspace(flow, info)
    train = privatizer.basis.train_projections.double()
    noisy = torch.tensor([[0.3], [-1.7]])
    got = privatizer._estimate(noisy, None, None, "cpu")
    b = privatizer.record().noise_scale
    assert b == pytest.approx(2 * 2.0 / 4.0)  # Laplace(2R / epsilon)
    q = torch.quantile(train[:, 0], torch.tensor([0.05, 0.95], dtype=torch.float64))
    center = float(q.mean())  # the middle of the public projections' range
    bounded = (train - center).clamp(-2.0, 2.0)  # the L1 ball in R^1 with radius 2
    w = torch.softmax(-(noisy.double() - bounded.T).abs() / b, dim=1)
    assert torch.allclose(got.double(), w @ train, atol=1e-5)


def test_label_channel_composes_and_renders(fitted, xray_batch):
    flow, info = fitted
    root = OmegaConf.create({"epsilon": 3.0})
    root.privacy = OmegaConf.load("conf/privacy/label_channel.yaml")
    OmegaConf.update(root, "privacy.labeler.kind", "probe")  # the basis' latent probe
    OmegaConf.update(root, "privacy.label_fraction", 0.7)
    OmegaConf.update(root, "privacy.postprocess", "public_posterior_mean")
    # The latent part on the label basis (not the detail channel's energy basis).
    OmegaConf.update(root, "privacy.detail", None)
    OmegaConf.update(
        root, "privacy.mechanism", {"_target_": "dpglow.privacy.LaplaceL1", "_partial_": True}
    )
    privatizer = build_privatizer(root.privacy, flow=flow, flow_info=info, temperature=0.5)
    record = privatizer.record()
    assert record.mechanism == "randomized_response+laplace_l1"
    assert record.epsilon_per_image == pytest.approx(3.0)
    assert record.parts["labels"]["epsilon_per_image"] == pytest.approx(2.1)
    assert record.parts["latent"]["epsilon_per_image"] == pytest.approx(0.9)
    out = privatizer(xray_batch[:4], **_seeded(0))
    assert out.dtype == torch.uint8 and out.shape == xray_batch[:4].shape
    OmegaConf.update(root, "privacy.label_fraction", 1.0)
    only = build_privatizer(root.privacy, flow=flow, flow_info=info, temperature=0.5)
    assert only.record().mechanism == "randomized_response" and only.name == "label_channel"
    # Label only: a^ is the public mean projection of the training points of the released class.
    est = only._estimate(None, torch.tensor([[1.0], [0.0]]), None, "cpu")
    a, y = only.basis.train_projections[:, 0], only._prior_labels[:, 0]
    keep = 1 - only.label_mechanism.flip_probabilities[0]
    for row, label in ((0, 1.0), (1, 0.0)):
        w = torch.where(y == label, keep, 1 - keep)
        assert float(est[row, 0]) == pytest.approx(float((w * a).sum() / w.sum()), rel=1e-4)
    # released_label_mean renders the released class: the class-conditional public mean.
    OmegaConf.update(root, "privacy.postprocess", "released_label_mean")
    rendered = build_privatizer(root.privacy, flow=flow, flow_info=info, temperature=0.5)
    est = rendered._estimate(None, torch.tensor([[1.0], [0.0]]), None, "cpu")
    for row, label in ((0, 1.0), (1, 0.0)):
        assert float(est[row, 0]) == pytest.approx(float(a[y == label].mean()), rel=1e-4)


def test_a_label_release_renders_the_guided_estimate_without_encoding(
    fitted, xray_batch, monkeypatch
):
    """Labels alone, by a labeler that reads the image (not the latents): the image is never
    encoded, and each candidate's projection on the label direction is c + s (a^ - c) for
    guidance s, a^ the public mean of the released class."""
    flow, info = fitted
    root = OmegaConf.create({"epsilon": 3.0})
    root.privacy = OmegaConf.load("conf/privacy/label_channel.yaml")
    OmegaConf.update(root, "privacy.labeler.kind", "probe")
    render = {"candidates": 1, "guidance": 2.5, "redraw_saturated": False}
    OmegaConf.update(root, "privacy.render", render)
    privatizer = build_privatizer(root.privacy, flow=flow, flow_info=info, temperature=1.0)

    class ImageLabeler:  # stands for the release classifier: a function of the pixels
        reads_latents = False

        def __call__(self, images, latents, names):
            assert latents is None
            return (torch.arange(len(images)) % 2).float()[:, None]

    released = []
    mechanism = privatizer.label_mechanism

    class Recorded:
        flip_probabilities = mechanism.flip_probabilities

        def __call__(self, y, **kwargs):
            out = mechanism(y, **kwargs)
            released.append(out[0])
            return out

    privatizer.labeler, privatizer.label_mechanism = ImageLabeler(), Recorded()

    def no_encoding(*args, **kwargs):
        raise AssertionError("a release of labels alone encoded the image")

    monkeypatch.setattr(flow, "encode", no_encoding)
    latents = _captured_latents(privatizer, xray_batch[:6], 3, monkeypatch)
    got = flatten_latents([latents[i] for i in privatizer.levels]) @ privatizer.matrix.T
    a_hat = privatizer._estimate(None, released[0], None, "cpu")
    expected = privatizer.center + 2.5 * (a_hat - privatizer.center)
    assert torch.allclose(got, expected, atol=1e-4)
    # the two released classes land 2.5 times further apart than their public means
    ones, zeros = released[0][:, 0] == 1, released[0][:, 0] == 0
    assert ones.any() and zeros.any()
    gap = float(got[ones, 0].mean() - got[zeros, 0].mean())
    public_gap = float(a_hat[ones, 0].mean() - a_hat[zeros, 0].mean())
    assert gap == pytest.approx(2.5 * public_gap, rel=1e-4)

    # An image whose guided candidates all carry a saturated patch is drawn again from the
    # unguided estimate a^ itself.
    privatizer.renderer.redraw_saturated = True
    monkeypatch.setattr(
        "dpglow.privatizers.render.saturated_patches", lambda images: torch.ones(len(images))
    )
    decoded = []
    decode = flow.decode

    def spy(latents, **kw):
        decoded.append(flatten_latents([latents[i] for i in privatizer.levels]))
        return decode(latents, **kw)

    monkeypatch.setattr(flow, "decode", spy)
    released.clear()
    privatizer(xray_batch[:6], **_seeded(4))
    a_hat = privatizer._estimate(None, released[0], None, "cpu")
    guided = privatizer.center + 2.5 * (a_hat - privatizer.center)
    assert len(decoded) == 2  # one candidate each, then one fallback draw each
    assert torch.allclose(decoded[0] @ privatizer.matrix.T, guided, atol=1e-4)
    assert torch.allclose(decoded[1] @ privatizer.matrix.T, a_hat, atol=1e-4)


def test_missing_basis_names_the_command(trained_ckpt):
    flow, info = load_flow(trained_ckpt)
    with pytest.raises(BasisError, match=r"fit_basis\.py"):
        _subspace(flow, info, **{"basis.k": 7})


def test_audit_subspace_release(fitted):
    """The randomised stage of privacy=subspace (its own mechanism on P u), for the two latents
    whose projections are furthest apart after clipping; and a half-noise control."""
    flow, info = fitted
    privatizer = _subspace(flow, info, epsilon=1.0)
    P = privatizer.matrix
    u_a, u_b = 10 * P[0], -10 * P[0]  # projections +10 and -10, clipped to +-2
    n = 400_000
    gen = noise_generator(noise_seed=5)[0]

    def draws(u, mechanism):
        a = (u[None] @ P.T).expand(n, 1).contiguous()
        return mechanism(a, generator=gen)[0][:, 0]

    thresholds = [1.5, 2.0, 2.5, 3.0, 4.0]
    bound = epsilon_lower_bound(draws(u_a, privatizer.mechanism), draws(u_b, privatizer.mechanism),
                                thresholds)  # fmt: skip
    assert 0.8 < bound <= 1.0

    class HalfNoise(LaplaceL1):  # samples half the noise it records (true epsilon doubled)
        def _calibration(self, shape, d):
            out = super()._calibration(shape, d)
            return out | {"noise_scale": out["noise_scale"] / 2}

    control = HalfNoise(epsilon=1.0, radius=2.0)
    assert epsilon_lower_bound(draws(u_a, control), draws(u_b, control), thresholds) > 1.0


def test_label_channel_randomized_response_stage_audit():
    """The label channel's randomised stage as configured (one label at 0.7 of epsilon 3)."""
    rr = RandomizedResponse(epsilon=0.7 * 3.0, num_labels=1)
    n = 400_000
    gen = noise_generator(noise_seed=9)[0]
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    bound = epsilon_lower_bound(rr(ones, generator=gen)[0][:, 0], rr(zeros, generator=gen)[0][:, 0],
                                [0.5])  # fmt: skip
    assert 0.8 * 2.1 < bound <= 2.1


def test_the_budget_split_sums_to_epsilon_and_caps_the_labels():
    from dpglow.privatizers.budget import split_budget

    labels, latent = split_budget(3.0, label_fraction=0.8, max_label_epsilon=None)
    assert (labels, latent) == pytest.approx((2.4, 0.6))
    assert split_budget(10.0, label_fraction=1.0, max_label_epsilon=6) == (6.0, 4.0)
    assert split_budget(5.0, label_fraction=1.0, max_label_epsilon=6) == (5.0, 0.0)
    assert split_budget(math.inf, label_fraction=0.0, max_label_epsilon=6) == (0.0, math.inf)
    with pytest.raises(ValueError, match="max_label_epsilon"):
        split_budget(1.0, label_fraction=1.0, max_label_epsilon=0)
