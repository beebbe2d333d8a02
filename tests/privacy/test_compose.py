"""Sequential composition of records, and an audit of a release made of two mechanisms.

Audit design: one image is a label y in {0, 1} and a 1-D latent a in [-R, R]; the release is
randomized response on y at eps_y and ``laplace_l1`` on a at eps_a, with independent noise. The
neighbours (y=0, a=-R) and (y=1, a=+R) differ in both parts. The statistic is the log-likelihood
ratio of the composed mechanism, eps_y (2 z - 1) + (|w + R| - |w - R|) / b (the optimal test), and
its top event {z = 1, w >= R} has ratio exactly e^(eps_y + eps_a): the bound must stay below the
sum and rise above either part's epsilon alone. The control halves the Laplace noise.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from dpglow.privacy import (
    OS_ENTROPY,
    SEEDED,
    UNVERIFIED,
    GaussianL2,
    LaplaceElementwise,
    LaplaceL1,
    Mechanism,
    PrivacyRecord,
    RandomizedResponse,
    compose,
)

from .audit import FAILURE_PROBABILITY, epsilon_lower_bound, half_noise_class

N_AUDIT = 1_000_000
EPS_Y, EPS_A, RADIUS = 1.0, 2.0, 1.0
OLD_FIELDS = [
    "mechanism",
    "d",
    "clip",
    "norm",
    "sensitivity",
    "epsilon_per_element",
    "epsilon_per_image",
    "delta",
    "noise",
    "noise_scale",
    "noise_source",
    "accounting",
    "private",
]


def _half_noise(mech: Mechanism) -> Mechanism:
    mech.__class__ = half_noise_class(type(mech))
    return mech


def _release_llr(
    rr: RandomizedResponse, laplace: LaplaceL1, y: float, a: float, generator
) -> tuple[torch.Tensor, PrivacyRecord]:
    """N_AUDIT joint releases of one image, reduced to the composed log-likelihood ratio."""
    z, label_record = rr(torch.full((N_AUDIT, 1), y), generator=generator)
    w, latent_record = laplace(torch.full((N_AUDIT, 1), a), generator=generator)
    z, w = z[:, 0].double(), w[:, 0].double()
    b = 2.0 * RADIUS / EPS_A  # the claimed scale (sensitivity 2R), whatever was sampled
    llr = EPS_Y * (2.0 * z - 1.0) + ((w + RADIUS).abs() - (w - RADIUS).abs()) / b
    return llr, compose(parts={"label": label_record, "latent": latent_record})


def _composition_bound(laplace: LaplaceL1, seeded) -> tuple[float, PrivacyRecord]:
    rr, generator = RandomizedResponse(epsilon=EPS_Y), seeded(2026)
    stat_a, record = _release_llr(rr, laplace, 1.0, RADIUS, generator)
    stat_b, _ = _release_llr(rr, laplace, 0.0, -RADIUS, generator)
    top = EPS_Y + EPS_A - 1e-9  # only {z = 1, w >= R} lies above
    bound = epsilon_lower_bound(
        stat_a, stat_b, (0.0, 1.0, 2.0, top), failure_probability=FAILURE_PROBABILITY
    )
    return bound, record


def test_audit_composition(seeded) -> None:
    bound, record = _composition_bound(LaplaceL1(epsilon=EPS_A, radius=RADIUS), seeded)
    assert record.epsilon_per_image == EPS_Y + EPS_A
    assert bound <= record.epsilon_per_image
    # Both parts spend budget: the joint leak exceeds either part's epsilon (measured: 2.96).
    assert bound > max(EPS_Y, EPS_A) + 0.5 and bound > 0.8 * record.epsilon_per_image


def test_audit_composition_catches_half_noise(seeded) -> None:
    laplace = _half_noise(LaplaceL1(epsilon=EPS_A, radius=RADIUS))
    bound, record = _composition_bound(laplace, seeded)
    assert bound > record.epsilon_per_image + 1.0  # true epsilon 1 + 4 (measured: 4.89)


# --- exact behaviour ------------------------------------------------------------------------------


def _records(source: str = OS_ENTROPY) -> dict[str, PrivacyRecord]:
    return {
        "latent": LaplaceL1(epsilon=1.0, radius=2.0).record((4,), noise_source=source),
        "subspace": GaussianL2(epsilon=0.5, delta=1e-6).record((3,), noise_source=source),
        "label": RandomizedResponse(epsilon=0.3, num_labels=2).record(noise_source=source),
    }


def test_compose_sums_and_parts() -> None:
    parts = _records()
    record = compose(parts=parts)
    assert record.mechanism == "laplace_l1+gaussian_l2+randomized_response"
    assert record.noise == "laplace+gaussian+randomized_response"
    assert record.d == 4 + 3 + 2
    assert record.epsilon_per_image == pytest.approx(1.8, rel=1e-15)
    assert record.epsilon_per_element == 1.0  # laplace_l1: one element can move by all of 2R
    assert record.delta == 1e-6
    assert math.isnan(record.noise_scale)
    assert (record.clip, record.norm, record.sensitivity) == (None, None, None)
    assert record.accounting == "per_image"
    assert record.noise_source == OS_ENTROPY and record.private
    assert list(record.parts) == ["latent", "subspace", "label"]
    assert record.parts == {name: part.as_dict() for name, part in parts.items()}
    # The given order is kept.
    flipped = compose(parts={"label": parts["label"], "latent": parts["latent"]})
    assert flipped.mechanism == "randomized_response+laplace_l1"
    assert flipped.epsilon_per_image == 1.3
    assert "label=0.3" in flipped.summary() and "latent=1" in flipped.summary()


def test_compose_noise_sources() -> None:
    seeded = compose(parts=_records(SEEDED))
    assert seeded.noise_source == SEEDED and not seeded.private
    mixed = compose(parts={**_records(), "label": _records(SEEDED)["label"]})
    assert mixed.noise_source == UNVERIFIED and not mixed.private


def test_compose_no_noise_part() -> None:
    parts = {**_records(), "label": RandomizedResponse(epsilon=math.inf).record()}
    record = compose(parts=parts)
    assert record.epsilon_per_image == record.epsilon_per_element == math.inf
    assert record.noise == "laplace+gaussian+none" and not record.private


def test_compose_nests() -> None:
    inner = compose(parts=_records())
    outer = compose(parts={"release": inner, "extra": LaplaceL1(epsilon=0.2).record((5,))})
    assert outer.epsilon_per_image == pytest.approx(2.0, rel=1e-15) and outer.d == 14
    assert outer.parts["release"]["parts"]["label"]["mechanism"] == "randomized_response"


def test_compose_single_part() -> None:
    part = _records()["latent"]
    record = compose(parts={"latent": part})
    assert record.epsilon_per_image == part.epsilon_per_image and record.d == part.d
    assert record.parts == {"latent": part.as_dict()}


@pytest.mark.parametrize(
    ("parts", "error", "match"),
    [
        ({}, ValueError, "at least one"),
        ([("a", None)], TypeError, "mapping"),
        ({"a": {"epsilon_per_image": 1.0}}, TypeError, "PrivacyRecord"),
        ({1: LaplaceL1(epsilon=1.0).record((2,))}, TypeError, "str"),
        (
            {"a": LaplaceElementwise(epsilon=1.0, accounting="per_element").record((4,))},
            ValueError,
            "epsilon_per_image",
        ),
    ],
)
def test_compose_refuses(parts, error, match) -> None:
    with pytest.raises(error, match=match):
        compose(parts=parts)


def test_compose_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        compose(_records())  # type: ignore[misc]


def test_records_serialise_as_before_plus_parts() -> None:
    record = _records()["latent"]
    as_dict = record.as_dict()
    assert list(as_dict) == [*OLD_FIELDS, "parts", "grid"]
    assert list(as_dict) == [f.name for f in dataclasses.fields(PrivacyRecord)]
    assert as_dict["parts"] == {}
    assert {key: as_dict[key] for key in OLD_FIELDS} == {
        key: getattr(record, key) for key in OLD_FIELDS
    }
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_composed_record_is_frozen_hashable_and_serialisable() -> None:
    record = compose(parts=_records())
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.parts = {}  # type: ignore[misc]
    assert hash(record) == hash(compose(parts=_records()))
    assert record == compose(parts=_records())
    restored = json.loads(json.dumps(record.as_dict()))
    assert math.isnan(restored.pop("noise_scale"))
    assert restored["parts"] == record.as_dict()["parts"]
    # as_dict copies: editing it leaves the record alone.
    record.as_dict()["parts"]["label"]["epsilon_per_image"] = 99.0
    assert record.parts["label"]["epsilon_per_image"] == 0.3
