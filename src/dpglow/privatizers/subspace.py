"""``privacy=subspace`` and ``privacy=label_channel``: release the pathology labels and/or chosen
latent directions; render everything else from the flow.

For an image x with standardised latent u (the basis' levels, flattened, d elements):

1. labels (``label_fraction`` f > 0): y = labeler(x) in {0, 1}^m, a fixed function of the
   image (a release classifier trained on public data, the basis' latent probes, or the data
   holder's own labels), released at epsilon_label = min(f * epsilon, ``max_label_epsilon``) by
   :class:`~dpglow.privatizers.label_release.LabelRelease`: randomized response for one label,
   the label-set mechanism for several;
2. latents, the rest of the budget epsilon_latent: either the ``detail`` channel
   (:mod:`dpglow.privatizers.detail`: k(epsilon) directions that move the decoded image most,
   the exact discrete Laplace L1 mechanism), or ``mechanism`` on a = P u - c in R^k (P: the fitted
   :class:`~dpglow.privatizers.basis.Basis`; c: the middle of the public training projections'
   range, (q_5% + q_95%) / 2 per direction, a public constant that centres the clipping ball on
   the data; ``laplace_l1`` / ``gaussian_l2`` / ``discrete_laplace_l1`` in R^k, sensitivity 2R);
3. post-processing (free: it sees only the release and public data) estimates a from it,
   ``postprocess``:
   - ``public_posterior_mean`` / ``public_posterior_sample``: the exact posterior under the public
     empirical prior, i.e. over the N public training points with projections A_i and labels Y_i,
     w_i ~ P(y~ | Y_i) p(a~ | bound(A_i - c)), the mean sum_i w_i A_i or a draw A_I, I ~ w
     (unknown training labels count as P = 1/2);
   - ``released_label_mean`` / ``released_label_sample``: the same, taking the released labels as
     the true ones (P(y~ | Y_i) = 1 if they agree, else ~0): it renders the released diagnosis
     instead of hedging towards the other class, which is what a classifier reading the image
     needs at small epsilon (the posterior mean of a near the decision boundary renders neither);
   - ``posterior_mean`` / ``posterior_sample``: per coordinate under a N(0, 1) prior;
   - ``none``: a~ + c itself;
4. rendering (:mod:`dpglow.privatizers.render`): candidates u' = P^T a^ + (I - P^T P) v with
   v ~ N(0, T^2 I_d) fresh, the other levels fresh N(0, T_o^2) draws (T_o =
   ``other_levels_temperature``, by default T), the detail channel's estimate spliced into its
   span, decoded (a conditional flow decodes with the released labels); the first candidate the
   public classifier (the labeler when it is a release classifier, else ``render.classifier``)
   reads as the released labels, with no saturated patch, is released.

Per-image epsilon = epsilon_label + epsilon_latent = epsilon (basic composition; the record holds
both parts). ``max_label_epsilon`` caps epsilon_label: beyond a few units randomized response
flips fewer labels than the labeler gets wrong, so more label budget buys nothing, and the rest
buys detail of the image itself. Temperatures, candidates and the selection are post-processing:
whatever they are, the release depends on the image only through the released labels and
directions, so they cost no privacy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from dpglow.flow import Glow, flatten_latents, to_flow_input, to_uint8, unflatten_latents
from dpglow.privacy import OS_ENTROPY, PrivacyRecord, compose
from dpglow.privatizers.base import Privatizer, check_images
from dpglow.privatizers.basis import BasisError, configured_basis
from dpglow.privatizers.budget import check_cap, check_fraction, split_budget
from dpglow.privatizers.detail import detail_channel, detail_spec
from dpglow.privatizers.estimate import POSTPROCESS, PublicEstimate
from dpglow.privatizers.label_release import LabelRelease
from dpglow.privatizers.labelers import ClassifierLabeler, build_labeler
from dpglow.privatizers.latents import (
    assemble_latents,
    check_temperature,
    levels_label,
)
from dpglow.privatizers.render import ReleasedLabels, Renderer


class SubspacePrivatizer(PublicEstimate, Privatizer):
    """See the module docstring. ``basis``: ``{kind, k, levels, path}`` (``path`` null: the file
    ``fit_basis.py`` saved beside the flow for these settings). ``mechanism`` and ``labels`` are
    partials that take ``epsilon`` (the task's per-image epsilon is split by ``label_fraction``).
    ``labeler``: ``{kind: probe | classifier | dataset, ...}``; ``label_sets``: the label-set
    mechanism's rule and schedule; ``render``: :class:`~dpglow.privatizers.render.Renderer`'s
    settings; ``detail``: the detail channel's basis, directions per epsilon and mechanism."""

    # Chosen on the pediatric validation split (docs/results.md, "Choosing the rendering"): at
    # temperature 1 with the renderer's selection the releases are as varied and as real as the
    # flow's own samples and keep the released diagnosis; at 0.1 every release of a class is
    # nearly the same image.
    default_temperature = 1.0

    def __init__(
        self,
        *,
        flow: Glow,
        flow_info: Mapping[str, Any] | None = None,
        epsilon: float,
        basis: Mapping[str, Any],
        mechanism: Callable[..., Any] | None = None,
        labels: Callable[..., Any] | None = None,
        label_fraction: float = 0.0,
        max_label_epsilon: float | None = None,
        labeler: Mapping[str, Any] | None = None,
        label_sets: Mapping[str, Any] | None = None,
        postprocess: str = "public_posterior_mean",
        temperature: float = 1.0,
        other_levels_temperature: float | None = None,
        render: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        n_bits: int = 8,
    ) -> None:
        if postprocess not in POSTPROCESS:
            raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
        self.flow, self.n_bits = flow.eval(), n_bits
        self.temperature = check_temperature(temperature)
        self.other_levels_temperature = (
            self.temperature
            if other_levels_temperature is None
            else check_temperature(other_levels_temperature)
        )
        self.postprocess = postprocess
        render = dict(render or {})
        render_classifier = render.pop("classifier", None)
        self.renderer = Renderer(**render)
        self.label_fraction = check_fraction(label_fraction)
        self.epsilon = float(epsilon)
        self.conditional = int(getattr(flow, "num_conditions", 0) or 0) > 0
        self.basis = configured_basis(basis, self.flow, flow_info)
        self.levels = self.basis.levels
        self.matrix = self.basis.matrix  # [k, d]
        train = self.basis.train_projections
        q = torch.quantile(train.double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
        self.center = ((q[0] + q[1]) / 2).float()  # [k], public
        self.max_label_epsilon = check_cap(max_label_epsilon)
        eps_label, eps_latent = split_budget(
            self.epsilon, label_fraction=self.label_fraction, max_label_epsilon=max_label_epsilon
        )
        self._latent_part(eps_latent, mechanism, detail, flow_info)
        self._label_part(eps_label, labels, labeler, label_sets, flow_info)
        self._prior_labels = self._training_labels()
        self.judge = self._judge(render_classifier)

    # ------------------------------------------------------------------ set-up

    def _latent_part(self, epsilon: float, mechanism, detail, flow_info) -> None:
        """The latent channel's share: the detail channel when configured, else ``mechanism`` on
        the basis' k directions (none at epsilon 0)."""
        self.mechanism, self.detail = None, None
        if epsilon <= 0:
            return
        if detail_spec(detail) is not None:
            self.detail = detail_channel(
                detail, flow=self.flow, flow_info=flow_info, epsilon=epsilon, label_basis=self.basis
            )
            return
        if mechanism is None:
            raise ValueError("label_fraction < 1 needs a latent mechanism (privacy.mechanism)")
        self.mechanism = mechanism(epsilon=epsilon)
        self._latent_record = self.mechanism.record((self.basis.k,))
        # What the mechanism would see for each public training point (its likelihood term).
        train = self.basis.train_projections.double()
        self._bounded_train = self.mechanism.statistic(train - self.center.double())

    def _label_part(self, epsilon: float, labels, labeler, label_sets, flow_info) -> None:
        """The label channel's share: the labeler and the mechanism for its labels."""
        self.labeler, self.label_mechanism, self.label_names = None, None, []
        if self.label_fraction <= 0:
            if self.conditional:
                raise ValueError(
                    "a label-conditioned flow decodes with a released label: use "
                    "privacy=label_channel (privacy.label_fraction > 0)"
                )
            return
        if labels is None or labeler is None:
            raise ValueError("label_fraction > 0 needs privacy.labels and privacy.labeler")
        self.label_names = self._label_names(flow_info, labeler.get("kind"))
        self.labeler = build_labeler(labeler, basis=self.basis, names=self.label_names)
        self.label_mechanism = LabelRelease(
            epsilon=epsilon,
            names=self.label_names,
            public_labels=self._training_labels(),
            one_label=labels,
            label_sets=label_sets,
            unknown=labeler.get("unknown") or "negative",
        )
        if self.label_mechanism.flip_probabilities is None and not self.postprocess.startswith(
            "released_label"
        ):
            raise ValueError(
                "several labels are released as one label set: use a released_label_* "
                f"postprocess, not {self.postprocess!r}"
            )

    def _judge(self, ckpt_path: str | None) -> ClassifierLabeler | None:
        """The public classifier that rates rendering candidates: ``render.classifier`` (a
        release classifier checkpoint, for labelers that are not one: the data holder's own
        labels, the probes), else the labeler when it is a classifier, else none."""
        if ckpt_path:
            if self.labeler is None:
                raise ValueError(
                    "privacy.render.classifier rates released labels: none are released"
                )
            return ClassifierLabeler(ckpt_path=ckpt_path, names=self.label_names)
        return self.labeler if isinstance(self.labeler, ClassifierLabeler) else None

    def _label_names(self, flow_info: Mapping[str, Any] | None, kind: str) -> list[str]:
        """The released labels: a conditional flow's conditions; with the data holder's own
        labels, every pathology of the flow's training data; else the basis' probed ones."""
        if self.conditional:
            names = list((flow_info or {}).get("condition_pathologies") or [])
            if len(names) != self.flow.num_conditions:
                raise ValueError("the conditional flow's checkpoint does not name its conditions")
            return names
        if kind == "dataset":
            return list(self.basis.pathologies)
        if not self.basis.probe_pathologies:
            raise BasisError("the basis has no probed pathology to release as a label")
        return list(self.basis.probe_pathologies)

    def _training_labels(self) -> torch.Tensor | None:
        """The public training points' labels for the released label names ([N, m], NaN kept)."""
        if not self.label_names:
            return None
        cols = [self.basis.pathologies.index(n) for n in self.label_names]
        return self.basis.train_labels[:, cols]

    # ------------------------------------------------------------------ protocol

    @property
    def name(self) -> str:  # type: ignore[override]
        return "subspace" if self.label_fraction == 0 else "label_channel"

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        parts = {}
        if self.label_mechanism is not None:
            parts["labels"] = self.label_mechanism.record(noise_source=noise_source)
        if self.mechanism is not None:
            parts["latent"] = self.mechanism.record((self.basis.k,), noise_source=noise_source)
        if self.detail is not None:
            parts["latent"] = self.detail.record(noise_source=noise_source)
        if len(parts) == 1:  # one mechanism: its own record, calibration included
            return next(iter(parts.values()))
        return compose(parts=parts)

    def describe(self) -> dict[str, Any]:
        out = {
            "mechanism": self.name,
            "epsilon": self.epsilon,
            "levels": levels_label(self.levels, len(self.flow.levels)),
            "basis": self.basis.kind,
            "k": self.basis.k,
            "basis_path": self.basis.path,
            "basis_sha256": self.basis.sha256,
            "label_fraction": self.label_fraction,
            "max_label_epsilon": self.max_label_epsilon,
            "postprocess": self.postprocess,
            "temperature": self.temperature,
            "other_levels_temperature": self.other_levels_temperature,
            **self.renderer.describe(),
            "render_classifier": getattr(self.judge, "path", None),
            "render_classifier_sha256": getattr(self.judge, "sha256", None),
            **(self.detail.describe() if self.detail is not None else {}),
        }
        if self.mechanism is not None:
            out["latent_mechanism"] = self.mechanism.name
            out.update(self.mechanism.params())
        if self.labeler is not None:
            out["labeler"] = self.labeler.description
            out["labeler_path"] = getattr(self.labeler, "path", None)
            out["labeler_sha256"] = getattr(self.labeler, "sha256", None)
            out["labels"] = ",".join(self.label_names)
            out.update(self.label_mechanism.describe())
        return out

    def modules(self) -> dict[str, torch.nn.Module]:
        parts = {"flow": self.flow}
        if isinstance(self.labeler, torch.nn.Module):
            parts["labeler"] = self.labeler
        if self.judge is not None and self.judge is not self.labeler:
            parts["render_classifier"] = self.judge
        return parts

    # ------------------------------------------------------------------ release

    def _released(
        self,
        images: torch.Tensor,
        x: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """The randomized part of the release: (the released labels or None, the estimate a^ of
        the basis' directions from the release, the detail channel's release or None). The
        image's latents are needed only by the probe labeler and by a latent mechanism or the
        detail channel; a release of labels alone never encodes (it costs one pass of the flow).
        An unconditional flow encodes before the labeler (the probe reads its latents); a
        conditional one encodes with the released labels."""
        device, dtype = x.device, x.dtype
        reads = self.labeler is not None and getattr(self.labeler, "reads_latents", True)
        reads = reads and not self.conditional
        latents = self.flow.encode(x) if reads else None
        noisy_y = None
        if self.labeler is not None:
            y = self.labeler(images, latents, names)
            noisy_y, _ = self.label_mechanism(y, generator=generator, noise_source=noise_source)
        cond = {"y": noisy_y} if self.conditional else {}
        if latents is None and (self.mechanism is not None or self.detail is not None):
            latents = self.flow.encode(x, **cond)
        noisy_a = None
        if self.mechanism is not None:
            a = flatten_latents([latents[i] for i in self.levels]) @ self.matrix.to(device, dtype).T
            a = a - self.center.to(device, dtype)
            noisy_a, _ = self.mechanism(a, generator=generator, noise_source=noise_source)
        estimate = self._estimate(noisy_a, noisy_y, generator, device).to(dtype)
        detail = None
        if self.detail is not None:
            flat = flatten_latents([latents[i] for i in self.detail.levels])
            detail = self.detail.release(flat, generator=generator, noise_source=noise_source)
        return noisy_y, estimate, detail

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        check_images(images, self.flow.image_size)
        x = to_flow_input(images, n_bits=self.n_bits)
        device, dtype = x.device, x.dtype
        noisy_y, unguided, detail = self._released(
            images, x, generator=generator, noise_source=noise_source, names=names
        )
        matrix = self.matrix.to(device, dtype)
        guided = self.renderer.guide(unguided, self.center.to(device, dtype))

        def draw(
            index: torch.Tensor, generator: torch.Generator, a_hat: torch.Tensor = guided
        ) -> torch.Tensor:
            """One candidate rendering of the release of each image in ``index``."""
            index = index.to(device)
            v = self.temperature * torch.randn(
                (len(index), matrix.shape[1]), generator=generator, device=device, dtype=dtype
            )
            u = a_hat[index] @ matrix + v - (v @ matrix.T) @ matrix
            out = assemble_latents(
                self.flow,
                self.levels,
                u,
                temperature=self.other_levels_temperature,
                generator=generator,
            )
            if detail is not None:
                levels = self.detail.levels
                flat = self.detail.apply(flatten_latents([out[i] for i in levels]), detail[index])
                shapes = [self.flow.latent_shapes[i] for i in levels]
                for level, part in zip(levels, unflatten_latents(flat, shapes), strict=True):
                    out[level] = part
            given = {"y": noisy_y[index]} if self.conditional else {}
            return to_uint8(self.flow.decode(out, **given), n_bits=self.n_bits)

        labels = None
        if self.judge is not None and noisy_y is not None:
            labels = ReleasedLabels(self.judge.logits, noisy_y, self.renderer.margin)
        # Where guidance leaves an image no candidate free of saturated patches (the detail
        # channel's own directions against an exaggerated class direction), it is rendered from
        # the unguided estimate.
        fallback = None
        if self.renderer.guidance != 1.0:

            def fallback(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
                return draw(index, generator, unguided)

        return self.renderer(
            len(images), draw=draw, labels=labels, generator=generator, fallback=fallback
        )
