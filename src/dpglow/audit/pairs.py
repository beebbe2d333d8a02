"""The two inputs an audit compares, chosen as far apart as the mechanism allows, and the
statistics an attacker who knows every public model computes from a release.

- ``label_channel`` / ``subspace``: two public images the labeler labels differently, its most
  confident call of each class (with the data holder's own labels, ``labeler.kind=dataset``: an
  image with no finding and one with the most frequent other label set, each carrying its labels
  into the release's label table); where a latent (or detail) channel is released, among those
  the pair whose bounded statistics (a = P u - c, clipped to the mechanism's ball) lie furthest
  apart. Statistics: the log-odds of the classifier that rates the rendering (the labeler, or
  ``render.classifier``) on the release, along the labels that differ; for a label-conditioned
  flow, the log-likelihood ratio log p(x | y_b) - log p(x | y_a) of the pair's labels; and the
  release re-encoded by the public flow (a conditional one with all-zero labels) and projected
  on the released directions, along the difference of the pair.
- DP-GLOW (``laplace_l1`` etc.): a public image x and the image whose latents are -u(x) (the
  prior is symmetric, so it is as typical), quantised to 8 bits: after clipping their latents
  point in opposite directions. Statistic: the release re-encoded and projected on that
  difference.
- pixel baselines: an all-black and an all-white image. Statistic: the mean pixel.

``separation`` is the L1 (or Hamming) distance of the pair's bounded statistics over the
largest the mechanism allows (2R; 1 for a label): near 1, the audit can be tight; far below, its
bound can only be loose (the report says which).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dpglow.flow import flatten_latents, flow_labels, to_flow_input, to_uint8, unflatten_latents
from dpglow.privatizers.base import Privatizer
from dpglow.privatizers.dp_glow import DPGlowPrivatizer
from dpglow.privatizers.labelers import ClassifierLabeler, DatasetLabeler
from dpglow.privatizers.pixel import ImagePrivatizer
from dpglow.privatizers.subspace import SubspacePrivatizer

Statistic = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AuditPair:
    """Inputs ``a`` and ``b`` (uint8 [1, 1, S, S]), ``fillers`` (public images that share the
    audited images' batches), what separates them, and the attacker's statistics. ``labels``:
    with a dataset labeler, the label rows of ``a``, ``b`` and ``fillers`` (``[1, m]``, ``[1, m]``,
    ``[F, m]``) and their names, which the audit writes into its inputs' label table."""

    a: torch.Tensor
    b: torch.Tensor
    fillers: torch.Tensor
    description: dict[str, Any]
    statistics: dict[str, Statistic] = field(default_factory=dict)
    labels: dict[str, Any] | None = None


def _zero_labels(flow, batch: int, device) -> dict[str, torch.Tensor]:
    """``{"y": zeros}`` for a conditional flow (any fixed public labels give an attacker a valid
    re-encoding), ``{}`` for an unconditional one."""
    m = flow.num_conditions
    return {"y": torch.zeros(batch, m, device=device)} if m else {}


@torch.no_grad()
def _encode(flow, images: torch.Tensor, levels: list[int]) -> torch.Tensor:
    device = next(flow.parameters()).device
    x = to_flow_input(images.to(device))
    latents = flow.encode(x, **_zero_labels(flow, len(x), device))
    return flatten_latents([latents[i] for i in levels]).double().cpu()


def _projection(flow, levels: list[int], rows: torch.Tensor, direction: torch.Tensor) -> Statistic:
    """Re-encode a release, project its ``levels`` latents on ``rows`` and then on
    ``direction`` (both public)."""

    def statistic(images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(256):
            out.append((_encode(flow, chunk, levels) @ rows.double().T) @ direction.double())
        return torch.cat(out)

    return statistic


def _labeler_statistic(labeler: ClassifierLabeler) -> Statistic:
    def statistic(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([labeler.logits(c).double().sum(1).cpu() for c in images.split(256)])

    return statistic


def _quietest(norms: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the ``count`` public images with the smallest statistic norms (they share
    the audited images' batches: a clip over the batch would let the audited image through)."""
    return norms.argsort()[:count]


@torch.no_grad()
def _quiet_fillers(
    flow, levels: list[int], rows: torch.Tensor, center: torch.Tensor | None, images: torch.Tensor
) -> torch.Tensor:
    """``images`` with their released statistic (``rows`` u - ``center`` on ``levels``) moved to
    zero and decoded: public inputs with almost nothing to clip, beside which a clip over the
    batch lets an audited image through unclipped."""
    device = next(flow.parameters()).device
    given = _zero_labels(flow, len(images), device)
    latents = flow.encode(to_flow_input(images.to(device)), **given)
    chosen = flatten_latents([latents[i] for i in levels]).double()
    r = rows.double().to(device)
    target = (
        center.double().to(device) if center is not None else torch.zeros(len(r), device=device)
    )
    excess = chosen @ r.T - target  # [N, k]
    chosen = chosen - excess @ torch.linalg.pinv(r).T
    shapes = [latents[i].shape[1:] for i in levels]
    for i, part in zip(levels, unflatten_latents(chosen.to(latents[0].dtype), shapes), strict=True):
        latents[i] = part
    return to_uint8(flow.decode(latents, **given)).cpu()


def _label_set_sides(labels: torch.Tensor) -> torch.Tensor:
    """[N] -1 for the public images with no finding, +1 for those with the most frequent other
    label set (unknown entries read as absent), NaN for the rest: the two sides of a dataset
    labeler's audit pair."""
    known = torch.nan_to_num(labels.float(), nan=0.0)
    sets, inverse, counts = torch.unique(known, dim=0, return_inverse=True, return_counts=True)
    empty = sets.sum(1) == 0
    if not empty.any() or (~empty).sum() == 0:
        raise ValueError("the public images need one with no finding and one with a finding")
    other = int(torch.where(empty, -1, counts).argmax())
    sides = torch.full((len(labels),), torch.nan, dtype=torch.float64)
    sides[inverse == int(empty.nonzero()[0])] = -1.0
    sides[inverse == other] = 1.0
    return sides


def _judge_statistic(judge: ClassifierLabeler, sign: torch.Tensor) -> Statistic:
    """The rendering classifier's log-odds summed with ``sign`` (+1 / -1 / 0 per label)."""

    def statistic(images: torch.Tensor) -> torch.Tensor:
        parts = [judge.logits(c).double().cpu() @ sign.double() for c in images.split(256)]
        return torch.cat(parts)

    return statistic


def _log_ratio(flow, y_a: torch.Tensor, y_b: torch.Tensor) -> Statistic:
    """log p(x | y_b) - log p(x | y_a) under a label-conditioned flow: what an attacker who holds
    the public flow reads of the labels a release was rendered with."""

    @torch.no_grad()
    def statistic(images: torch.Tensor) -> torch.Tensor:
        device = next(flow.parameters()).device
        out = []
        for chunk in images.split(256):
            x = to_flow_input(chunk.to(device))
            given_b, given_a = (y.to(device).expand(len(x), -1) for y in (y_b, y_a))
            out.append((flow.log_prob(x, y=given_b) - flow.log_prob(x, y=given_a)).double().cpu())
        return torch.cat(out)

    return statistic


def _label_scores(
    privatizer: SubspacePrivatizer, public: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor | None:
    """[N] the labeler's signed margin on each public image (> 0: labelled positive; the sum
    over labels for several; NaN: on neither side), or None without a label channel."""
    labeler = privatizer.labeler
    if labeler is None:
        return None
    if isinstance(labeler, DatasetLabeler):
        if labels is None:
            raise ValueError("a dataset labeler's audit needs the public images' labels")
        return _label_set_sides(labels)
    if isinstance(labeler, ClassifierLabeler):
        return torch.cat([labeler.logits(c).double().sum(1).cpu() for c in public.split(256)])
    if hasattr(labeler, "weights"):  # the latent probes: w . u - t
        u = _encode(privatizer.flow, public, labeler.levels)
        margins = u @ labeler.weights.double().T - labeler.thresholds.double()
        return margins.sum(1)
    raise ValueError(f"no audit pair for the labeler {labeler.description}")


def _dataset_pair_labels(
    privatizer: SubspacePrivatizer,
    labels: torch.Tensor,
    pair: tuple[int, int],
    fillers: torch.Tensor,
    statistics: dict[str, Statistic],
) -> dict[str, Any]:
    """A dataset labeler's pair: the label rows the audit writes into its inputs' label table
    (``a``, ``b``, ``fillers``), and the statistics that read labels from a release (added to
    ``statistics``): the render classifier's log-odds along the labels that differ, and for a
    conditional flow (whose conditions are the released labels, in this order) the likelihood
    ratio of the pair's labels."""
    i, j = pair
    if privatizer.judge is not None:
        sign = torch.nan_to_num(labels[j] - labels[i]).sign()
        statistics["render_classifier_logit"] = _judge_statistic(privatizer.judge, sign)
    if privatizer.conditional:
        y_a, y_b = (flow_labels(labels[k : k + 1]) for k in (i, j))
        statistics["conditional_log_ratio"] = _log_ratio(privatizer.flow, y_a, y_b)
    return {
        "names": list(privatizer.label_names),
        "a": labels[i : i + 1],
        "b": labels[j : j + 1],
        "fillers": labels[fillers],
    }


def subspace_pair(
    privatizer: SubspacePrivatizer,
    public: torch.Tensor,
    fillers: int,
    labels: torch.Tensor | None = None,
) -> AuditPair:
    """See the module docstring; ``labels`` ``[N, m]``: the public images' labels in the order
    of the privatizer's ``label_names`` (needed with a dataset labeler)."""
    flow = privatizer.flow
    statistics: dict[str, Statistic] = {
        # the released labels and directions are rendered along the basis: re-encode, project
        "basis_projection": _projection(
            flow, privatizer.levels, privatizer.matrix, torch.eye(privatizer.basis.k)[0]
        )
    }
    if isinstance(privatizer.labeler, ClassifierLabeler):
        statistics["labeler_logit"] = _labeler_statistic(privatizer.labeler)
    if privatizer.detail is not None:
        channel = privatizer.detail
        levels, rows, bound, center = channel.levels, channel.rows, channel.mechanism, None
    else:
        levels, rows, bound = privatizer.levels, privatizer.matrix, privatizer.mechanism
        center = privatizer.center
    description: dict[str, Any] = {"privatizer": privatizer.name}
    scores = _label_scores(privatizer, public, labels)
    candidates = torch.arange(len(public))
    negatives = positives = candidates
    if scores is not None:
        negatives, positives = candidates[scores <= 0], candidates[scores > 0]
        if not len(negatives) or not len(positives):
            raise ValueError("the labeler calls every public image the same: no label pair")
    bounded = None
    if bound is not None:
        a = _encode(flow, public, levels) @ rows.double().T
        a = a - center.double() if center is not None else a
        bounded = bound.statistic(a)
        # the pair furthest apart in the bounded statistic, one from each labelled group; among
        # ties (both clipped to the ball), the one furthest apart before clipping, which a
        # wrong clip (over the batch, or none) would let through
        dist = torch.cdist(bounded[negatives], bounded[positives], p=1)
        raw = torch.cdist(a[negatives], a[positives], p=1)
        flat = int(torch.where(dist >= dist.max() - 1e-9, raw, -1.0).argmax())
        i, j = negatives[flat // len(positives)], positives[flat % len(positives)]
        record = bound.record((bounded.shape[1],))
        description["separation"] = float(dist.flatten()[flat]) / float(record.sensitivity)
        direction = bounded[j] - bounded[i]
        statistics["latent_projection"] = _projection(
            flow, levels, rows, direction / direction.norm().clamp_min(1e-12)
        )
    elif scores is not None:  # labels only: the most confident call of each class
        i = negatives[int(scores[negatives].argmin())]
        j = positives[int(scores[positives].argmax())]
        description["separation"] = 1.0
    else:
        raise ValueError("nothing to audit: no label channel and no latent channel")
    if scores is not None:
        description["label_scores"] = [float(scores[i]), float(scores[j])]
    # quiet fillers: the smallest statistics before clipping (after it, all may tie at R)
    norms = a.abs().sum(1) if bounded is not None else -torch.nan_to_num(scores).abs()
    order = _quietest(norms, fillers)
    quiet = public[order]
    if bounded is not None:
        quiet = _quiet_fillers(flow, levels, rows, center, quiet)
    pair_labels = None
    if isinstance(privatizer.labeler, DatasetLabeler):
        pair_labels = _dataset_pair_labels(privatizer, labels, (i, j), order, statistics)
        description["labels"] = {
            side: [
                n for n, v in zip(pair_labels["names"], pair_labels[side][0], strict=True) if v == 1
            ]
            for side in ("a", "b")
        }
    return AuditPair(
        a=public[i : i + 1].clone(),
        b=public[j : j + 1].clone(),
        fillers=quiet,
        description=description,
        statistics=statistics,
        labels=pair_labels,
    )


@torch.no_grad()
def dpglow_pair(privatizer: DPGlowPrivatizer, public: torch.Tensor, fillers: int) -> AuditPair:
    flow, levels = privatizer.flow, privatizer.levels
    device = next(flow.parameters()).device
    latents = flow.encode(to_flow_input(public.to(device)))
    flat_all = flatten_latents(latents)
    mirrored = to_uint8(flow.decode(unflatten_latents(-flat_all, flow.latent_shapes)))
    u = _encode(flow, public, levels)
    v = _encode(flow, mirrored.cpu(), levels)
    statistic = privatizer.mechanism.statistic
    d = statistic(u) - statistic(v)
    distance = d.abs().sum(1)
    i = int(distance.argmax())
    record = privatizer.mechanism.record((u.shape[1],))
    direction = d[i] / d[i].norm().clamp_min(1e-12)
    rows = torch.eye(u.shape[1], dtype=torch.float64)
    return AuditPair(
        a=mirrored[i : i + 1].cpu().clone(),
        b=public[i : i + 1].clone(),
        fillers=public[_quietest(u.abs().sum(1), fillers)],
        description={
            "privatizer": privatizer.name,
            "separation": float(distance[i]) / float(record.sensitivity),
            "construction": "a public image and the decode of its negated latents",
        },
        statistics={"latent_projection": _projection(flow, levels, rows, direction)},
    )


def pixel_pair(privatizer: ImagePrivatizer, public: torch.Tensor, fillers: int) -> AuditPair:
    side = privatizer.image_size
    black = torch.zeros((1, 1, side, side), dtype=torch.uint8)
    return AuditPair(
        a=black,
        b=black + 255,
        fillers=public[:fillers],
        description={"privatizer": privatizer.name, "separation": 1.0, "construction": "0 vs 255"},
        statistics={"mean_pixel": lambda images: images.double().flatten(1).mean(1)},
    )


def choose_pair(
    privatizer: Privatizer,
    public: torch.Tensor,
    *,
    fillers: int,
    labels: torch.Tensor | None = None,
) -> AuditPair:
    """The audit pair for ``privatizer`` (see the module docstring), among ``public`` images
    (``labels``: theirs, in the order of the privatizer's ``label_names``; a dataset labeler's
    pair needs them)."""
    inner = getattr(privatizer, "inner", privatizer)  # a refined release: audit through it
    if isinstance(inner, SubspacePrivatizer):
        return subspace_pair(inner, public, fillers, labels)
    if isinstance(inner, DPGlowPrivatizer):
        return dpglow_pair(inner, public, fillers)
    if isinstance(inner, ImagePrivatizer):
        return pixel_pair(inner, public, fillers)
    raise ValueError(f"no audit pair for {type(inner).__name__}")
