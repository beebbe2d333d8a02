"""The statistical audit of docs/evaluation.md ("Mechanism audit") as the unit tests use it: the
Clopper-Pearson epsilon lower bound of :mod:`dpglow.audit.bounds`, at a failure probability of
1e-6 per test (see that module)."""

from dpglow.audit.bounds import clopper_pearson, epsilon_lower_bound

FAILURE_PROBABILITY = 1e-6

__all__ = ["FAILURE_PROBABILITY", "clopper_pearson", "epsilon_lower_bound", "half_noise_class"]


def half_noise_class(cls: type) -> type:
    """``cls`` sampling half the noise scale it calibrates, its claimed epsilon unchanged (true
    epsilon doubled): the negative control every audit must catch."""

    def _calibration(self, shape, d):
        out = cls._calibration(self, shape, d)
        return out | {"noise_scale": out["noise_scale"] / 2}

    return type(f"HalfNoise{cls.__name__}", (cls,), {"_calibration": _calibration})
