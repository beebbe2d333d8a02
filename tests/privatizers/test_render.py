"""The renderer's selection: first acceptable draw, best one otherwise, patches redrawn."""

from __future__ import annotations

import pytest
import torch

from dpglow.metrics import saturated_patches
from dpglow.privatizers.render import MAX_ROUND, ReleasedLabels, Renderer, consistency


class FakeDraws:
    """Candidates numbered in drawing order; candidate c of image i is a flat image of value c,
    and the 'labeler' reads logit[c] from it."""

    def __init__(self, logits: dict[int, float], patched: set[int] = frozenset()) -> None:
        self.logit_of, self.patched = logits, set(patched)
        self.count, self.images_of = 0, {}

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = torch.empty((len(index), 1, 16, 16), dtype=torch.uint8)
        for row, i in enumerate(index.tolist()):
            c = self.count
            self.count += 1
            self.images_of.setdefault(i, []).append(c)
            out[row] = c
            if c in self.patched:  # a 4x4 black-white checkerboard
                out[row, 0, :4, :4] = ((torch.arange(4)[:, None] + torch.arange(4)) % 2 * 255).to(
                    torch.uint8
                )
        return out

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        ids = images[:, 0, 8, 8].long().tolist()
        return torch.tensor([[self.logit_of.get(c, -5.0)] for c in ids])


def test_consistency_signs_caps_and_skips_unreleased() -> None:
    logits = torch.tensor([[3.0, -1.0], [-4.0, 5.0]])
    released = torch.tensor([[1.0, 0.0], [1.0, float("nan")]])
    assert consistency(logits, released, margin=2.0).tolist() == [3.0, -4.0]


def test_the_first_acceptable_draw_is_kept_in_rounds_of_at_most_two() -> None:
    fake = FakeDraws({0: 5.0, 4: 5.0, 8: 5.0})
    labels = ReleasedLabels(fake.logits, torch.ones(3, 1), 2.0)
    out = Renderer(candidates=8)(3, draw=fake.draw, labels=labels, generator=None)
    # round 1 (one draw each): 0, 1, 2, and image 0 accepts 0; round 2 (two each, for images 1
    # and 2): 3, 4 and 5, 6, image 1 accepts 4; round 3 (two, not four, for image 2): 7, 8
    assert MAX_ROUND == 2
    assert fake.images_of == {0: [0], 1: [1, 3, 4], 2: [2, 5, 6, 7, 8]}
    assert fake.count == 9
    assert out[:, 0, 8, 8].tolist() == [0, 4, 8]


def test_no_acceptable_draw_gives_the_most_consistent_and_stops_at_the_budget() -> None:
    fake = FakeDraws({c: float(c % 7) / 10 for c in range(100)})  # never reaches the margin
    labels = ReleasedLabels(fake.logits, torch.ones(1, 1), 2.0)
    out = Renderer(candidates=6)(1, draw=fake.draw, labels=labels, generator=None)
    seen = fake.images_of[0]
    assert len(seen) == 6
    assert int(out[0, 0, 8, 8]) == max(seen, key=lambda c: (c % 7, -c))


def test_a_released_zero_wants_negative_log_odds() -> None:
    fake = FakeDraws({0: 5.0, 1: -5.0})
    labels = ReleasedLabels(fake.logits, torch.zeros(1, 1), 2.0)
    out = Renderer(candidates=4)(1, draw=fake.draw, labels=labels, generator=None)
    assert int(out[0, 0, 8, 8]) == 1


def test_patched_candidates_are_redrawn_unless_allowed() -> None:
    fake = FakeDraws({}, patched={0, 1})
    out = Renderer(candidates=4)(1, draw=fake.draw, labels=None, generator=None)
    assert int(out[0, 0, 8, 8]) == 2
    fake = FakeDraws({}, patched={0, 1})
    out = Renderer(candidates=4, redraw_saturated=False)(
        1, draw=fake.draw, labels=None, generator=None
    )
    assert int(out[0, 0, 8, 8]) == 0 and fake.count == 1


def test_renderer_settings_are_validated_and_described() -> None:
    assert Renderer(candidates=3, margin=1.5).describe() == {
        "render_candidates": 3,
        "render_margin": 1.5,
        "render_redraw_saturated": True,
        "render_guidance": 1.0,
    }
    bad_settings = (
        {"candidates": 0},
        {"candidates": 2.0},
        {"margin": 0},
        {"margin": "2"},
        {"guidance": 0.5},
        {"guidance": True},
    )
    for bad in bad_settings:
        with pytest.raises(ValueError, match="render"):
            Renderer(**bad)


def test_guidance_scales_the_estimate_away_from_the_centre() -> None:
    estimate = torch.tensor([[-2.0, 1.0], [0.5, 3.0]])
    center = torch.tensor([-1.0, 1.0])
    assert torch.equal(Renderer().guide(estimate, center), estimate)
    guided = Renderer(guidance=2.0).guide(estimate, center)
    assert torch.allclose(guided, torch.tensor([[-3.0, 1.0], [2.0, 5.0]]))
    # the centre is a fixed point; distances from it grow by the factor
    assert torch.allclose((guided - center).abs(), 2 * (estimate - center).abs())


def test_images_left_with_only_patched_candidates_are_redrawn_by_the_fallback() -> None:
    # image 0: every draw patched; image 1: its first draw is clean
    fake = FakeDraws({}, patched={c for c in range(100) if c != 1})
    asked = []

    def fallback(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        asked.extend(index.tolist())
        return torch.full((len(index), 1, 16, 16), 200, dtype=torch.uint8)  # clean

    renderer = Renderer(candidates=3)
    out = renderer(2, draw=fake.draw, labels=None, generator=None, fallback=fallback)
    assert fake.images_of == {0: [0, 2, 3], 1: [1]}  # 3 candidates: 1, then rounds of 2
    assert asked == [0]  # only the stuck image, once: its first fallback draw is acceptable
    assert int(out[0, 0, 8, 8]) == 200 and int(out[1, 0, 8, 8]) == 1
    # without a fallback the stuck image keeps its best (patched) candidate
    fake = FakeDraws({}, patched={c for c in range(100) if c != 1})
    out = renderer(2, draw=fake.draw, labels=None, generator=None)
    assert int(out[0, 0, 8, 8]) != 200 and bool(saturated_patches(out[:1]).item() > 0)
