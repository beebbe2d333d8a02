"""What a privatization run guarantees, recorded beside its outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrivacyRecord:
    """The guarantee and calibration of one mechanism call (identical for every image of a batch).

    ``epsilon_per_element`` is the guarantee for a single privatized element on its own,
    ``epsilon_per_image`` the guarantee for the whole image (basic composition where it applies);
    both are always recorded because either figure alone misleads. ``sensitivity`` is measured in
    ``norm`` after clipping; ``private`` is False when the noise is reproducible or absent.
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

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON, CSV rows and loggers)."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line with both epsilon figures side by side."""
        return (
            f"{self.mechanism}: epsilon/image={self.epsilon_per_image:.4g}, "
            f"epsilon/element={self.epsilon_per_element:.4g}, delta={self.delta:.3g}, d={self.d}, "
            f"clip={self.clip}, {self.noise} noise scale={self.noise_scale:.4g}, "
            f"source={self.noise_source}, private={self.private}"
        )
