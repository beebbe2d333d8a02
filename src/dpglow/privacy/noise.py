"""Unpredictable noise: OS-entropy generators, and Laplace / Gaussian samplers drawing from them.

Floating point (Mironov 2012, "On significance of the least significant bits for differential
privacy"): a naive ``x + Laplace`` in floating point reaches a set of output values that depends
on ``x`` (gaps in the sampled noise are shifted with the input), so a single output can reveal the
input and void the guarantee. We do not implement Mironov's snapping mechanism. What we do: draw
53-bit uniforms, sample and add in float64, and round the sum to the caller's dtype (float32 for
latents and images). That rounding maps ~2^29 float64 noise values onto each float32 output, so
the reachable output set is dense for both inputs except on events of probability ~1e-9 per
element (the far tails, where the float64 uniforms are sparse, and outputs within ~2^-29 |x| of
zero, where float32 is finer than the float64 sum). The
guarantee is therefore the mathematical one up to that floating-point residue, which we state
rather than hide; snapping (or a discrete Laplace on a grid) would close it. The Gaussian sampler
has the analogous caveat (Jin et al. 2022).
"""

from __future__ import annotations

import logging
import secrets
import weakref

import torch

log = logging.getLogger(__name__)

OS_ENTROPY = "os_entropy"
SEEDED = "seeded (NOT PRIVATE)"
# A generator that did not come from noise_generator() and whose source the caller did not state.
UNVERIFIED = "unverified (NOT PRIVATE)"
NOISE_SOURCES = (OS_ENTROPY, SEEDED)

# Generators made here remember their source, so callers need not pass it along.
_SOURCES: weakref.WeakKeyDictionary[torch.Generator, str] = weakref.WeakKeyDictionary()


def noise_generator(
    *, noise_seed: int | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.Generator, str]:
    """A generator for privacy noise and its source string.

    Without ``noise_seed`` the generator is seeded with 63 bits from the OS CSPRNG (``secrets``),
    never from the experiment seed: whoever can regenerate the noise can subtract it. (torch's
    generators take a 64-bit seed, so 63 bits is the entropy they can hold.) ``noise_seed`` is for
    tests only; the source then reads ``"seeded (NOT PRIVATE)"`` and records say ``private=False``.
    """
    generator = torch.Generator(device=device)
    if noise_seed is None:
        generator.manual_seed(secrets.randbits(63))
        source = OS_ENTROPY
    else:
        if isinstance(noise_seed, bool) or not isinstance(noise_seed, int):
            raise TypeError(f"noise_seed must be an int or None, got {noise_seed!r}")
        log.warning("noise_seed=%d: the noise is reproducible, outputs are NOT private", noise_seed)
        generator.manual_seed(noise_seed)
        source = SEEDED
    _SOURCES[generator] = source
    return generator, source


def resolve_generator(
    generator: torch.Generator | None, noise_source: str | None, device: torch.device
) -> tuple[torch.Generator, str]:
    """The generator to draw from and its source string, checked against ``device``.

    ``generator=None`` draws a fresh OS-entropy generator. A generator from
    :func:`noise_generator` carries its source; for any other one the caller may state
    ``noise_source``, otherwise it is recorded as unverified (hence not private).
    """
    if noise_source is not None and noise_source not in NOISE_SOURCES:
        raise ValueError(f"noise_source must be one of {NOISE_SOURCES}, got {noise_source!r}")
    if generator is None:
        if noise_source not in (None, OS_ENTROPY):
            raise ValueError("generator=None draws OS-entropy noise; pass the seeded generator")
        return noise_generator(device=device)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the data on {device}: "
            f"make it with noise_generator(device={str(device)!r})"
        )
    known = _SOURCES.get(generator)
    if known == SEEDED and noise_source == OS_ENTROPY:
        raise ValueError("this generator was seeded with noise_seed; it cannot be os_entropy")
    if noise_source is not None:
        return generator, noise_source
    if known is not None:
        return generator, known
    log.warning("generator not made by noise_generator() and no noise_source given: NOT PRIVATE")
    return generator, UNVERIFIED


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 for sampling and adding noise (see the module note), where the device has it."""
    return torch.float32 if device.type == "mps" else torch.float64


def laplace_noise(
    shape: tuple[int, ...],
    scale: float,
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Laplace(0, ``scale``) as ``scale * (E1 - E2)`` with ``E = -log(1 - U)``, ``U ~ U[0, 1)``.

    The difference of two exponentials never hits ``log(0)`` (the inverse CDF does when ``U`` is
    exactly 0), so every sample is finite.
    """
    draws = torch.rand((2, *shape), generator=generator, device=device, dtype=dtype)
    exponentials = -torch.log1p(-draws)
    return scale * (exponentials[0] - exponentials[1])


def gaussian_noise(
    shape: tuple[int, ...],
    scale: float,
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """N(0, ``scale``^2)."""
    return scale * torch.randn(shape, generator=generator, device=device, dtype=dtype)
