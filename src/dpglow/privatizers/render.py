"""Rendering: how a release becomes an image (post-processing, free under LDP).

A renderer sees the release (the released labels, the noisy latent directions after their
post-processing), public models and fresh randomness, never the original image, so whatever it
does costs no privacy and leaves the record unchanged. :class:`Renderer` draws candidates of the
release (each an independent decode of the released part with fresh draws for the rest) and keeps
for each image the first candidate that

1. shows the released labels to the public labeler (the release classifier, never the
   evaluation classifier): its log-odds for every released label, signed towards the released
   value, reach ``margin`` (candidates that fall short are ranked by the sum of their signed
   log-odds, each capped at ``margin``), and
2. has no saturated patch (:func:`~dpglow.metrics.saturated_patches`), when ``redraw_saturated``.

Candidates are drawn in rounds (1, then ``MAX_ROUND`` per image, up to ``candidates`` in all)
for the images that have no acceptable one yet, so an image costs one decode when its first draw
is acceptable.
Taking the first acceptable draw is rejection sampling: the image is a draw from the flow's
rendering of the release conditioned on the labeler reading the released labels, not the most
extreme candidate, so releases stay as varied as the flow's samples. An image with no acceptable
candidate after ``candidates`` draws gets its best one (highest capped consistency, patch-free
first).

``guidance`` s >= 1 moves the released directions' estimate away from the public centre c of
the training projections before the candidates are drawn, a^ -> c + s (a^ - c): along a label's
supervised direction the estimate for a released label is the mean of its public class, which
sits between the classes' bulk and renders less clearly than the class's typical image; s > 1
renders the released class more plainly (validation split, docs/results.md). It moves k of the
flow's thousands of latent elements, so the candidates stay as typical as the flow's samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dpglow.metrics import saturated_patches

# draw(index, generator) -> uint8 candidates, one for each image index (a LongTensor into the
# batch; an index may repeat).
Draw = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# The most candidates one round draws per pending image: larger rounds batch better but draw past
# the first acceptable candidate (a round of 4 where 1 would do wastes 3 decodes). With 32
# candidates on the pediatric test split (eps 3, 2 threads) rounds of at most 2 ran 17.4
# images/s, of 4 16.1, doubling rounds 10.2.
MAX_ROUND = 2
# The key of a candidate with a saturated patch is its consistency plus this: below every clean one.
PATCHED = -1e9


def consistency(logits: torch.Tensor, released: torch.Tensor, *, margin: float) -> torch.Tensor:
    """Sum over labels of the labeler's log-odds signed towards the released value (+ for a
    released 1, - for a 0), each capped at ``margin``; labels released as NaN count 0.
    ``[n, m]`` logits and released labels -> ``[n]``."""
    signed = torch.where(released == 1, logits, -logits).clamp(max=margin)
    return torch.where(torch.isnan(released), torch.zeros_like(signed), signed).sum(dim=1)


class ReleasedLabels:
    """How clearly a public labeler reads each candidate as its image's released labels.

    ``logits(images)`` is the labeler's log-odds ``[n, m]``; ``released`` ``[B, m]`` the
    released labels of the batch (NaN: nothing released for that label)."""

    def __init__(
        self, logits: Callable[[torch.Tensor], torch.Tensor], released: torch.Tensor, margin: float
    ) -> None:
        self.logits, self.released, self.margin = logits, released, margin

    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``[n]`` :func:`consistency` of the candidates ``images`` of the images ``index``."""
        released = self.released[index.to(self.released.device)]
        return consistency(self.logits(images).to(released), released, margin=self.margin)

    def subset(self, rows: torch.Tensor) -> ReleasedLabels:
        """The released labels of the batch's images ``rows`` only, indexed from 0."""
        return ReleasedLabels(
            self.logits, self.released[rows.to(self.released.device)], self.margin
        )

    def cap(self, index: torch.Tensor) -> torch.Tensor:
        """``[n]`` the consistency at which every released label of the image reads clearly."""
        known = ~torch.isnan(self.released[index.to(self.released.device)])
        return self.margin * known.sum(dim=1)


class Renderer:
    """See the module docstring. ``candidates=1`` renders one draw per image (no selection);
    ``margin`` is in log-odds (2: the labeler at 88 % for the released value);
    ``redraw_saturated`` redraws candidates with a saturated patch; ``guidance`` (>= 1, 1: none)
    scales the released directions' estimate away from the public centre (module docstring)."""

    def __init__(
        self,
        *,
        candidates: int = 1,
        margin: float = 2.0,
        redraw_saturated: bool = True,
        guidance: float = 1.0,
    ) -> None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"render.candidates must be an int >= 1, got {candidates!r}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
            raise ValueError(f"render.margin must be a number > 0, got {margin!r}")
        number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
        if not number or not guidance >= 1:
            raise ValueError(f"render.guidance must be a number >= 1 (1: none), got {guidance!r}")
        self.candidates, self.margin = candidates, float(margin)
        self.redraw_saturated = bool(redraw_saturated)
        self.guidance = float(guidance)

    def describe(self) -> dict[str, Any]:
        return {
            "render_candidates": self.candidates,
            "render_margin": self.margin,
            "render_redraw_saturated": self.redraw_saturated,
            "render_guidance": self.guidance,
        }

    def guide(self, estimate: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """``center + guidance * (estimate - center)`` (``[B, k]``, ``center`` ``[k]``)."""
        if self.guidance == 1.0:
            return estimate
        return center + self.guidance * (estimate - center)

    def __call__(
        self,
        batch: int,
        *,
        draw: Draw,
        labels: ReleasedLabels | None,
        generator: torch.Generator,
        fallback: Draw | None = None,
    ) -> torch.Tensor:
        """uint8 renderings of ``batch`` releases: ``draw`` makes candidates for image indices,
        ``labels`` (None: no labels to show) rates them. ``fallback`` (with ``redraw_saturated``)
        draws candidates another way for the images none of whose ``candidates`` draws was free
        of saturated patches (up to ``candidates`` more each; the unguided estimate, for the
        subspace release)."""
        best, best_key = self._select(batch, draw, labels, generator)
        stuck = torch.nonzero(best_key < PATCHED / 2).flatten()
        if fallback is not None and len(stuck):  # none without redraw_saturated
            sub_labels = labels.subset(stuck) if labels is not None else None

            def sub_draw(index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
                return fallback(stuck[index.cpu()].to(index.device), gen)

            again, _ = self._select(len(stuck), sub_draw, sub_labels, generator)
            best[stuck.to(best.device)] = again
        return best

    def _select(
        self, batch: int, draw: Draw, labels: ReleasedLabels | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The selection of the module docstring: the kept candidate of each image and its key."""
        best_images: torch.Tensor | None = None
        best_key = torch.full((batch,), -torch.inf, dtype=torch.float64)
        pending = torch.arange(batch)
        drawn, chunk = 0, 1
        while len(pending) and drawn < self.candidates:
            chunk = min(chunk, self.candidates - drawn)
            index = pending.repeat_interleave(chunk)
            images = draw(index, generator)
            key, accepted = self._rate(images, index, labels)
            if best_images is None:
                best_images = images.new_empty((batch, *images.shape[1:]))
            # per image, the first candidate of this round with the highest key (stable order)
            key_grid = key.view(len(pending), chunk)
            first_best = key_grid.argmax(dim=1)
            round_key = key_grid.max(dim=1).values
            take = torch.arange(len(pending)) * chunk + first_best
            better = round_key > best_key[pending]
            best_key[pending[better]] = round_key[better]
            best_images[pending[better].to(images.device)] = images[take[better].to(images.device)]
            done = accepted.view(len(pending), chunk).any(dim=1)
            pending = pending[~done]
            drawn += chunk
            chunk = min(2 * chunk, MAX_ROUND)
        assert best_images is not None
        return best_images, best_key

    def _rate(
        self, images: torch.Tensor, index: torch.Tensor, labels: ReleasedLabels | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(key, accepted) per candidate: the key orders candidates (patch-free first, then the
        capped consistency); accepted ones end the search for their image."""
        n = len(images)
        consistent = torch.zeros(n, dtype=torch.float64)
        accepted = torch.ones(n, dtype=torch.bool)
        if labels is not None:
            consistent = labels(images, index).double().cpu()
            accepted &= consistent >= labels.cap(index).double().cpu() - 1e-9
        clean = torch.ones(n, dtype=torch.bool)
        if self.redraw_saturated:
            clean = (saturated_patches(images) == 0).cpu()
            accepted &= clean
        key = consistent + torch.where(clean, 0.0, PATCHED).double()
        return key, accepted
