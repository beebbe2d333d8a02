"""Exact sampling from integer uniforms: no floating-point threshold decides a released value.

A torch generator's 64-bit words are uniform, and ``torch.randint(0, 2**b)`` reduces one of them
modulo the range (``random64() % range`` on the CPU, the same on CUDA), which is exactly uniform
on {0, ..., 2^b - 1} when the range is a power of two. Every sampler here is built from such
draws and integer comparisons only, so its output has exactly the stated distribution, up to the
generator itself (seeded with 63 bits of OS entropy, :func:`~dpglow.privacy.noise_generator`).

Probabilities that are irrational (e^eps / (1 + e^eps)) are replaced by dyadic rationals
m / 2^BITS rounded in the direction that can only lower the privacy loss
(:func:`dyadic_at_least`); a mechanism states the probabilities it actually samples, and its
guarantee is computed from them.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction

import torch

# Bits of the dyadic probabilities and of one uniform draw (torch.randint's int64 holds 2^62).
BITS = 62
ONE = 1 << BITS


def dyadic_at_least(p: float | Fraction, *, bits: int = BITS) -> int:
    """The smallest m with m / 2^bits >= p (p in [0, 1]), computed exactly from p's value."""
    value = Fraction(p)
    if not 0 <= value <= 1:
        raise ValueError(f"a probability must lie in [0, 1], got {p}")
    return math.ceil(value * (1 << bits))


# e^epsilon from decimal (correctly rounded at 40 digits), lowered by a relative 10^-39: a
# rigorous lower bound, used by every randomized response here. Past 50 (e^50 > 2^72) no 62-bit
# probability changes any more, and e^50 is still a lower bound.
_EXP_DIGITS = 40
_EXP_CAP = 50.0


def exp_lower(epsilon: float) -> Fraction:
    """A rational number <= e^epsilon and >= 1, within 10^-38 relative for epsilon <= 50."""
    with decimal.localcontext() as context:
        context.prec = _EXP_DIGITS
        rounded = decimal.Decimal(min(epsilon, _EXP_CAP)).exp()
    return max(Fraction(1), Fraction(rounded) * (1 - Fraction(1, 10 ** (_EXP_DIGITS - 1))))


def ceil_to_float(numerator: int) -> int:
    """The smallest m >= ``numerator`` with at most 53 significant bits: m / 2^62 is a float
    exactly, so the record's ``noise_scale`` states the sampled probability itself."""
    excess = numerator.bit_length() - 53
    return -(-numerator >> excess) << excess if excess > 0 else numerator


def other_outcome_numerator(epsilon: float, outcomes: int) -> int:
    """m with q = m / 2^62 the probability of each other outcome of k-ary randomized response over
    ``outcomes`` values at ``epsilon``: 1 / (e^epsilon + k - 1) rounded UP (from the lower bound
    :func:`exp_lower`) to at most 53 significant bits (:func:`ceil_to_float`), so q is at least
    the ideal one and the ratio (1 - (k - 1) q) / q is at most e^epsilon; 0 for epsilon = inf.
    Binary randomized response is k = 2 (q is its flip probability)."""
    if math.isinf(epsilon):
        return 0
    return ceil_to_float(dyadic_at_least(1 / (exp_lower(epsilon) + outcomes - 1)))


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= BITS:
        raise ValueError(f"bits must be an int in [1, {BITS}], got {bits!r}")
    return bits


def uniform_bits(
    shape: tuple[int, ...],
    *,
    bits: int = BITS,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """int64 draws, exactly uniform on {0, ..., 2^bits - 1}."""
    high = 1 << _check_bits(bits)
    return torch.randint(0, high, shape, generator=generator, device=device, dtype=torch.int64)


def uniform_below(n: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """One int64 draw exactly uniform on {0, ..., n_i - 1} for every entry n_i >= 1 of ``n``.

    Rejection from the smallest power-of-two range that holds n_i (each try is accepted with
    probability > 1/2), vectorised over the entries that are still rejected.
    """
    if n.dtype != torch.int64:
        raise TypeError(f"n must be an int64 tensor, got {n.dtype}")
    if n.numel() and (int(n.min()) < 1 or int(n.max()) > ONE):
        raise ValueError(f"uniform_below needs 1 <= n <= 2^{BITS}")
    # 2^b - 1 for b the bit length of n - 1 (the smallest mask that covers {0, ..., n - 1}):
    # smear the highest set bit of n - 1 into every lower bit (n - 1 < 2^62, so 6 shifts do).
    mask = n - 1
    for shift in (1, 2, 4, 8, 16, 32):
        mask = mask | (mask >> shift)
    out = torch.empty_like(n)
    todo = torch.ones_like(n, dtype=torch.bool)
    while bool(todo.any()):
        index = todo.nonzero(as_tuple=True)
        draw = uniform_bits(tuple(index[0].shape), generator=generator, device=n.device)
        draw = draw & mask[index]
        accept = draw < n[index]
        accepted = tuple(i[accept] for i in index)
        out[accepted] = draw[accept]
        todo[accepted] = False
    return out


def bernoulli_dyadic(
    numerator: int | torch.Tensor,
    shape: tuple[int, ...],
    *,
    bits: int = BITS,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Booleans, True with probability exactly numerator / 2^bits (a tensor broadcasts)."""
    high = 1 << _check_bits(bits)
    num = torch.as_tensor(numerator, dtype=torch.int64, device=device)
    if num.numel() and (int(num.min()) < 0 or int(num.max()) > high):
        raise ValueError(f"numerator must lie in [0, 2^{bits}]")
    return uniform_bits(shape, bits=bits, generator=generator, device=device) < num


def categorical_dyadic(
    cumulative: torch.Tensor,
    shape: tuple[int, ...],
    *,
    bits: int = BITS,
    generator: torch.Generator,
) -> torch.Tensor:
    """int64 outcomes in {0, ..., K - 1} with P(k) exactly (c_k - c_{k-1}) / 2^bits.

    ``cumulative`` is a non-decreasing int64 tensor [K] ending at 2^bits (c_{-1} = 0).
    """
    high = 1 << _check_bits(bits)
    if cumulative.dtype != torch.int64 or cumulative.dim() != 1 or not len(cumulative):
        raise ValueError("cumulative must be a non-empty 1-D int64 tensor")
    if int(cumulative[-1]) != high or bool((cumulative.diff() < 0).any()):
        raise ValueError(f"cumulative must be non-decreasing and end at 2^{bits}")
    draw = uniform_bits(shape, bits=bits, generator=generator, device=cumulative.device)
    return torch.searchsorted(cumulative, draw, right=True)


# --- Canonne, Kamath & Steinke 2020: Bernoulli(exp(-gamma)) and the geometric --------------------
#
# "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020), Algorithm 1 and the geometric of
# Algorithm 2, vectorised over the entries that are still unfinished, from the integer uniforms
# above, so the samples have exactly the stated distribution (the discrete Laplace and Gaussian
# built on them are in dpglow.privacy.discrete). Rationals have numerator and denominator at most
# 2^48, which leaves int64 headroom for the loop counters (k in Algorithm 1, V in Algorithm 2); a
# counter past it has probability below e^-16000 and raises OverflowError instead of wrapping.

MAX_SCALE_PART = 1 << 48
# Moduli of the multi-level draws below: at most 2^58, so that a 62-bit draw is redrawn with
# probability below 1/16.
_LEVEL_CAP = 1 << 58


def uniform_mod(
    n: int, count: int, *, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """``count`` int64 draws exactly uniform on {0, ..., n - 1}, for one int 1 <= n <= 2^62.

    W mod n for W uniform on 62 bits, with the W >= 2^62 - (2^62 mod n) redrawn in place, so that
    every residue has the same number of preimages (the low bits when n is a power of two).
    """
    if n == 1:
        return torch.zeros(count, dtype=torch.int64, device=device)
    if n & (n - 1) == 0:
        return uniform_bits((count,), bits=n.bit_length() - 1, generator=generator, device=device)
    top = ONE - ONE % n
    draw = uniform_bits((count,), generator=generator, device=device)
    bad = draw >= top
    if bool(bad.any()):
        todo = bad.nonzero()[:, 0]
        while todo.numel():
            again = uniform_bits((todo.numel(),), generator=generator, device=device)
            draw[todo] = again
            todo = todo[again >= top]
    return draw % n


def _uniform_scaled(
    n: int, count: int, *, generator: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, int]:
    """(W, m): ``count`` draws W uniform on {0, ..., m n - 1}, m = floor(2^62 / n), so that
    floor(W / m) is exactly uniform on {0, ..., n - 1} and floor(W / m) < c exactly when W < m c.

    Comparing W with m c decides "a uniform below n is below c" with no division; the W >= m n
    (probability below n / 2^62) are redrawn in place.
    """
    m = ONE // n
    top = m * n
    draw = uniform_bits((count,), generator=generator, device=device)
    if top < ONE:
        bad = draw >= top
        if bool(bad.any()):
            todo = bad.nonzero()[:, 0]
            while todo.numel():
                again = uniform_bits((todo.numel(),), generator=generator, device=device)
                draw[todo] = again
                todo = todo[again >= top]
    return draw, m


def _levels(denominator: int, *, scalar: bool) -> int:
    """L, the levels of Algorithm 1 decided by one draw: the largest with L! denominator^L <=
    2^58 (at least 1; at most 19 for gamma = 1, 8 for per-entry gammas, whose thresholds cost an
    op each)."""
    levels = 1
    while levels < (19 if scalar else 8) and (
        math.factorial(levels + 1) * denominator ** (levels + 1) <= _LEVEL_CAP
    ):
        levels += 1
    return levels


def _first_levels(
    w: torch.Tensor, m: int, numerator: torch.Tensor | None, denominator: int, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, deeper): Algorithm 1's answer for every entry whose K <= ``levels`` and the indices
    of the others (K > L; their ``out`` is a placeholder), from w with floor(w / m) uniform on
    {0, ..., N - 1}, N = L! denominator^L.

    K > j exactly when floor(w / m) < T_j = N gamma^j / j!, i.e. when w < m T_j; the T_j are
    integers and decrease with j, so the events are nested and P(K > j) = gamma^j / j!.
    """
    scalar = numerator is None

    def threshold(j: int, num: torch.Tensor | None) -> torch.Tensor | int:
        """m T_j = m N gamma^j / j!, in int64 (at most m N <= 2^62)."""
        factor = m * denominator ** (levels - j) * (math.factorial(levels) // math.factorial(j))
        if num is None:
            return factor * denominator**j
        power = num
        for _ in range(j - 1):
            power = power * num
        return power * factor

    # K = 1 (True) when w >= mT_1, K = 2 (False) when mT_2 <= w < mT_1; K > 2 when w < mT_2.
    out = w >= threshold(1, numerator)
    deeper = (w < threshold(min(levels, 2), numerator)).nonzero()[:, 0]
    if levels > 2 and deeper.numel():
        # the other levels at once: K - 2 = #{3 <= j <= L : w < mT_j}, unless that is L - 2
        w = w[deeper]
        if scalar:
            thresholds = torch.tensor(
                [threshold(j, None) for j in range(levels, 2, -1)], device=w.device
            )
            above = (levels - 2) - torch.searchsorted(thresholds, w, right=True)
        else:
            num = numerator[deeper]
            above = sum(w < threshold(j, num) for j in range(3, levels + 1))
        out[deeper] = above % 2 == 0  # K = above + 3
        deeper = deeper[(above == levels - 2).nonzero()[:, 0]]
    return out, deeper


def bernoulli_exp_unit(
    numerator: torch.Tensor | None,
    denominator: int,
    count: int,
    *,
    generator: torch.Generator,
    device: torch.device | str,
) -> torch.Tensor:
    """``count`` booleans, True with probability exactly exp(-gamma_i), gamma_i =
    numerator_i / denominator in [0, 1] (``numerator=None``: gamma = 1).

    CKS Algorithm 1: K is the first k with A_k = 0 for independent A_k ~ Bernoulli(gamma / k), and
    the answer is "K is odd". P(K > j) = gamma^j / j!, so the first L levels come from one uniform
    on {0, ..., N - 1}, N = L! denominator^L <= 2^58 (:func:`_first_levels`): levels 1 and 2 for
    every entry, 3 to L for the entries with K > 2 (probability gamma^2 / 2 <= 1/2). The entries
    with K > L (probability gamma^L / L!) go on with fresh A_k, k = L + 1, ...
    """
    scalar = numerator is None
    levels = _levels(denominator, scalar=scalar)
    modulus = math.factorial(levels) * denominator**levels
    if modulus > _LEVEL_CAP:
        raise ValueError(f"denominator {denominator} is too large for int64 (at most 2^48)")
    w, m = _uniform_scaled(modulus, count, generator=generator, device=device)
    out, deeper = _first_levels(w, m, numerator, denominator, levels)
    if not deeper.numel():
        return out
    num = (
        torch.full((deeper.numel(),), denominator, dtype=torch.int64, device=device)
        if scalar
        else numerator[deeper]
    )
    k = levels + 1
    while deeper.numel():
        if denominator * k > ONE:
            raise OverflowError("exact Bernoulli(exp(-gamma)): k ran past the int64 headroom")
        w, m_k = _uniform_scaled(
            denominator * k, deeper.numel(), generator=generator, device=device
        )
        go_on = w < num * m_k  # A_k = 1: a uniform below denominator k is below numerator
        out[deeper] = k % 2 == 1  # K = k unless it goes on (then overwritten)
        keep = go_on.nonzero()[:, 0]
        deeper, num = deeper[keep], num[keep]
        k += 1
    return out


def bernoulli_exp_ratio(
    numerator: torch.Tensor, denominator: int, *, generator: torch.Generator
) -> torch.Tensor:
    """Booleans, True with probability exactly exp(-numerator_i / denominator) for any
    numerator_i >= 0 (CKS Algorithm 1): floor(gamma) Bernoulli(e^-1) successes in a row, then
    Bernoulli(exp(-(gamma - floor(gamma))))."""
    device = numerator.device
    num = numerator.reshape(-1)
    whole, fraction = num // denominator, num % denominator
    alive = torch.ones(num.shape, dtype=torch.bool, device=device)
    pos = (whole > 0).nonzero()[:, 0]
    remaining = whole[pos]
    while pos.numel():
        success = bernoulli_exp_unit(None, 1, pos.numel(), generator=generator, device=device)
        alive[pos[~success]] = False
        remaining = remaining - 1
        going = (success & (remaining > 0)).nonzero()[:, 0]
        pos, remaining = pos[going], remaining[going]
    pos = alive.nonzero()[:, 0]
    alive[pos] = bernoulli_exp_unit(
        fraction[pos], denominator, pos.numel(), generator=generator, device=device
    )
    return alive.view(numerator.shape)


def geometric_exp_minus_one(
    count: int, *, limit: int, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """V, the number of Bernoulli(e^-1) successes before the first failure: P(V >= v) = e^-v."""
    v = torch.zeros(count, dtype=torch.int64, device=device)
    pos = torch.arange(count, device=device)
    level = 0
    while pos.numel():
        success = bernoulli_exp_unit(None, 1, pos.numel(), generator=generator, device=device)
        pos = pos[success.nonzero()[:, 0]]
        level += 1
        if pos.numel() and level > limit:
            raise OverflowError("exact geometric: V ran past the int64 headroom")
        v[pos] = level
    return v


def check_rational(name: str, scale: object) -> Fraction:
    """A rational ``scale > 0`` whose numerator and denominator fit the samplers' integers."""
    if isinstance(scale, bool) or not isinstance(scale, (int, Fraction)):
        raise TypeError(
            f"{name} must be an int or a fractions.Fraction (exact), got {type(scale).__name__} "
            f"{scale!r}; wrap a float as Fraction(x) to sample at exactly its binary value"
        )
    value = Fraction(scale)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value.numerator > MAX_SCALE_PART or value.denominator > MAX_SCALE_PART:
        raise ValueError(
            f"{name}={value} has a numerator or denominator above 2^48, which the int64 "
            "arithmetic cannot hold: round it to a nearby rational with smaller terms (round a "
            "noise scale UP, which can only lower the privacy loss)"
        )
    return value


def shape_numel(shape: tuple[int, ...]) -> int:
    """The number of entries of ``shape``, a tuple of non-negative ints."""
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise TypeError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return math.prod(shape)


def bernoulli_exp(
    gamma: int | Fraction,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Booleans, True with probability exactly exp(-gamma) for a rational gamma >= 0 (CKS
    Algorithm 1, from integer uniforms only; numerator and denominator at most 2^48)."""
    count = shape_numel(shape)
    if not isinstance(gamma, bool) and isinstance(gamma, (int, Fraction)) and gamma == 0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    value = check_rational("gamma", gamma)
    numerator = torch.full((count,), value.numerator, dtype=torch.int64, device=device)
    return bernoulli_exp_ratio(numerator, value.denominator, generator=generator).view(shape)
