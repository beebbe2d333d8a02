"""What a privatization run guarantees, recorded beside its outputs, and how guarantees add up."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpglow.privacy.noise import UNVERIFIED


@dataclass(frozen=True)
class PrivacyRecord:
    """The guarantee and calibration of one mechanism call (identical for every image of a batch).

    ``epsilon_per_element`` is the guarantee for a single privatized element on its own,
    ``epsilon_per_image`` the guarantee for the whole image (basic composition where it applies);
    both are always recorded because either figure alone misleads. ``sensitivity`` is measured in
    ``norm`` after clipping; ``private`` is False when the noise is reproducible or absent.
    ``parts`` is empty for a single mechanism; a record made by :func:`compose` maps each part's
    name to that part's :meth:`as_dict` (it takes no part in hashing). ``grid`` is the step of
    the lattice a mechanism releases on (:class:`~dpglow.privacy.DiscreteLaplaceL1`), None for
    the continuous mechanisms and for composed records.
    """

    mechanism: str
    d: int
    clip: float | None
    norm: str | None
    sensitivity: float | None
    epsilon_per_element: float
    epsilon_per_image: float
    delta: float
    noise: str
    noise_scale: float
    noise_source: str
    accounting: str
    private: bool
    parts: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    grid: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON, CSV rows and loggers); ``parts`` are plain dicts too."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line with both epsilon figures side by side (and each part's, when composed)."""
        line = (
            f"{self.mechanism}: epsilon/image={self.epsilon_per_image:.4g}, "
            f"epsilon/element={self.epsilon_per_element:.4g}, delta={self.delta:.3g}, d={self.d}, "
            f"clip={self.clip}, {self.noise} noise scale={self.noise_scale:.4g}, "
            f"source={self.noise_source}, private={self.private}"
        )
        if self.grid is not None:
            line += f", grid={self.grid:.4g}"
        if self.parts:
            spent = ", ".join(
                f"{name}={part['epsilon_per_image']:.4g}" for name, part in self.parts.items()
            )
            line += f", epsilon/image of the parts: {spent}"
        return line


def compose(*, parts: Mapping[str, PrivacyRecord]) -> PrivacyRecord:
    """One record for a release made of several mechanisms applied to the same image.

    Basic sequential composition (Dwork & Roth 2014, Theorem 3.16): mechanisms with independent
    noise that are (epsilon_i, delta_i)-DP for the image together give (sum epsilon_i,
    sum delta_i). The result has ``mechanism`` and ``noise`` the parts' joined by "+" in the
    mapping's order, ``d`` the sum of their ``d``, ``epsilon_per_image`` and ``delta`` the sums,
    ``epsilon_per_element`` the largest part's (the most exposed single element),
    ``noise_scale`` NaN and ``clip``, ``norm``, ``sensitivity`` None (no single figure fits),
    ``accounting`` "per_image", ``noise_source`` the parts' common source (else
    "unverified (NOT PRIVATE)"), ``private`` True only if every part is private, ``grid`` None
    (each part's grid stays in its dict), and ``parts`` each part's
    :meth:`PrivacyRecord.as_dict` under its name.

    An empty mapping and parts with ``accounting="per_element"`` are refused: it is their
    per-image figure that composes, so build them with ``accounting="per_image"``.
    """
    if not isinstance(parts, Mapping):
        raise TypeError(
            f"parts must be a mapping name -> PrivacyRecord, got {type(parts).__name__}"
        )
    if not parts:
        raise ValueError("compose() needs at least one part")
    for name, part in parts.items():
        if not isinstance(name, str):
            raise TypeError(f"part names must be str, got {type(name).__name__} {name!r}")
        if not isinstance(part, PrivacyRecord):
            raise TypeError(f"part {name!r} must be a PrivacyRecord, got {type(part).__name__}")
        if part.accounting != "per_image":
            raise ValueError(
                f"part {name!r} has accounting={part.accounting!r}: what composes is its "
                f"epsilon_per_image ({part.epsilon_per_image:.4g}), not the per-element epsilon; "
                "build it with accounting='per_image' at the per-image epsilon you mean to spend"
            )
    records = list(parts.values())
    sources = {part.noise_source for part in records}
    return PrivacyRecord(
        mechanism="+".join(part.mechanism for part in records),
        d=sum(part.d for part in records),
        clip=None,
        norm=None,
        sensitivity=None,
        epsilon_per_element=max(part.epsilon_per_element for part in records),
        epsilon_per_image=sum(part.epsilon_per_image for part in records),
        delta=sum(part.delta for part in records),
        noise="+".join(part.noise for part in records),
        noise_scale=math.nan,
        noise_source=sources.pop() if len(sources) == 1 else UNVERIFIED,
        accounting="per_image",
        private=all(part.private for part in records),
        parts={name: part.as_dict() for name, part in parts.items()},
        grid=None,
    )
