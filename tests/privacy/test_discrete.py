"""Exact discrete Laplace (and Gaussian) sampling, and the grid mechanism DiscreteLaplaceL1.

The samplers are checked against the analytic pmf (Pearson chi-square, n = 300,000 seeded draws)
and against OpenDP's exact samplers (a two-sample chi-square on the same bins; OpenDP draws from
its own OS randomness, so these tests are random: the failure probability of each is the stated
p-value threshold, 1e-6). Bins are the integers whose expected count is at least 20, plus the two
tails. OpenDP's ``make_laplace`` on an integer ``atom_domain`` / ``vector_domain`` takes the same
``scale`` as ours (P(z) proportional to exp(-|z| / scale); its privacy map sends sensitivity 1 to
1 / scale), and ``make_gaussian`` takes sigma.

The audit of DiscreteLaplaceL1 follows test_audit.py: d = 1, inputs +-10 scaled onto the ball of
radius 1 (the bound is tight there), 500,000 seeded releases of each, threshold events on the
released value, Clopper-Pearson bounds with failure probability 1e-6, and a negative control with
half the noise scale that must exceed the claim.
"""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import pytest
import torch
from scipy.stats import chi2

import dpglow.privacy.discrete as discrete_module
from dpglow.privacy import (
    OS_ENTROPY,
    SEEDED,
    DiscreteLaplaceL1,
    LaplaceL1,
    PrivacyRecord,
    compose,
    discrete_gaussian,
    discrete_laplace,
    noise_generator,
)
from dpglow.privacy.discrete import GRID_BITS, default_grid, noise_scale_in_steps

from .audit import FAILURE_PROBABILITY, epsilon_lower_bound

P_VALUE = 1e-6
N_EXACT = 300_000
N_OPENDP = 40_000
N_AUDIT = 500_000
EPSILON = 1.0


def laplace_pmf(z: int, scale: Fraction) -> float:
    q = math.exp(-1 / float(scale))
    return (1 - q) / (1 + q) * q ** abs(z)


def gaussian_pmf(variance: Fraction) -> dict[int, float]:
    sigma = math.sqrt(float(variance))
    support = range(-int(40 * sigma) - 5, int(40 * sigma) + 6)
    weights = {z: math.exp(-(z * z) / (2 * float(variance))) for z in support}
    total = math.fsum(weights.values())
    return {z: w / total for z, w in weights.items()}


def bins_for(pmf, n: int) -> tuple[int, int]:
    """The range [lo, hi] of integers with expected count >= 20 (the pmf is unimodal at 0)."""
    lo = hi = 0
    while pmf(hi + 1) * n >= 20:
        hi += 1
    while pmf(lo - 1) * n >= 20:
        lo -= 1
    return lo, hi


def binned(samples: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Counts of z < lo, lo, ..., hi, z > hi."""
    clipped = samples.clamp(lo - 1, hi + 1) - (lo - 1)
    return torch.bincount(clipped, minlength=hi - lo + 3).double()


def goodness_of_fit(samples: torch.Tensor, pmf) -> float:
    n = samples.numel()
    lo, hi = bins_for(pmf, n)
    assert lo == -hi  # the pmfs here are symmetric: each tail holds half of the outside
    inner = [pmf(z) for z in range(lo, hi + 1)]
    tail = (1.0 - math.fsum(inner)) / 2
    expected = torch.tensor([tail, *inner, tail], dtype=torch.float64) * n
    counts = binned(samples, lo, hi)
    keep = expected >= 5
    dropped = float(counts[~keep].sum()) - float(expected[~keep].sum())
    assert abs(dropped) < 10, "too many draws in tail bins with tiny expected counts"
    statistic = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return float(chi2.sf(statistic, int(keep.sum()) - 1))


def two_sample(a: torch.Tensor, b: torch.Tensor, pmf) -> float:
    """Two-sample chi-square p-value on the bins of the smaller sample."""
    lo, hi = bins_for(pmf, min(a.numel(), b.numel()))
    ca, cb = binned(a, lo, hi), binned(b, lo, hi)
    keep = (ca + cb) > 0
    ca, cb = ca[keep], cb[keep]
    na, nb = float(ca.sum()), float(cb.sum())
    statistic = float(((math.sqrt(nb / na) * ca - math.sqrt(na / nb) * cb) ** 2 / (ca + cb)).sum())
    return float(chi2.sf(statistic, len(ca) - 1))


def opendp_laplace(scale: float, n: int) -> torch.Tensor:
    dp = pytest.importorskip("opendp.prelude")
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    measurement = dp.m.make_laplace(*space, scale=scale)
    assert measurement.map(1) == pytest.approx(1 / scale)  # the same scale as ours
    return torch.tensor(measurement([0] * n), dtype=torch.int64)


def opendp_gaussian(sigma: float, n: int) -> torch.Tensor:
    dp = pytest.importorskip("opendp.prelude")
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")
    return torch.tensor(dp.m.make_gaussian(*space, scale=sigma)([0] * n), dtype=torch.int64)


# --- the samplers ---------------------------------------------------------------------------------

SCALES = [Fraction(1, 2), Fraction(3), Fraction(40), Fraction(1001, 7), Fraction(2**27 + 1, 2**20)]


@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_discrete_laplace_matches_pmf(scale: Fraction, seeded) -> None:
    z = discrete_laplace((N_EXACT,), scale=scale, generator=seeded(11))
    assert z.dtype == torch.int64 and z.shape == (N_EXACT,)
    assert goodness_of_fit(z, lambda k: laplace_pmf(k, scale)) > P_VALUE
    # the first two moments, analytically: mean 0, variance 2q / (1 - q)^2
    q = math.exp(-1 / float(scale))
    variance = 2 * q / (1 - q) ** 2
    assert abs(z.double().mean().item()) < 6 * math.sqrt(variance / N_EXACT)
    assert z.double().var().item() == pytest.approx(variance, rel=0.03)


@pytest.mark.parametrize("scale", [0.5, 3.0, 40.0])
def test_discrete_laplace_matches_opendp(scale: float, seeded) -> None:
    reference = opendp_laplace(scale, N_OPENDP)
    ours = discrete_laplace((4 * N_OPENDP,), scale=Fraction(scale), generator=seeded(12))
    pmf = lambda k: laplace_pmf(k, Fraction(scale))  # noqa: E731
    assert two_sample(ours, reference, pmf) > P_VALUE
    assert goodness_of_fit(reference, pmf) > P_VALUE  # the reference itself, same bins


@pytest.mark.parametrize("variance", [Fraction(9, 4), Fraction(9), Fraction(400)], ids=str)
def test_discrete_gaussian_matches_pmf(variance: Fraction, seeded) -> None:
    pmf = gaussian_pmf(variance)
    z = discrete_gaussian((N_EXACT // 2,), variance=variance, generator=seeded(13))
    assert goodness_of_fit(z, lambda k: pmf.get(k, 0.0)) > P_VALUE


def test_discrete_gaussian_matches_opendp(seeded) -> None:
    pmf = gaussian_pmf(Fraction(9))
    reference = opendp_gaussian(3.0, N_OPENDP)
    ours = discrete_gaussian((4 * N_OPENDP,), variance=9, generator=seeded(14))
    assert two_sample(ours, reference, lambda k: pmf.get(k, 0.0)) > P_VALUE


def test_samplers_shape_and_reproducibility(seeded) -> None:
    first = discrete_laplace((2, 3, 4), scale=3, generator=seeded(1))
    assert first.shape == (2, 3, 4) and first.dtype == torch.int64
    assert torch.equal(first, discrete_laplace((2, 3, 4), scale=3, generator=seeded(1)))
    assert discrete_laplace((0,), scale=3, generator=seeded(1)).shape == (0,)
    gauss = discrete_gaussian((5, 2), variance=Fraction(1, 3), generator=seeded(1))
    assert gauss.shape == (5, 2) and gauss.dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0.5}, TypeError, "Fraction"),
        ({"scale": True}, TypeError, "Fraction"),
        ({"scale": 0}, ValueError, "> 0"),
        ({"scale": Fraction(-1, 2)}, ValueError, "> 0"),
        ({"scale": 2**49}, ValueError, "2\\^48"),
        ({"scale": Fraction(1, 2**49)}, ValueError, "2\\^48"),
    ],
)
def test_discrete_laplace_validation(kwargs, error, match, seeded) -> None:
    with pytest.raises(error, match=match):
        discrete_laplace((3,), generator=seeded(0), **kwargs)


def test_sampler_shape_and_variance_validation(seeded) -> None:
    with pytest.raises(TypeError, match="shape"):
        discrete_laplace([3], scale=1, generator=seeded(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shape"):
        discrete_laplace((3.0,), scale=1, generator=seeded(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance"):
        discrete_gaussian((3,), variance=10**9, generator=seeded(0))
    with pytest.raises(TypeError, match="Fraction"):
        discrete_gaussian((3,), variance=2.0, generator=seeded(0))


# --- DiscreteLaplaceL1: audit ---------------------------------------------------------------------


class HalfNoiseDiscreteLaplaceL1(DiscreteLaplaceL1):
    """The negative control: half the noise scale, the same claimed epsilon (true one doubled)."""

    def calibration(self, d):
        calibration = super().calibration(d)
        return dataclasses.replace(calibration, scale=calibration.scale / 2)


def _audit_bound(mech: DiscreteLaplaceL1, seeded) -> float:
    generator = seeded(2024)
    far = torch.full((N_AUDIT, 1), 10.0)  # scaled onto the ball: +-R, the sensitivity's ends
    released_a = mech(far, generator=generator)[0][:, 0]
    released_b = mech(-far, generator=generator)[0][:, 0]
    return epsilon_lower_bound(
        released_a, released_b, (0.0, 1.0, 2.0), failure_probability=FAILURE_PROBABILITY
    )


def test_audit_respects_claim(seeded) -> None:
    mech = DiscreteLaplaceL1(epsilon=EPSILON, radius=1.0)
    record = mech.record((1,))
    assert record.epsilon_per_image == record.epsilon_per_element == EPSILON
    bound = _audit_bound(mech, seeded)
    assert bound <= EPSILON
    assert bound > 0.85 * EPSILON  # sharp, not vacuous (measured: 0.982)


def test_audit_catches_half_noise(seeded) -> None:
    mech = HalfNoiseDiscreteLaplaceL1(epsilon=EPSILON, radius=1.0)
    assert _audit_bound(mech, seeded) > 1.5 * EPSILON  # true epsilon 2 (measured: 1.965)


# --- DiscreteLaplaceL1: the grid ------------------------------------------------------------------


def _adversarial_rows(d: int, radius: float) -> torch.Tensor:
    eps = torch.finfo(torch.float64).eps
    rows = [
        torch.full((d,), radius / d),  # exactly on the sphere
        torch.full((d,), radius / d * (1 + 4 * eps)),  # a hair outside
        torch.full((d,), radius / d * (1 - 4 * eps)),  # a hair inside
        torch.cat([torch.tensor([radius]), torch.zeros(d - 1)]),  # one axis, on the sphere
        torch.cat([torch.tensor([-1e30]), torch.full((d - 1,), 1e-30)]),  # huge and tiny
        torch.linspace(-1, 1, d) * 1e6,
        torch.zeros(d),
        -torch.full((d,), radius / d),
    ]
    return torch.stack(rows).double()


@pytest.mark.parametrize("d", [1, 3, 64])
@pytest.mark.parametrize("radius", [None, 1.0, 0.3, 1e3])
@pytest.mark.parametrize("grid", [None, "fraction"])
def test_grid_snapping_keeps_the_ball(d: int, radius, grid, seeded) -> None:
    R = radius if radius is not None else d * math.sqrt(2 / math.pi)
    g = None if grid is None else R / 1000.3  # not a power of two: the division rounds
    mech = DiscreteLaplaceL1(epsilon=1.0, radius=radius, grid=g)
    generator = seeded(d)
    x = torch.cat(
        [
            _adversarial_rows(d, R),
            torch.randn(200, d, generator=generator, dtype=torch.float64)
            * torch.logspace(-3, 3, 200, dtype=torch.float64)[:, None],
        ]
    )
    steps = mech.grid_steps(x)
    calibration = mech.calibration(d)
    assert steps.dtype == torch.int64
    assert int(steps.abs().sum(1).max()) <= calibration.steps  # the exact, integer bound
    snapped = mech.statistic(x)
    norms = snapped.abs().sum(1)
    if g is None:  # a power-of-two grid: g q is exact, and so is its norm
        assert float(norms.max()) <= R
        assert calibration.grid == default_grid(R)
        assert R / 2 ** (GRID_BITS + 1) < calibration.grid <= R / 2**GRID_BITS
    else:
        assert float(norms.max()) <= R * (1 + 1e-12)
    # toward zero: signs kept, magnitudes never grow past the ball's
    bounded = discrete_module.scale_into_ball(x, R, ord=1)
    assert bool((snapped.abs() <= bounded.abs() + 1e-12 * R).all())
    assert bool((snapped * bounded >= 0).all())
    inside = x.abs().sum(1) <= R * (1 - 1e-12)
    err = (x[inside] - snapped[inside]).abs()
    assert bool((err < calibration.grid * (1 + 1e-9)).all())  # less than one step


def test_integer_guard_shrinks_rows_over_the_ball(monkeypatch) -> None:
    """If rounding ever left a row outside the ball, the integer clean-up must bring it back."""
    monkeypatch.setattr(discrete_module, "scale_into_ball", lambda u, radius, ord: u)
    mech = DiscreteLaplaceL1(epsilon=1.0, radius=1.0, grid=0.25)
    x = torch.tensor([[0.75, -0.5, 0.25], [1.0, 0.0, 0.0], [0.3, 0.3, -0.2]], dtype=torch.float64)
    steps = mech.grid_steps(x)
    assert steps.abs().sum(1).tolist() == [3, 4, 2]  # floor(|q_i| 4 / 6) = 2, 1, 0 for row 0
    assert steps[0].tolist() == [2, -1, 0]
    assert bool((steps * torch.trunc(x / 0.25).long() >= 0).all())  # signs kept


def test_record_states_the_grid_and_the_exact_scale() -> None:
    mech = DiscreteLaplaceL1(epsilon=3.7, radius=2.0)
    record = mech.record((4,))
    calibration = mech.calibration(4)
    assert (record.mechanism, record.noise, record.norm, record.d) == (
        "discrete_laplace_l1",
        "discrete_laplace",
        "l1",
        4,
    )
    assert record.grid == calibration.grid == 2.0**-19  # R / 2^20, a power of two
    assert calibration.steps == 2**20
    assert record.clip == 2.0 and record.sensitivity == 2 * calibration.steps * calibration.grid
    assert record.epsilon_per_image == record.epsilon_per_element == 3.7
    # t >= 2N / epsilon exactly, so the sampled epsilon is at most the claim, and barely below
    sampled = calibration.epsilon
    assert sampled <= Fraction(3.7) and float(sampled) > 3.7 * (1 - 2**-27)
    assert calibration.scale.numerator < 2**28
    assert record.noise_scale == float(calibration.scale * Fraction(calibration.grid))
    assert record.noise_scale == pytest.approx(
        LaplaceL1(epsilon=3.7, radius=2.0).record((4,)).noise_scale, rel=1e-7
    )
    assert record.private and record.noise_source == OS_ENTROPY
    # serialised, summarised, composed
    as_dict = record.as_dict()
    assert as_dict["grid"] == record.grid and json.loads(json.dumps(as_dict)) == as_dict
    assert f"grid={record.grid:.4g}" in record.summary()
    assert "grid" not in LaplaceL1(epsilon=1.0).record((2,)).summary()
    assert LaplaceL1(epsilon=1.0).record((2,)).grid is None
    composed = compose(parts={"latent": record, "other": LaplaceL1(epsilon=1.0).record((2,))})
    assert composed.grid is None and composed.parts["latent"]["grid"] == record.grid
    assert composed.epsilon_per_image == pytest.approx(4.7)
    # an old-style record, built without the new field, still works
    legacy = PrivacyRecord(**{k: v for k, v in as_dict.items() if k not in ("grid", "parts")})
    assert legacy.grid is None


@pytest.mark.parametrize("epsilon", [1e-8, 0.01, 1.0, 3.7, 10.0, 1e4, 1e9])
def test_noise_scale_rounds_up_to_a_small_dyadic(epsilon: float) -> None:
    steps = 2**20
    scale = noise_scale_in_steps(steps, epsilon)
    target = Fraction(2 * steps) / Fraction(epsilon)
    assert scale >= target and scale - target < target * Fraction(1, 2**27)
    assert scale.denominator & (scale.denominator - 1) == 0  # a power of two
    assert scale.numerator < 2**28 or scale.denominator == 1


def test_releases_on_the_grid(seeded) -> None:
    mech = DiscreteLaplaceL1(epsilon=2.0, radius=1.0)
    calibration = mech.calibration(2)
    x = torch.tensor([[0.3, -0.2], [5.0, 1.0]], dtype=torch.float64).repeat(50_000, 1)
    out, record = mech(x, generator=seeded(5))
    assert out.dtype == torch.float64 and record.noise_source == SEEDED and not record.private
    steps = out / calibration.grid
    assert torch.equal(steps, steps.round())  # exactly on the grid
    noise = steps.long() - mech.grid_steps(x)
    q = math.exp(-1 / float(calibration.scale))
    variance = 2 * q / (1 - q) ** 2  # the discrete Laplace in grid steps
    assert noise.double().var().item() == pytest.approx(variance, rel=0.03)
    again, _ = mech(x, generator=seeded(5))
    assert torch.equal(out, again)
    single, _ = mech(x.float(), generator=seeded(5))
    assert single.dtype == torch.float32 and torch.equal(single, out.float())


def test_infinite_epsilon_is_identity(seeded) -> None:
    mech = DiscreteLaplaceL1(epsilon=math.inf, radius=1.0)
    x = torch.randn(4, 3) * 10
    out, record = mech(x, generator=seeded(0))
    assert torch.equal(out, x) and out is not x
    assert record.noise == "none" and record.grid is None and not record.private


def test_generator_handling() -> None:
    mech = DiscreteLaplaceL1(epsilon=1.0)
    x = torch.zeros(8, 2)
    first, record = mech(x)
    assert record.private and record.noise_source == OS_ENTROPY
    second, _ = mech(x, generator=noise_generator()[0])
    assert not torch.equal(first, second)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": "1"}, TypeError, "epsilon"),
        ({"epsilon": True}, TypeError, "epsilon"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"epsilon": math.nan}, ValueError, "epsilon"),
        ({"epsilon": 1.0, "radius": 0.0}, ValueError, "radius"),
        ({"epsilon": 1.0, "radius": math.inf}, ValueError, "radius"),
        ({"epsilon": 1.0, "grid": -1.0}, ValueError, "grid"),
        ({"epsilon": 1.0, "grid": math.nan}, ValueError, "grid"),
        ({"epsilon": 1.0, "grid": "0.1"}, TypeError, "grid"),
        ({"epsilon": 1.0, "radius": 1.0, "grid": 2.0}, ValueError, "coarser"),
        ({"epsilon": 1.0, "radius": 1.0, "grid": 2.0**-31}, ValueError, "2\\^30"),
        ({"epsilon": 1e-12, "radius": 1.0}, ValueError, "epsilon"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        DiscreteLaplaceL1(**kwargs)


def test_bad_inputs_and_late_checks(seeded) -> None:
    mech = DiscreteLaplaceL1(epsilon=1.0, grid=10.0)  # the radius depends on d: checked per call
    with pytest.raises(ValueError, match="coarser"):
        mech(torch.zeros(2, 3), generator=seeded(0))
    ok = DiscreteLaplaceL1(epsilon=1.0)
    with pytest.raises(TypeError, match="float"):
        ok(torch.zeros(2, 3, dtype=torch.int64), generator=seeded(0))
    with pytest.raises(ValueError, match="NaN"):
        ok(torch.tensor([[math.nan, 0.0]]), generator=seeded(0))
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        ok(torch.zeros(3), generator=seeded(0))


def test_keyword_only_and_repr() -> None:
    with pytest.raises(TypeError):
        DiscreteLaplaceL1(1.0)  # type: ignore[misc]
    assert repr(DiscreteLaplaceL1(epsilon=2, radius=1.0)) == (
        "DiscreteLaplaceL1(epsilon=2.0, radius=1.0, grid=None)"
    )
