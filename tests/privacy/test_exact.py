"""Exact samplers from integer uniforms (dpglow.privacy.exact).

Two kinds of checks. Where a sampler decides with integer thresholds on one uniform, the
thresholds are enumerated over every value of that uniform and the counts compared with the
target probabilities as fractions: exact, no sampling. Elsewhere, seeded draws are compared with
the exact probabilities by a chi-square or binomial test whose failure probability is stated
(1e-6 per test, or 6 standard deviations, two-sided p ~ 2e-9, per binomial check); the seeds are
fixed, so the tests are deterministic and the failure probability is what a random seed would
have.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from scipy.stats import chi2

from dpglow.privacy import exact
from dpglow.privacy.exact import (
    BITS,
    ONE,
    bernoulli_dyadic,
    bernoulli_exp,
    categorical_dyadic,
    dyadic_at_least,
    uniform_below,
    uniform_bits,
)

P_VALUE = 1e-6
SIGMAS = 6.0


def chi_square_p(counts: torch.Tensor, probabilities: list[Fraction] | list[float]) -> float:
    """Pearson's goodness-of-fit p-value of ``counts`` against ``probabilities`` (summing to 1)."""
    n = int(counts.sum())
    expected = torch.tensor([float(p) * n for p in probabilities], dtype=torch.float64)
    assert bool((expected >= 5).all()), "merge bins: too few expected counts for chi-square"
    statistic = float(((counts.double() - expected) ** 2 / expected).sum())
    return float(chi2.sf(statistic, len(probabilities) - 1))


def assert_binomial(hits: int, n: int, p: float) -> None:
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) <= tolerance, (hits / n, p, tolerance)


# --- dyadic probabilities and uniforms ------------------------------------------------------------


def test_dyadic_at_least_rounds_up_exactly() -> None:
    assert dyadic_at_least(Fraction(1, 3)) == -(-ONE // 3)
    assert Fraction(dyadic_at_least(Fraction(1, 3)), ONE) >= Fraction(1, 3)
    assert dyadic_at_least(0.5, bits=1) == 1 and dyadic_at_least(0.0) == 0
    assert dyadic_at_least(1) == ONE
    assert dyadic_at_least(Fraction(1, 5), bits=3) == 2  # 2/8 >= 1/5 > 1/8
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dyadic_at_least(1.5)


def test_uniform_bits_is_uniform(seeded) -> None:
    draws = uniform_bits((80_000,), bits=3, generator=seeded(1))
    assert draws.dtype == torch.int64 and int(draws.min()) >= 0 and int(draws.max()) <= 7
    assert chi_square_p(torch.bincount(draws, minlength=8), [Fraction(1, 8)] * 8) > P_VALUE
    top = uniform_bits((40_000,), generator=seeded(2))  # all 62 bits: the top 3 are uniform too
    assert chi_square_p(torch.bincount(top >> (BITS - 3), minlength=8), [Fraction(1, 8)] * 8) > (
        P_VALUE
    )
    with pytest.raises(ValueError, match="bits"):
        uniform_bits((2,), bits=63, generator=seeded(0))


def test_uniform_below_is_exactly_uniform(seeded) -> None:
    sizes = (1, 3, 7, 10)
    n = torch.tensor(sizes, dtype=torch.int64).repeat(30_000)
    draws = uniform_below(n, generator=seeded(3))
    assert bool((draws >= 0).all() & (draws < n).all())
    for size in sizes:
        picked = draws[n == size]
        if size == 1:
            assert bool((picked == 0).all())
            continue
        counts = torch.bincount(picked, minlength=size)
        assert chi_square_p(counts, [Fraction(1, size)] * size) > P_VALUE, size


def test_uniform_below_rejects_at_the_top(seeded) -> None:
    """n = 3 * 2^60: a quarter of the 62-bit range is rejected. Without the rejection (a modulo,
    or a clamp) the thirds of {0, ..., n - 1} would not be equally likely."""
    big = 3 << 60
    for draws in (
        uniform_below(torch.full((60_000,), big, dtype=torch.int64), generator=seeded(4)),
        exact.uniform_mod(big, 60_000, generator=seeded(5), device="cpu"),
        exact._uniform_scaled(big, 60_000, generator=seeded(6), device="cpu")[0],
    ):
        assert int(draws.min()) >= 0 and int(draws.max()) < big
        counts = torch.bincount(draws >> 60, minlength=3)
        assert chi_square_p(counts, [Fraction(1, 3)] * 3) > P_VALUE


@pytest.mark.parametrize("n", [7, 1 << 20, (1 << 40) + 3])
def test_uniform_mod_is_uniform(n: int, seeded) -> None:
    draws = exact.uniform_mod(n, 60_000, generator=seeded(n % 1000), device="cpu")
    assert int(draws.min()) >= 0 and int(draws.max()) < n
    bins = min(n, 8)
    # x lands in bin floor(8 x / n) = k for x in [ceil(k n / 8), ceil((k + 1) n / 8))
    counts = torch.bincount(draws * bins // n, minlength=bins)
    probabilities = [Fraction(-(-(k + 1) * n // bins) + (-k * n // bins), n) for k in range(bins)]
    assert sum(probabilities) == 1
    assert chi_square_p(counts, probabilities) > P_VALUE


def test_uniform_below_validation(seeded) -> None:
    with pytest.raises(TypeError, match="int64"):
        uniform_below(torch.tensor([3.0]), generator=seeded(0))
    with pytest.raises(ValueError, match="1 <= n"):
        uniform_below(torch.tensor([0]), generator=seeded(0))
    with pytest.raises(ValueError, match="1 <= n"):
        uniform_below(torch.tensor([ONE + 1]), generator=seeded(0))


# --- Bernoulli and categorical --------------------------------------------------------------------


def test_bernoulli_dyadic_is_a_comparison_of_integers(seeded) -> None:
    """The decision is ``uniform_bits < numerator``: exact given uniform bits."""
    numerator = torch.tensor([0, 1, 3, 8])
    flips = bernoulli_dyadic(numerator, (5_000, 4), bits=3, generator=seeded(7))
    assert torch.equal(flips, uniform_bits((5_000, 4), bits=3, generator=seeded(7)) < numerator)
    assert not bool(flips[:, 0].any()) and bool(flips[:, 3].all())  # 0 / 8 and 8 / 8


@pytest.mark.parametrize(("numerator", "bits"), [(3, 3), (1, 1), (ONE // 3, BITS), (5, 10)])
def test_bernoulli_dyadic_probability(numerator: int, bits: int, seeded) -> None:
    n = 200_000
    hits = int(bernoulli_dyadic(numerator, (n,), bits=bits, generator=seeded(8)).sum())
    assert_binomial(hits, n, numerator / 2**bits)


def test_bernoulli_dyadic_validation(seeded) -> None:
    with pytest.raises(ValueError, match="numerator"):
        bernoulli_dyadic(9, (2,), bits=3, generator=seeded(0))
    with pytest.raises(ValueError, match="numerator"):
        bernoulli_dyadic(torch.tensor([1, -1]), (2,), bits=3, generator=seeded(0))
    with pytest.raises(ValueError, match="bits"):
        bernoulli_dyadic(1, (2,), bits=0, generator=seeded(0))


def test_categorical_dyadic_is_exact(seeded) -> None:
    cumulative = torch.tensor([1, 1, 5, 8])  # P = 1/8, 0, 4/8, 3/8
    n = 80_000
    draws = categorical_dyadic(cumulative, (n,), bits=3, generator=seeded(9))
    # structurally: the index of the first cumulative value above a 3-bit uniform
    uniforms = uniform_bits((n,), bits=3, generator=seeded(9))
    assert torch.equal(draws, torch.searchsorted(cumulative, uniforms, right=True))
    counts = torch.bincount(draws, minlength=4)
    assert int(counts[1]) == 0  # zero probability is never drawn
    kept = counts[[0, 2, 3]]
    assert chi_square_p(kept, [Fraction(1, 8), Fraction(4, 8), Fraction(3, 8)]) > P_VALUE


@pytest.mark.parametrize(
    "cumulative",
    [
        torch.tensor([1, 5, 7]),  # does not end at 2^3
        torch.tensor([5, 1, 8]),  # decreasing
        torch.tensor([1.0, 8.0]),  # not int64
        torch.tensor([[8]]),  # not 1-D
        torch.tensor([], dtype=torch.int64),
    ],
)
def test_categorical_dyadic_validation(cumulative, seeded) -> None:
    with pytest.raises(ValueError, match="cumulative"):
        categorical_dyadic(cumulative, (2,), bits=3, generator=seeded(0))


# --- Bernoulli(exp(-gamma)), CKS Algorithm 1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("denominator", "levels"),
    [(1, 1), (1, 2), (1, 5), (1, 8), (2, 4), (3, 5), (5, 4), (7, 3), (40, 2), (1000, 1)],
)
def test_first_levels_are_exact(denominator: int, levels: int) -> None:
    """Every value of the uniform, enumerated: the levels decide 'K odd' / 'K even' / 'K > L'
    with exactly the probabilities of Algorithm 1, P(K > j) = gamma^j / j!."""
    modulus = math.factorial(levels) * denominator**levels
    for scalar in (True, False):
        numerators = [denominator] if scalar else sorted({0, 1, denominator // 2, denominator})
        for num in numerators:
            gamma = Fraction(num, denominator)

            def p_k(k: int, gamma: Fraction = gamma) -> Fraction:
                return gamma ** (k - 1) / math.factorial(k - 1) - gamma**k / math.factorial(k)

            odd = sum((p_k(k) for k in range(1, levels + 1, 2)), Fraction(0))
            even = sum((p_k(k) for k in range(2, levels + 1, 2)), Fraction(0))
            for m, offset in ((1, 0), (5, 0), (5, 4)):  # w = m r + offset, r uniform
                w = torch.arange(modulus) * m + offset
                num_tensor = None if scalar else torch.full((modulus,), num)
                out, deeper = exact._first_levels(w, m, num_tensor, denominator, levels)
                decided = torch.ones(modulus, dtype=torch.bool)
                decided[deeper] = False
                assert Fraction(int((decided & out).sum()), modulus) == odd
                assert Fraction(int((decided & ~out).sum()), modulus) == even
                assert Fraction(deeper.numel(), modulus) == gamma**levels / math.factorial(levels)


@pytest.mark.parametrize(
    "gamma",
    [
        Fraction(1, 3),
        1,
        Fraction(5, 2),
        7,
        Fraction(2**47 - 1, 2**47),  # one level per draw: the fresh-draw loop does the rest
        Fraction(3, 2**40),
    ],
)
def test_bernoulli_exp_probability(gamma, seeded) -> None:
    n = 200_000
    hits = int(bernoulli_exp(gamma, (n,), generator=seeded(10)).sum())
    assert_binomial(hits, n, math.exp(-float(gamma)))


def test_bernoulli_exp_edges_and_validation(seeded) -> None:
    assert bool(bernoulli_exp(0, (3, 2), generator=seeded(0)).all())
    assert bernoulli_exp(Fraction(1, 2), (3, 2), generator=seeded(0)).shape == (3, 2)
    with pytest.raises(TypeError, match="Fraction"):
        bernoulli_exp(0.5, (2,), generator=seeded(0))
    with pytest.raises(ValueError, match="> 0"):
        bernoulli_exp(-1, (2,), generator=seeded(0))
    with pytest.raises(ValueError, match="2\\^48"):
        bernoulli_exp(Fraction(1, 2**50), (2,), generator=seeded(0))
