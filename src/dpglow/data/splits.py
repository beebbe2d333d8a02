"""Patient-grouped, seeded train/val/test splits that honour a dataset's official split."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# When one patient appears in several official splits, the whole patient goes to the most
# held-out one, so no test image ever shares a patient with a training image.
_PRIORITY = {"test": 0, "val": 1, "train": 2}


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _official_by_patient(records: pd.DataFrame) -> pd.Series:
    """Official split per patient (NaN where the patient has none)."""
    if "official_split" not in records:
        return pd.Series(dtype=object)
    official = records[["patient_id", "official_split"]].dropna()
    bad = set(official["official_split"]) - set(SPLITS)
    if bad:
        raise ValueError(f"official_split values must be in {SPLITS}, got {sorted(bad)}")
    rank = official["official_split"].map(_PRIORITY)
    per_patient = rank.groupby(official["patient_id"])
    n_conflicts = int((per_patient.nunique() > 1).sum())
    if n_conflicts:
        log.warning(
            "%d patients appear in several official splits; each goes wholly to its most "
            "held-out split (test > val > train)",
            n_conflicts,
        )
    inverse = {v: k for k, v in _PRIORITY.items()}
    return per_patient.min().map(inverse)


def make_splits(
    records: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Assign every record to "train", "val" or "test", keeping each patient in one split.

    Official splits win: an official test/val patient stays there. A held-out split with no
    official members is carved out of the remaining patients (official train, or all patients
    when there is no official split) in a seeded shuffle of patients, until it holds about
    ``fraction * len(records)`` images. Deterministic for a given seed and set of records.
    Returns a Series aligned with ``records.index``.
    """
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    patients = records["patient_id"].astype(str)
    counts = patients.value_counts().sort_index()  # sorted: order-independent of the records
    assigned = _official_by_patient(records.assign(patient_id=patients)).reindex(counts.index)

    present = set(assigned.dropna())
    targets = {
        "test": 0.0 if "test" in present else test_fraction * len(records),
        "val": 0.0 if "val" in present else val_fraction * len(records),
    }
    if present and "test" in present and test_fraction > 0:
        log.info("using the official test split; test_fraction=%s is ignored", test_fraction)
    # Patients eligible for carving: official train or no official split at all.
    pool = counts.index[assigned.isna() | (assigned == "train")].to_numpy()
    shuffled = pool[np.random.default_rng(seed % 2**64).permutation(len(pool))]
    sizes = counts.reindex(shuffled).to_numpy()
    # Greedy in shuffled order: patients join test until it holds >= its target, then val.
    before = np.cumsum(sizes) - sizes
    is_test = before < targets["test"]
    n_test = int(sizes[is_test].sum())
    is_val = ~is_test & (before - n_test < targets["val"])
    assigned[shuffled] = np.where(is_test, "test", np.where(is_val, "val", "train"))
    result = patients.map(assigned).rename("split")
    log.info("splits (images): %s", result.value_counts().reindex(SPLITS, fill_value=0).to_dict())
    return result
