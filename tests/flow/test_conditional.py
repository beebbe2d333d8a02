"""Class-conditional Glow (num_conditions > 0): inverse, log-density, prior, errors; and that an
unconditional Glow is the model it was before conditioning existed."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.flow import Glow, flatten_latents, unflatten_latents
from dpglow.flow.conditioning import LOG_SCALE_BOUND

BASE = dict(image_size=8, num_levels=2, depth=2, hidden_channels=16)


def _perturbed(model: Glow, *, label_scale: float = 0.0) -> Glow:
    """ActNorm initialised from data, every parameter moved off its (identity) initialisation,
    and the label priors' zero-initialised weights by ``label_scale`` more."""
    model.initialize(torch.rand(32, 1, 8, 8) - 0.5)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            if "label_prior.linear" in name:
                p.add_(torch.randn(p.shape, generator=gen) * label_scale)
    return model


def _tiny(**kw) -> Glow:
    torch.manual_seed(0)
    return _perturbed(Glow(**BASE | kw))


def _conditional(m: int = 3, *, label_scale: float = 0.5, **kw) -> Glow:
    torch.manual_seed(0)
    return _perturbed(Glow(**BASE | kw, num_conditions=m), label_scale=label_scale)


def _unconditional_twin(model: Glow) -> Glow:
    """The same flow without its label priors (same weights everywhere else)."""
    config = {
        k: v
        for k, v in model.config.items()
        if k not in ("num_conditions", "condition_split_priors")
    }
    twin = Glow(**config).to(next(model.parameters()).dtype)
    state = {k: v for k, v in model.state_dict().items() if ".label_prior." not in k}
    twin.load_state_dict(state)
    return twin


def _normal_logpdf(v: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (v * v + math.log(2 * math.pi))).flatten(1).sum(1)


def _labels(n: int, m: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, m, generator=torch.Generator().manual_seed(seed))


PRIORS = [
    dict(split_prior="fixed"),
    dict(split_prior="learned"),
    dict(split_prior="fixed", condition_split_priors=True),
    dict(split_prior="learned", condition_split_priors=True),
]


@pytest.mark.parametrize("kw", PRIORS)
def test_conditional_encode_decode_is_exact(kw):
    model = _conditional(**kw)
    x = torch.rand(6, 1, 8, 8) - 0.5
    y = _labels(6, 3)
    y[:3] = y[:3].round()  # binary and soft labels
    latents = model.encode(x, y=y)
    assert [tuple(u.shape[1:]) for u in latents] == model.latent_shapes
    torch.testing.assert_close(model.decode(latents, y=y), x, atol=1e-5, rtol=0)
    # The labels matter: decoding with other labels gives another image.
    assert (model.decode(latents, y=1 - y) - x).abs().amax() > 1e-2


def test_log_prob_is_the_unconditional_one_with_the_top_prior_replaced():
    """log p(x | y) = log p_uncond(x) - log N(z; 0, 1) + log N(u; 0, 1) - sum log sigma(y), with
    u = (z - mu(y)) / sigma(y) and (mu, log sigma) computed by hand from the linear map."""
    model = _conditional(m=3).double()
    twin = _unconditional_twin(model)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) - 0.5
    y = _labels(4, 3).double()
    z_latents = twin.encode(x)
    z = z_latents[-1]
    prior = model.levels[-1].label_prior
    params = (y @ prior.linear.weight.T + prior.linear.bias) * torch.exp(3 * prior.log_gain)
    n = z[0].numel()
    mean = params[:, :n].reshape(z.shape)
    log_sd = (LOG_SCALE_BOUND * torch.tanh(params[:, n:] / LOG_SCALE_BOUND)).reshape(z.shape)
    u = (z - mean) / torch.exp(log_sd)
    expected = twin.log_prob(x) - _normal_logpdf(z) + _normal_logpdf(u) - log_sd.flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x, y=y), expected, atol=1e-10, rtol=1e-10)
    latents = model.encode(x, y=y)
    torch.testing.assert_close(latents[-1], u, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(latents[0], z_latents[0], atol=0, rtol=0)  # split level untouched
    assert log_sd.abs().amax() > 0.1 and mean.abs().amax() > 0.1  # the test is not vacuous


@pytest.mark.parametrize("kw", [PRIORS[0], PRIORS[3]])
def test_conditional_log_prob_equals_change_of_variables_by_brute_force(kw):
    """log p(x | y) = sum log N(u) + log|det du/dx| for fixed y, Jacobian by autograd."""
    model = _conditional(**kw).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) - 0.5
    y = _labels(1, 3).double()

    def flat_u(v):
        return flatten_latents(model.encode(v.view(1, 1, 8, 8), y=y))[0]

    jac = torch.autograd.functional.jacobian(flat_u, x.flatten())
    u = flat_u(x.flatten())
    expected = (-0.5 * (u**2 + math.log(2 * math.pi))).sum() + torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(model.log_prob(x, y=y)[0], expected, atol=1e-6, rtol=1e-8)


def test_labels_change_log_prob_only_once_the_linear_map_is_non_zero():
    torch.manual_seed(0)
    fresh = Glow(**BASE, num_conditions=2)
    fresh.initialize(torch.rand(32, 1, 8, 8) - 0.5)
    x = torch.rand(5, 1, 8, 8) - 0.5
    zeros, ones = torch.zeros(5, 2), torch.ones(5, 2)
    # Zero-initialised: the prior is N(0, 1) whatever y, and the flow is its unconditional twin.
    torch.testing.assert_close(fresh.log_prob(x, y=zeros), fresh.log_prob(x, y=ones))
    torch.testing.assert_close(fresh.log_prob(x, y=ones), _unconditional_twin(fresh).log_prob(x))

    model = _conditional(m=2)
    lp = [model.log_prob(x, y=y) for y in (zeros, ones, torch.tensor([[1.0, 0.0]]).expand(5, 2))]
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert ((lp[a] - lp[b]).abs() > 1e-2).all(), (a, b)


def test_samples_have_standard_normal_top_latents_under_their_own_labels():
    """sample(n, y=y) draws the top latent z from N(mu(y), sigma(y)): encoded with the same y
    its standardised latent u is N(0, 1) per element; with other labels it is not."""
    model = _conditional(m=2, label_scale=1.0)
    n = 2000
    y = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    other = torch.tensor([[0.0, 1.0]]).expand(n, 2)
    x = model.sample(n, temperature=1.0, y=y, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        u = model.encode(x, y=y)[-1].flatten(1)
        u_other = model.encode(x, y=other)[-1].flatten(1)
        z = _unconditional_twin(model).encode(x)[-1].flatten(1)
        mean, log_sd = model.levels[-1].label_prior(y[:1])
    # 5 standard errors per element (32 elements): a false failure has probability ~1e-5.
    mean_tol, std_tol = 5 / math.sqrt(n), 5 / math.sqrt(2 * n)
    assert u.mean(0).abs().amax() < mean_tol
    assert (u.std(0) - 1).abs().amax() < std_tol
    # The raw latent follows N(mu(y), sigma(y)), which is far from N(0, 1) here ...
    torch.testing.assert_close(z.mean(0), mean.flatten(), atol=5 * z.std(0).amax() / n**0.5, rtol=0)
    torch.testing.assert_close(z.std(0), log_sd.exp().flatten(), atol=0, rtol=std_tol)
    assert (z.mean(0).abs().amax() > 10 * mean_tol) and ((z.std(0) - 1).abs().amax() > 10 * std_tol)
    # ... and standardising with another label vector fails the same check by a wide margin.
    assert u_other.mean(0).abs().amax() > 10 * mean_tol


def test_huge_latents_and_extreme_label_weights_decode_to_finite_images():
    model = _conditional(m=2, label_scale=1.0, condition_split_priors=True)
    with torch.no_grad():
        for level in model.levels:
            level.label_prior.log_gain.fill_(3.0)  # raw log sigma ~ e^9: far past the bound
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    for scale in (10.0, 1e2, 1e3):
        latents = [torch.randn((2, *s)) * scale for s in model.latent_shapes]
        assert torch.isfinite(model.decode(latents, y=y)).all(), scale
    _, log_sd = model.levels[-1].label_prior(y)
    assert log_sd.abs().amax() <= LOG_SCALE_BOUND


# -- an unconditional flow is unchanged --------------------------------------------------------
STEP_KEYS = [
    "actnorm.initialized", "actnorm.loc", "actnorm.log_scale", "coupling.net.0.bias",
    "coupling.net.0.weight", "coupling.net.2.bias", "coupling.net.2.weight",
    "coupling.net.4.conv.bias", "coupling.net.4.conv.weight", "coupling.net.4.log_gain",
    "invconv.eye", "invconv.log_s", "invconv.lower", "invconv.lower_mask", "invconv.perm",
    "invconv.sign_s", "invconv.upper",
]  # fmt: skip
PRIOR_KEYS = ["prior.conv.bias", "prior.conv.weight", "prior.log_gain"]
BASE_SHAPES = [(2, 4, 4), (8, 2, 2)]  # the latent shapes of BASE

# Recorded with the code before conditioning existed (commit 02cfc71) from the float64 copy of
# _tiny(split_prior=...): log p(x) of 3 inputs, and sums over their latents and over 3 decodes.
GOLDEN = {
    "fixed": dict(
        log_prob=[-10.825763282313176, -8.93410407206214, -11.86185067077173],
        latent_sum=-23.882873083073346, latent_sq=134.60448409088795,
        decode_sum=-0.9224972025687839, decode_sq=22.43180938112504,
    ),
    "learned": dict(
        log_prob=[-15.38508888108693, -13.79491785065936, -13.492549146867987],
        latent_sum=-5.0726993903868856, latent_sq=149.17872832874724,
        decode_sum=-0.9305190075020402, decode_sq=28.284030451223153,
    ),
}  # fmt: skip


@pytest.mark.parametrize("split_prior", ["fixed", "learned"])
def test_unconditional_flow_is_the_pre_conditioning_model(split_prior):
    model = _tiny(split_prior=split_prior)
    explicit = _tiny(split_prior=split_prior, num_conditions=0, condition_split_priors=False)
    expected = {f"levels.{i}.steps.{j}.{k}" for i in range(2) for j in range(2) for k in STEP_KEYS}
    if split_prior == "learned":
        expected |= {f"levels.{i}.{k}" for i in range(2) for k in PRIOR_KEYS}
    assert set(model.state_dict()) == set(explicit.state_dict()) == expected
    assert set(model.config) == {
        "in_channels", "image_size", "num_levels", "depth", "hidden_channels", "affine",
        "scale_floor", "split_prior", "decode_bound",
    }  # fmt: skip
    assert model.config == explicit.config
    x = torch.rand(4, 1, 8, 8) - 0.5
    assert torch.equal(model.log_prob(x), explicit.log_prob(x))

    golden = GOLDEN[split_prior]
    model = model.double()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 8, 8, generator=gen, dtype=torch.float64) - 0.5
    with torch.no_grad():
        log_prob = model.log_prob(x)
        flat = flatten_latents(model.encode(x))
        drawn = [torch.randn((3, *s), generator=gen, dtype=torch.float64) for s in BASE_SHAPES]
        decoded = model.decode(drawn)
    # The weights start in float32 (the 1x1 convolutions' QR and LU come from LAPACK), whose last
    # bits differ between CPUs: relative 5e-8 between two of this project's machines. Any change
    # to the model itself moves these sums by orders of magnitude more.
    tol = dict(atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        log_prob, torch.tensor(golden["log_prob"], dtype=torch.float64), **tol
    )
    for value, key in [
        (flat.sum(), "latent_sum"),
        ((flat**2).sum(), "latent_sq"),
        (decoded.sum(), "decode_sum"),
        ((decoded**2).sum(), "decode_sq"),
    ]:
        torch.testing.assert_close(value.item(), golden[key], **tol, msg=key)


def test_conditional_flow_records_its_conditioning_and_adds_only_label_prior_keys():
    model = _conditional(m=3, condition_split_priors=True)
    assert model.config["num_conditions"] == 3 and model.config["condition_split_priors"]
    twin = _unconditional_twin(model)
    extra = set(model.state_dict()) - set(twin.state_dict())
    assert extra == {
        f"levels.{i}.label_prior.{k}"
        for i in range(2)
        for k in ("linear.weight", "linear.bias", "log_gain")
    }
    assert set(twin.state_dict()) <= set(model.state_dict())
    top_only = _conditional(m=3)
    assert {k for k in top_only.state_dict() if "label_prior" in k} == {
        f"levels.1.label_prior.{k}" for k in ("linear.weight", "linear.bias", "log_gain")
    }
    assert top_only.levels[-1].label_prior.linear.weight.shape == (2 * 8 * 2 * 2, 3)


# -- errors ------------------------------------------------------------------------------------
def test_conditional_flow_needs_labels_and_unconditional_refuses_them():
    model = _conditional(m=2)
    x = torch.rand(2, 1, 8, 8) - 0.5
    y = torch.rand(2, 2)
    latents = model.encode(x, y=y)
    for call in (
        lambda: model.encode(x),
        lambda: model.log_prob(x),
        lambda: model.decode(latents),
        lambda: model.sample(2),
    ):
        with pytest.raises(ValueError, match=r"conditioned on 2 labels.*pass y"):
            call()
    plain = _tiny()
    for call in (
        lambda: plain.encode(x, y=y),
        lambda: plain.log_prob(x, y=y),
        lambda: plain.decode(plain.encode(x), y=y),
        lambda: plain.sample(2, y=y),
    ):
        with pytest.raises(ValueError, match="unconditional"):
            call()


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (torch.rand(3, 2), r"shape \[2, 2\]"),
        (torch.rand(2, 3), r"shape \[2, 2\]"),
        (torch.rand(2), r"shape \[2, 2\]"),
        (torch.ones(2, 2, dtype=torch.int64), "float tensor"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), r"\[0, 1\].*NaN"),
        (torch.tensor([[0.0, 1.5], [1.0, 0.0]]), r"\[0, 1\]"),
        (torch.tensor([[0.0, -0.1], [1.0, 0.0]]), r"\[0, 1\]"),
    ],
)
def test_conditional_flow_rejects_malformed_labels(y, match):
    model = _conditional(m=2)
    with pytest.raises(ValueError, match=match):
        model.log_prob(torch.rand(2, 1, 8, 8) - 0.5, y=y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_conditions=-1), "num_conditions"),
        (dict(condition_split_priors=True), "condition_split_priors"),
    ],
)
def test_glow_rejects_impossible_conditioning(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Glow(**BASE, **kwargs)


def test_flat_latents_of_a_conditional_flow_round_trip():
    model = _conditional(m=1)
    x = torch.rand(3, 1, 8, 8) - 0.5
    y = torch.tensor([[0.0], [1.0], [1.0]])
    flat = flatten_latents(model.encode(x, y=y))
    back = model.decode(unflatten_latents(flat, model.latent_shapes), y=y)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)
