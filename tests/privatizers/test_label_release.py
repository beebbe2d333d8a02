"""The label channel's mechanism follows the number of labels."""

from __future__ import annotations

import pytest
import torch

from dpglow.privacy import RandomizedResponse, noise_generator
from dpglow.privatizers.label_release import LabelRelease, scheduled


def _rr(**kwargs):
    return RandomizedResponse(**kwargs)


def test_the_schedule_picks_the_row_for_epsilon() -> None:
    schedule = [[0, 16, 6], [2, 16, 3], [4, 16, 1], [8, 128, 1]]
    assert scheduled(1.0, schedule) == (16, 6)
    assert scheduled(3.0, schedule) == (16, 3)
    assert scheduled(10.0, schedule) == (128, 1)


def test_one_label_is_randomized_response() -> None:
    release = LabelRelease(
        epsilon=3.0, names=["Pneumonia"], public_labels=torch.ones(5, 1), one_label=_rr
    )
    assert release.describe() == {"label_mechanism": "randomized_response"}
    assert release.flip_probabilities is not None
    generator, source = noise_generator(noise_seed=0)
    y = torch.ones(1000, 1)
    noisy, record = release(y, generator=generator, noise_source=source)
    assert record.mechanism == "randomized_response"
    assert 0.9 < float(noisy.mean()) < 1.0


def _public(n: int = 400, m: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(n, m, generator=g) < 0.15).float()
    y[: n // 2] = 0  # most vectors are empty, as in NIH
    return y


def test_several_labels_are_released_as_one_label_set() -> None:
    release = LabelRelease(
        epsilon=10.0,
        names=list("abcde"),
        public_labels=_public(),
        one_label=_rr,
        label_sets={"schedule": [[0, 8, 1]]},
    )
    described = release.describe()
    assert described["label_mechanism"] == "label_set_response"
    assert described["label_domain_size"] == 8 and len(described["label_domain_sha256"]) == 64
    assert release.flip_probabilities is None
    generator, source = noise_generator(noise_seed=0)
    y = _public()[:50]
    released, record = release(y, generator=generator, noise_source=source)
    assert record.mechanism == "label_set_response" and record.epsilon_per_image == 10.0
    assert released.shape == y.shape and set(released.unique().tolist()) <= {0.0, 1.0}
    # at epsilon 10 nearly every vector that is in the domain comes back as itself
    inside = (release.mechanism.index(y) < release.domain.size).nonzero()[:, 0]
    assert float((released[inside] == y[inside]).all(1).float().mean()) > 0.95


def test_unlabelled_public_data_is_refused() -> None:
    with pytest.raises(ValueError, match="public label vectors"):
        LabelRelease(
            epsilon=3.0,
            names=["a", "b"],
            public_labels=torch.full((20, 2), float("nan")),
            one_label=_rr,
        )


def test_unknown_public_labels_follow_the_stated_rule() -> None:
    public = _public()
    public[:300, 0] = float("nan")  # "a" unknown for most public images (CheXpert's blanks)
    kwargs = dict(epsilon=10.0, names=list("abcde"), one_label=_rr)
    kwargs["label_sets"] = {"schedule": [[0, 8, 1]]}
    for rule, low, high in (("negative", 0.0, 0.25), ("positive", 0.75, 1.0)):
        domain = LabelRelease(public_labels=public, unknown=rule, **kwargs).domain
        # the public prior's frequency of "a": the unknowns counted as the rule says
        frequency = float((domain.prior[:, None] * domain.profiles).sum(0)[0])
        assert low <= frequency <= high and domain.num_public == len(public)
    with pytest.raises(ValueError, match="unknown"):
        LabelRelease(public_labels=public, unknown="drop", **kwargs)
