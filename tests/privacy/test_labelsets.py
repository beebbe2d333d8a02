"""Label sets released whole: exact k-ary randomizers, the domain, the posterior, validation.

Exactness is checked in rational arithmetic against e^epsilon from ``decimal`` at 60 digits;
empirical frequencies within 6 binomial standard deviations. The audits follow test_labels.py:
two label vectors, 1,000,000 seeded releases each, the event with the largest likelihood ratio
(the first vector's own outcome released, or reported without the second's), Clopper-Pearson
bounds failing with probability 1e-6; the control samples at twice the epsilon it records.
"""

from __future__ import annotations

import decimal
import itertools
import logging
import math
from dataclasses import replace
from fractions import Fraction

import pytest
import torch

from dpglow.privacy import (
    OS_ENTROPY,
    SEEDED,
    UNVERIFIED,
    GeneralizedRandomizedResponse,
    LabelSetResponse,
    SubsetSelection,
    binarize_labels,
    domain_sha256,
    fit_label_domain,
    noise_generator,
)
from dpglow.privacy.exact import ONE

from .audit import FAILURE_PROBABILITY, epsilon_lower_bound

N_AUDIT = 1_000_000
N_EXACT = 400_000
SIGMAS = 6.0
# Three findings A, B, C: a public sample of 13 vectors, 6 distinct sets.
PUBLIC = [(0, 0, 0)] * 5 + [(1, 0, 0)] * 3 + [(0, 1, 0)] * 2 + [(0, 0, 1), (1, 1, 0), (1, 0, 1)]


def _exp(epsilon: float, slack: int = 0) -> Fraction:
    """e^epsilon to 60 digits, times (1 + slack 1e-50): an upper (+1) or lower (-1) bound."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        value = Fraction(decimal.Decimal(epsilon).exp())
    return value * (1 + Fraction(slack, 10**50))


def _labels(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _tolerance(p: float, n: int) -> float:
    return SIGMAS * math.sqrt(p * (1 - p) / n)


# --- exactness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [1e-6, 0.1, 1.0, 3.0, 10.0, 40.0, 800.0])
@pytest.mark.parametrize("k", [2, 15, 129])
def test_grr_dyadic_q_is_safe_and_tight(epsilon: float, k: int) -> None:
    grr = GeneralizedRandomizedResponse(epsilon=epsilon, num_outcomes=k)
    p, q = grr.probabilities()
    assert q == Fraction(grr.q_numerator, ONE) and p + (k - 1) * q == 1
    lower = _exp(epsilon, -1)  # <= e^epsilon
    assert q <= p <= lower * q  # p / q in [1, e^epsilon], exactly
    ideal = 1 / (lower + k - 1)  # >= the ideal q = 1 / (e^epsilon + k - 1)
    assert q >= ideal
    assert q - ideal < Fraction(1, 2**49) * ideal + Fraction(1, ONE)  # rounded, not wasted
    assert Fraction(grr.record().noise_scale) == q  # the record states q exactly


@pytest.mark.parametrize("epsilon", [1e-6, 0.5, 3.0, 10.0])
@pytest.mark.parametrize(("k", "s"), [(3, 2), (17, 3), (129, 40)])
def test_subset_inclusion_is_safe_and_tight(epsilon: float, k: int, s: int) -> None:
    mech = SubsetSelection(epsilon=epsilon, num_outcomes=k, subset_size=s)
    a = Fraction(mech.include_numerator, ONE)
    ratio = mech.likelihood_ratio()
    assert ratio == a * (k - s) / ((1 - a) * s)
    assert 1 <= ratio <= _exp(epsilon, -1)
    ideal = s * _exp(epsilon) / (s * _exp(epsilon) + k - s)
    assert ideal - a < Fraction(1, 2**49)  # a is the ideal rounded down
    assert Fraction(mech.record().noise_scale) == 1 - a


def test_grr_matches_p_and_q_empirically(seeded) -> None:
    grr = GeneralizedRandomizedResponse(epsilon=1.0, num_outcomes=5)
    p, q = (float(v) for v in grr.probabilities())
    for true in (0, 3):
        out, _ = grr(torch.full((N_EXACT,), true), generator=seeded(true))
        counts = torch.bincount(out, minlength=5).double() / N_EXACT
        for value in range(5):
            expected = p if value == true else q
            assert abs(counts[value].item() - expected) < _tolerance(expected, N_EXACT)
    assert out.dtype == torch.int64


def test_subset_selection_matches_every_set_probability(seeded) -> None:
    """k = 6, s = 2: each of the 15 sets, those holding x and those not, at its exact rate."""
    k, s, x = 6, 2, 4
    mech = SubsetSelection(epsilon=1.0, num_outcomes=k, subset_size=s)
    sets, _ = mech(torch.full((N_EXACT,), x), generator=seeded(5))
    assert sets.dtype == torch.bool and bool((sets.sum(1) == s).all())
    a = mech.include_numerator / ONE
    code = (sets.long() << torch.arange(k)).sum(1)
    for pair in itertools.combinations(range(k), s):
        expected = a / math.comb(k - 1, s - 1) if x in pair else (1 - a) / math.comb(k - 1, s)
        seen = (code == sum(1 << i for i in pair)).double().mean().item()
        assert abs(seen - expected) < _tolerance(expected, N_EXACT), pair


# --- audits ---------------------------------------------------------------------------------------


class _Overspending(LabelSetResponse):
    """The negative control: samples at twice the epsilon its records claim."""

    def __init__(self, *, epsilon: float, **kwargs) -> None:
        super().__init__(epsilon=2 * epsilon, **kwargs)
        self.claim = epsilon

    def _wrap(self, inner):
        claim = self.claim
        return replace(super()._wrap(inner), epsilon_per_image=claim, epsilon_per_element=claim)


def _audit(mech: LabelSetResponse, seeded) -> tuple[float, float]:
    """(bound, claimed epsilon) for y_a = (1, 0, 0) against y_b = (0, 1, 0)."""
    generator = seeded(2026)
    a, b = _labels([(1, 0, 0)]), _labels([(0, 1, 0)])
    index_a, index_b = int(mech.index(a)), int(mech.index(b))
    stats = []
    for y in (a, b):
        release, record = mech(y.expand(N_AUDIT, 3).contiguous(), generator=generator)
        if release.dim() == 1:  # y_a's outcome released
            stats.append((release == index_a).double())
        else:  # y_a's outcome reported, y_b's not
            stats.append((release[:, index_a] & ~release[:, index_b]).double())
    bound = epsilon_lower_bound(*stats, (0.5,), failure_probability=FAILURE_PROBABILITY)
    return bound, record.epsilon_per_image


def _mechanism(cls, epsilon: float, subset_size: int) -> LabelSetResponse:
    domain = fit_label_domain(_labels(PUBLIC), size=4)
    return cls(epsilon=epsilon, domain=domain.sets, subset_size=subset_size)


@pytest.mark.parametrize("subset_size", [1, 2])
@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_audit_label_sets(epsilon: float, subset_size: int, seeded) -> None:
    bound, claim = _audit(_mechanism(LabelSetResponse, epsilon, subset_size), seeded)
    assert claim == epsilon
    assert 0.8 * epsilon < bound <= epsilon  # measured: 0.985, 2.966 (s=1); 0.981, 2.977 (s=2)


@pytest.mark.parametrize("subset_size", [1, 2])
@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_audit_catches_overspending(epsilon: float, subset_size: int, seeded) -> None:
    bound, claim = _audit(_mechanism(_Overspending, epsilon, subset_size), seeded)
    assert claim == epsilon
    assert bound > 1.5 * epsilon  # true epsilon 2 x claim (measured: 1.98, 5.90 / 1.98, 5.87)


# --- the domain -----------------------------------------------------------------------------------


def test_fit_label_domain_rules_prior_and_profiles() -> None:
    public = _labels([*PUBLIC, (math.nan, 0, 0)])
    frequent = fit_label_domain(public, size=3, rule="frequent")
    assert frequent.sets.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert (frequent.num_public, frequent.num_dropped, frequent.finding_weights) == (13, 1, None)
    assert frequent.prior.tolist() == pytest.approx([5 / 13, 3 / 13, 2 / 13, 3 / 13])
    assert frequent.profiles[:3].tolist() == frequent.sets.tolist()
    assert frequent.other_profile.tolist() == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    # Covering: single-finding sets first, C (1 vector) before A+B (1, but 2 findings); then
    # (1,1,0) -> (0,1,0) and (1,0,1) -> (0,0,1), the rarer findings (weights N / n_j).
    covering = fit_label_domain(public, size=4)
    assert covering.rule == "covering"
    assert covering.sets.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert covering.finding_weights.tolist() == pytest.approx([13 / 5, 13 / 3, 13 / 2])
    assert covering.prior.tolist() == pytest.approx([5 / 13, 3 / 13, 3 / 13, 2 / 13, 0.0])
    assert covering.profiles[2].tolist() == pytest.approx([1 / 3, 1, 0])
    assert covering.profiles[3].tolist() == pytest.approx([1 / 2, 0, 1])
    # "other" has no public vector: its profile is the public mean.
    assert covering.other_profile.tolist() == pytest.approx([5 / 13, 3 / 13, 2 / 13])
    # Ties in count go by bit code: A+B (code 3) before A+C (code 5).
    assert fit_label_domain(public, size=5).sets[4].tolist() == [1, 1, 0]
    # More room than distinct sets: all of them.
    assert fit_label_domain(public, size=50, rule="frequent").size == 6


def test_domain_sha256_names_what_the_mechanism_depends_on() -> None:
    domain = fit_label_domain(_labels(PUBLIC), size=4)
    mech = LabelSetResponse.from_domain(domain, epsilon=1.0)
    assert mech.domain_sha256 == domain.domain_sha256
    assert len(domain.domain_sha256) == 64
    assert domain_sha256(domain.sets) != domain.domain_sha256  # the weights count
    assert domain_sha256(domain.sets[:3]) != domain_sha256(domain.sets)


def test_binarize_labels_rules() -> None:
    raw = torch.tensor([[1.0, 0.0, -1.0, math.nan]])
    assert binarize_labels(raw).tolist() == [[1, 0, 0, 0]]
    assert binarize_labels(raw, uncertain="positive").tolist() == [[1, 0, 1, 0]]
    both = binarize_labels(raw, uncertain="positive", blank="uncertain")
    assert both.tolist() == [[1, 0, 1, 1]]
    with pytest.raises(ValueError, match="-1 \\(uncertain\\) or NaN"):
        binarize_labels(torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="uncertain"):
        binarize_labels(raw, uncertain="ones")


# --- posterior ------------------------------------------------------------------------------------


def _transition(mech: LabelSetResponse) -> tuple[list, torch.Tensor]:
    """Every possible release and P(release | outcome) [releases, K + 1], from the exact
    probabilities (brute force over all sets for subset selection)."""
    inner = mech.mechanism
    k = inner.num_outcomes
    if isinstance(inner, GeneralizedRandomizedResponse):
        p, q = (float(v) for v in inner.probabilities())
        releases = [torch.tensor([r]) for r in range(k)]
        rows = [[p if r == x else q for x in range(k)] for r in range(k)]
        return releases, torch.tensor(rows, dtype=torch.float64)
    s, a = inner.subset_size, inner.include_numerator / ONE
    releases, rows = [], []
    for pair in itertools.combinations(range(k), s):
        release = torch.zeros(1, k, dtype=torch.bool)
        release[0, list(pair)] = True
        releases.append(release)
        inside, outside = a / math.comb(k - 1, s - 1), (1 - a) / math.comb(k - 1, s)
        rows.append([inside if x in pair else outside for x in range(k)])
    return releases, torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("rule", ["covering", "frequent"])
@pytest.mark.parametrize("subset_size", [1, 2])
def test_posterior_findings_is_brute_force_bayes(rule: str, subset_size: int) -> None:
    """Over all 8 label vectors with the public distribution of PUBLIC: P(y_j = 1 | release)."""
    public = _labels(PUBLIC)
    domain = fit_label_domain(public, size=3, rule=rule)
    mech = LabelSetResponse.from_domain(domain, epsilon=1.5, subset_size=subset_size)
    vectors = _labels(list(itertools.product((0, 1), repeat=3)))
    weight = torch.tensor([float((public == v).all(1).sum()) for v in vectors])
    releases, likelihood = _transition(mech)
    outcome = mech.index(vectors)
    for release, row in zip(releases, likelihood, strict=True):
        joint = weight * row[outcome]  # P(y) P(release | y)
        expected = (joint[:, None] * vectors).sum(0) / joint.sum()
        torch.testing.assert_close(
            mech.posterior_findings(release)[0], expected, rtol=1e-12, atol=1e-15
        )
        assert float(mech.posterior_outcomes(release).sum()) == pytest.approx(1.0, abs=1e-12)


def test_grr_posterior_under_a_prior() -> None:
    grr = GeneralizedRandomizedResponse(epsilon=2.0, num_outcomes=4)
    p, q = (float(v) for v in grr.probabilities())
    prior = [0.5, 0.2, 0.3, 0.0]
    post = grr.posterior(torch.tensor([0, 3]), prior=[5, 2, 3, 0])  # normalised
    for row, r in zip(post, (0, 3), strict=True):
        joint = [w * (p if i == r else q) for i, w in enumerate(prior)]
        joint = torch.tensor(joint, dtype=torch.float64)
        torch.testing.assert_close(row, joint / joint.sum(), rtol=1e-14, atol=0)
    exact = GeneralizedRandomizedResponse(epsilon=math.inf, num_outcomes=4)
    assert exact.posterior(torch.tensor([2]), prior=prior).tolist() == [[0, 0, 1, 0]]


def test_released_sets() -> None:
    domain = fit_label_domain(_labels(PUBLIC), size=3, rule="frequent")
    grr = LabelSetResponse.from_domain(domain, epsilon=1.0)
    out = grr.released_sets(torch.tensor([1, 3]))
    assert out[0].tolist() == [1, 0, 0] and bool(out[1].isnan().all())
    subset = LabelSetResponse.from_domain(domain, epsilon=1.0, subset_size=2)
    # The reported outcome with the largest prior (5, 3, 2, 3 / 13), the first on ties.
    release = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=torch.bool)
    sets = subset.released_sets(release)
    assert sets[0].tolist() == [0, 0, 0] and bool(sets[1].isnan().all())
    assert sets[2].tolist() == [1, 0, 0]


# --- records, identity, generators ----------------------------------------------------------------


def test_records_and_repr(seeded) -> None:
    domain = fit_label_domain(_labels(PUBLIC), size=4)
    mech = LabelSetResponse.from_domain(domain, epsilon=2.0)
    _, record = mech(_labels([(1, 1, 0)]), generator=seeded(0))
    assert (record.mechanism, record.d, record.norm, record.sensitivity) == (
        "label_set_response",
        3,
        "hamming",
        1.0,
    )
    assert record.epsilon_per_image == record.epsilon_per_element == 2.0 and record.delta == 0
    assert record.noise == "randomized_response" and record.accounting == "per_image"
    assert record.noise_source == SEEDED and not record.private and mech.record().private
    assert record.noise_scale == mech.mechanism.q_numerator / ONE
    inner = mech.mechanism.record()
    assert (inner.mechanism, inner.d) == ("generalized_randomized_response", 1)
    subset = LabelSetResponse.from_domain(domain, epsilon=2.0, subset_size=3).record()
    assert subset.noise == "subset_selection"
    assert repr(GeneralizedRandomizedResponse(epsilon=1, num_outcomes=3)) == (
        "GeneralizedRandomizedResponse(epsilon=1.0, num_outcomes=3)"
    )
    assert repr(SubsetSelection(epsilon=1, num_outcomes=4, subset_size=2)) == (
        "SubsetSelection(epsilon=1.0, num_outcomes=4, subset_size=2)"
    )
    assert "domain_size=4" in repr(mech) and "subset_size=1" in repr(mech)


def test_infinite_epsilon_releases_the_outcome(seeded) -> None:
    domain = fit_label_domain(_labels(PUBLIC), size=4)
    y = _labels([(1, 0, 0), (1, 1, 0), (0, 0, 0)])
    for subset_size in (1, 2):
        mech = LabelSetResponse.from_domain(domain, epsilon=math.inf, subset_size=subset_size)
        out, record = mech(y, generator=seeded(0))
        assert record.noise == "none" and not record.private and record.sensitivity is None
        truth = mech.index(y)
        assert torch.equal(out if subset_size == 1 else out.long().argmax(1), truth)
        torch.testing.assert_close(mech.posterior_findings(out), domain.profiles[truth])


def test_generator_handling(caplog) -> None:
    grr = GeneralizedRandomizedResponse(epsilon=1.0, num_outcomes=10)
    x = torch.zeros(64, dtype=torch.long)
    first, record = grr(x)
    assert record.noise_source == OS_ENTROPY and record.private
    assert not torch.equal(first, grr(x, generator=noise_generator()[0])[0])
    with caplog.at_level(logging.WARNING):
        _, unverified = grr(x, generator=torch.Generator().manual_seed(0))
    assert unverified.noise_source == UNVERIFIED and not unverified.private
    with pytest.raises(ValueError, match="os_entropy"):
        grr(x, generator=noise_generator(noise_seed=1)[0], noise_source=OS_ENTROPY)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon", "error"),
    [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("1", TypeError)],
)
def test_bad_epsilon(epsilon, error) -> None:
    domain = torch.eye(2, dtype=torch.float64)
    for make in (
        lambda: GeneralizedRandomizedResponse(epsilon=epsilon, num_outcomes=3),
        lambda: SubsetSelection(epsilon=epsilon, num_outcomes=3, subset_size=2),
        lambda: LabelSetResponse(epsilon=epsilon, domain=domain),
    ):
        with pytest.raises(error, match="epsilon"):
            make()


@pytest.mark.parametrize(
    ("y", "error", "match"),
    [
        (_labels([(1, math.nan, 0)]), ValueError, "NaN.*binarize_labels"),
        (_labels([(1, 0)]), ValueError, r"\[B, 3\]"),
        (_labels([(1, 0, 0, 0)]), ValueError, r"\[B, 3\]"),
        (_labels([(1, 0.5, 0)]), ValueError, "exactly 0 or 1, got 0.5.*binarize_labels"),
        (_labels([(1, -1, 0)]), ValueError, "exactly 0 or 1, got -1.0"),
        (torch.tensor([[1, 0, 0]]), TypeError, "float tensor"),
        (_labels([1, 0, 0]), ValueError, r"\[B, 3\]"),
    ],
)
def test_bad_label_vectors(y, error, match, seeded) -> None:
    mech = _mechanism(LabelSetResponse, 1.0, 1)
    with pytest.raises(error, match=match):
        mech(y, generator=seeded(0))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: GeneralizedRandomizedResponse(epsilon=1, num_outcomes=1), ValueError, ">= 2"),
        (lambda: GeneralizedRandomizedResponse(epsilon=1, num_outcomes=2.0), TypeError, "int"),
        (lambda: GeneralizedRandomizedResponse(epsilon=1e-30, num_outcomes=3), ValueError, "62"),
        (
            lambda: SubsetSelection(epsilon=1, num_outcomes=4, subset_size=1),
            ValueError,
            "GeneralizedRandomizedResponse",
        ),
        (lambda: SubsetSelection(epsilon=1, num_outcomes=4, subset_size=4), ValueError, "3"),
        (
            lambda: LabelSetResponse(epsilon=1, domain=_labels([(1, 0), (1, 0)])),
            ValueError,
            "distinct",
        ),
        (
            lambda: LabelSetResponse(epsilon=1, domain=torch.eye(2), prior=[1, 1]),
            ValueError,
            "one weight per outcome",
        ),
        (
            lambda: LabelSetResponse(
                epsilon=1, domain=torch.eye(2), profiles=torch.full((3, 2), 2)
            ),
            ValueError,
            "profiles",
        ),
        (
            lambda: LabelSetResponse(epsilon=1, domain=torch.eye(2), finding_weights=[1, 0]),
            ValueError,
            "finding_weights",
        ),
        (
            lambda: LabelSetResponse(epsilon=1, domain=torch.eye(2), finding_weights=[1, 1, 1]),
            ValueError,
            "one per finding",
        ),
        (lambda: fit_label_domain(_labels([(2, 0)]), size=2), ValueError, "binarize_labels"),
        (lambda: fit_label_domain(_labels(PUBLIC), size=0), ValueError, "size"),
        (lambda: fit_label_domain(_labels(PUBLIC), size=2, rule="top"), ValueError, "rule"),
    ],
)
def test_bad_arguments(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_bad_indices_and_releases(seeded) -> None:
    grr = GeneralizedRandomizedResponse(epsilon=1.0, num_outcomes=3)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        grr(torch.tensor([0, 3]), generator=seeded(0))
    with pytest.raises(TypeError, match="integer"):
        grr(torch.tensor([0.0]), generator=seeded(0))
    subset = SubsetSelection(epsilon=1.0, num_outcomes=4, subset_size=2)
    with pytest.raises(ValueError, match="holds 2 values"):
        subset.posterior(torch.tensor([[True, False, False, False]]), prior=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="one weight per outcome"):
        grr.posterior(torch.tensor([0]), prior=[1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        grr.posterior(torch.tensor([0]), prior=[1.0, -1.0, 1.0])
