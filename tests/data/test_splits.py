"""make_splits: patient-disjoint, seeded, honouring official splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpglow.data import PediatricSource, make_splits


def synthetic_records(images_per_patient: list[int], official: list | None = None) -> pd.DataFrame:
    patients = np.repeat([f"p{i}" for i in range(len(images_per_patient))], images_per_patient)
    df = pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(len(patients))], "patient_id": patients}
    )
    if official is not None:
        df["official_split"] = np.repeat(official, images_per_patient)
    return df


def assert_patient_disjoint(records: pd.DataFrame, split: pd.Series) -> None:
    assert split.notna().all() and set(split) <= {"train", "val", "test"}
    per_patient = split.groupby(records["patient_id"]).nunique()
    assert (per_patient == 1).all(), per_patient[per_patient > 1]


@settings(max_examples=60, deadline=None, database=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=60),
    val=st.floats(0, 0.45),
    test=st.floats(0, 0.45),
    seed=st.integers(0, 2**32),
)
def test_patient_disjoint_and_deterministic(
    sizes: list[int], val: float, test: float, seed: int
) -> None:
    records = synthetic_records(sizes)
    split = make_splits(records, val_fraction=val, test_fraction=test, seed=seed)
    assert_patient_disjoint(records, split)
    assert split.index.equals(records.index)
    again = make_splits(
        records.sample(frac=1, random_state=1), val_fraction=val, test_fraction=test, seed=seed
    )
    pd.testing.assert_series_equal(split, again.loc[split.index])  # row order does not matter
    # Greedy fill: each held-out split reaches its target (when enough images are left),
    # overshooting by less than one patient.
    n, biggest = len(records), max(sizes)
    n_test, n_val = int((split == "test").sum()), int((split == "val").sum())
    assert n_test >= test * n and (n_test == 0 if test * n == 0 else n_test - biggest < test * n)
    assert n_val >= min(val * n, n - n_test)
    assert n_val == 0 if val * n == 0 else n_val - biggest < val * n


def test_seed_changes_split_and_fractions_hold() -> None:
    records = synthetic_records([1, 2, 3, 4] * 100)
    a = make_splits(records, val_fraction=0.1, test_fraction=0.2, seed=0)
    b = make_splits(records, val_fraction=0.1, test_fraction=0.2, seed=0)
    c = make_splits(records, val_fraction=0.1, test_fraction=0.2, seed=1)
    pd.testing.assert_series_equal(a, b)
    assert not a.equals(c)
    counts = a.value_counts()
    assert abs(counts["test"] - 200) <= 4 and abs(counts["val"] - 100) <= 4


def test_pediatric_split_is_patient_disjoint(pediatric_dir: Path) -> None:
    records = PediatricSource(pediatric_dir).records()
    split = make_splits(records, val_fraction=0.1, test_fraction=0.1, seed=12345)
    assert_patient_disjoint(records, split)
    assert set(split) == {"train", "val", "test"}


def test_official_test_kept_and_val_carved_from_train() -> None:
    official = ["train"] * 40 + ["test"] * 10
    records = synthetic_records([2] * 50, official)
    split = make_splits(records, val_fraction=0.2, test_fraction=0.3, seed=3)
    assert_patient_disjoint(records, split)
    is_test = records["official_split"] == "test"
    assert (split[is_test] == "test").all()  # official test stays test ...
    assert (split[~is_test] != "test").all()  # ... and test_fraction is ignored
    assert (split == "val").sum() == 20  # 20% of 100 images, from official train patients


def test_official_val_is_kept() -> None:
    records = synthetic_records([1] * 30, ["train"] * 20 + ["val"] * 4 + ["test"] * 6)
    split = make_splits(records, val_fraction=0.4, test_fraction=0.4, seed=0)
    pd.testing.assert_series_equal(
        split, records["official_split"].rename("split"), check_dtype=False
    )


def test_patient_in_several_official_splits_goes_to_test() -> None:
    records = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "patient_id": ["p1", "p1", "p2", "p3"],
            "official_split": ["train", "test", "train", np.nan],
        }
    )
    split = make_splits(records, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert split.tolist() == ["test", "test", "train", "train"]


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_invalid_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        make_splits(synthetic_records([1] * 5), val_fraction=val, test_fraction=test, seed=0)
