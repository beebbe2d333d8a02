"""Labelers: the fixed public function y = f(x) in {0, 1}^m whose output the label channel
privatizes (randomized response). Both are fitted on the training split only, and neither is the
evaluation classifier (the evaluation must not grade its own homework):

- ``probe``: the basis' LDA probes on the flow's latents, y_j = [w_j . u > t_j] (unconditional
  flows only: a conditional flow's latents depend on the label it is encoding with);
- ``classifier``: a ``train_classifier.py`` checkpoint, y_j = [sigmoid(logit_j) > 1/2] (train a
  separate one, e.g. ``python src/train_classifier.py task_name=train_release_classifier``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import flatten_latents
from dpglow.privatization.basis import Basis

KINDS = ("probe", "classifier")


class ProbeLabeler:
    """``y_j = [w_j . u > t_j]`` on the flattened latents of the basis' levels."""

    def __init__(self, *, basis: Basis, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in basis.probe_pathologies]
        if missing:
            raise ValueError(f"the basis has no probe for {missing} ({basis.probe_pathologies})")
        rows = [basis.probe_pathologies.index(n) for n in names]
        self.weights = basis.probes[rows]  # [m, d]
        self.thresholds = basis.probe_thresholds[rows]
        self.levels = basis.levels
        self.description = "probe"

    def __call__(self, images: torch.Tensor, latents: list[torch.Tensor] | None) -> torch.Tensor:
        if latents is None:
            raise ValueError("labeler.kind=probe needs an unconditional flow's latents")
        u = flatten_latents([latents[i] for i in self.levels])
        scores = u @ self.weights.to(u).T
        return (scores > self.thresholds.to(u)).to(u.dtype)


class ClassifierLabeler(torch.nn.Module):
    """``y_j = [sigmoid(logit_j) > 1/2]`` of a dpglow classifier checkpoint."""

    def __init__(self, *, ckpt_path: str | Path, names: Sequence[str]) -> None:
        super().__init__()
        from dpglow.classifier import ClassifierModule

        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"labeler checkpoint {path} does not exist: train a release classifier with "
                "`python src/train_classifier.py task_name=train_release_classifier`"
            )
        self.classifier = ClassifierModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True
        ).eval()
        missing = [n for n in names if n not in self.classifier.pathologies]
        if missing:
            raise ValueError(f"{path} does not predict {missing} ({self.classifier.pathologies})")
        self.columns = [self.classifier.pathologies.index(n) for n in names]
        self.description = f"classifier:{path.parent.parent.name}"
        self.path = str(path.resolve())

    @torch.no_grad()
    def forward(self, images: torch.Tensor, latents: Any = None) -> torch.Tensor:
        logits = self.classifier(images)[:, self.columns]
        return (logits > 0).float()


def build_labeler(spec: Mapping[str, Any], *, basis: Basis, names: Sequence[str]):
    kind = spec.get("kind")
    if kind == "probe":
        return ProbeLabeler(basis=basis, names=names)
    if kind == "classifier":
        if not spec.get("ckpt_path"):
            raise ValueError(
                "labeler.kind=classifier needs privacy.labeler.ckpt_path=<release classifier "
                ".ckpt> (not the evaluation classifier)"
            )
        return ClassifierLabeler(ckpt_path=spec["ckpt_path"], names=names)
    raise ValueError(f"privacy.labeler.kind must be one of {KINDS}, got {kind!r}")
