"""Labelers: the fixed public function y = f(x) in {0, 1}^m whose output the label channel
privatizes (randomized response). Both are fitted on the training split only, and neither is the
evaluation classifier (the evaluation must not grade its own homework):

- ``probe``: the basis' LDA probes on the flow's latents, y_j = [w_j . u > t_j] (unconditional
  flows only: a conditional flow's latents depend on the label it is encoding with);
- ``classifier``: a release classifier checkpoint (``python src/train_classifier.py
  --config-name train_release_classifier``), y_j = [logit_j > t_j] with t_j the classifier's own
  decision logit (Youden's threshold on its validation split, stored in the checkpoint; 0 in
  checkpoints from before);
- ``dataset``: the findings the data holder already has for each image (from its radiology
  reports), read from the dataset's own label table by a data source (``labeler.source``, e.g.
  NIH's ``Data_Entry_2017*.csv`` or CheXpert's ``train.csv``/``valid.csv``), matched by file name.
  These labels are private like any labeler's output and go through the same mechanism. Unknown
  labels (CheXpert's uncertain -1 and blank, NaN in dpglow's records) are released as
  ``labeler.unknown``: ``negative`` (default: a finding the report does not state is absent, the
  "U-Zeros" rule) or ``positive`` ("U-Ones").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import flatten_latents
from dpglow.privatizers.basis import Basis
from dpglow.utils.discovery import run_folder

KINDS = ("probe", "classifier", "dataset")
UNKNOWN = ("negative", "positive")


class ProbeLabeler:
    """``y_j = [w_j . u > t_j]`` on the flattened latents of the basis' levels."""

    reads_latents = True

    def __init__(self, *, basis: Basis, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in basis.probe_pathologies]
        if missing:
            raise ValueError(f"the basis has no probe for {missing} ({basis.probe_pathologies})")
        rows = [basis.probe_pathologies.index(n) for n in names]
        self.weights = basis.probes[rows]  # [m, d]
        self.thresholds = basis.probe_thresholds[rows]
        self.levels = basis.levels
        self.description = "probe"

    def __call__(
        self,
        images: torch.Tensor,
        latents: list[torch.Tensor] | None,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        if latents is None:
            raise ValueError("labeler.kind=probe needs an unconditional flow's latents")
        u = flatten_latents([latents[i] for i in self.levels])
        scores = u @ self.weights.to(u).T
        return (scores > self.thresholds.to(u)).to(u.dtype)


class ClassifierLabeler(torch.nn.Module):
    """``y_j = [logit_j > t_j]`` of a dpglow classifier checkpoint (t_j: its decision logits)."""

    reads_latents = False

    def __init__(self, *, ckpt_path: str | Path, names: Sequence[str]) -> None:
        super().__init__()
        from dpglow.classifier.checkpoint import load_classifier

        self.classifier, info = load_classifier(
            ckpt_path,
            what="release classifier",
            make="python src/train_classifier.py --config-name train_release_classifier",
            pass_key="privacy.labeler.ckpt_path",
        )
        path = Path(info["path"])
        missing = [n for n in names if n not in self.classifier.pathologies]
        if missing:
            raise ValueError(f"{path} does not predict {missing} ({self.classifier.pathologies})")
        self.columns = [self.classifier.pathologies.index(n) for n in names]
        self.description = f"classifier:{run_folder(path).name}"
        self.path, self.sha256 = info["path"], info["sha256"]

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, m]`` the classifier's log-odds minus its decision logits: > 0 means the label is
        called positive (uint8 images)."""
        columns = self.columns
        return self.classifier(images)[:, columns] - self.classifier.decision_logits[columns]

    @torch.no_grad()
    def forward(self, images: torch.Tensor, latents: Any = None, names: Any = None) -> torch.Tensor:
        return (self.logits(images) > 0).float()


class DatasetLabeler:
    """The data holder's own labels: ``source`` (a :class:`~dpglow.data.sources.base.
    RecordSource`) lists the dataset's images and labels; an image is matched by its file name
    (the last path component, which NIH and CheXpert keep unique within a dataset, or by its
    full relative path where names repeat), unknown labels become ``unknown``."""

    reads_latents = False

    def __init__(self, *, source: Any, names: Sequence[str], unknown: str = "negative") -> None:
        if unknown not in UNKNOWN:
            raise ValueError(f"labeler.unknown must be one of {UNKNOWN}, got {unknown!r}")
        records = source.records()
        missing = [n for n in names if n not in source.pathologies]
        if missing:
            raise ValueError(f"{source!r} has no labels for {missing} ({source.pathologies})")
        values = torch.tensor(records[list(names)].to_numpy(dtype="float32"))
        values = torch.nan_to_num(values, nan=1.0 if unknown == "positive" else 0.0)
        self.by_key: dict[str, torch.Tensor] = {}
        base = Path(source.root)
        for path, row in zip(records["path"], values, strict=True):
            full = Path(path)
            rel = full.relative_to(base).as_posix() if full.is_relative_to(base) else full.name
            self.by_key[rel] = row
            self.by_key[str(full.resolve())] = row
            self.by_key.setdefault(full.name, row)
        self.unknown = unknown
        self.description = f"dataset:{type(source).__name__}:{source.root}"

    def _lookup(self, name: str) -> torch.Tensor:
        for key in (name, Path(name).as_posix(), Path(name).name):
            if key in self.by_key:
                return self.by_key[key]
        raise KeyError(
            f"{name!r} is not in the label table of {self.description}: every released image "
            "needs its row there (or use labeler.kind=classifier)"
        )

    def __call__(
        self, images: torch.Tensor, latents: Any = None, names: Sequence[str] | None = None
    ) -> torch.Tensor:
        if names is None or len(names) != len(images):
            raise ValueError(
                "labeler.kind=dataset reads each image's labels by its file name: this caller "
                "did not pass the names of the images"
            )
        return torch.stack([self._lookup(str(n)) for n in names]).to(images.device)


def fill_dataset_source(cfg: Any) -> None:
    """With ``privacy.labeler.kind=dataset`` and no ``privacy.labeler.source``, read the labels
    from the task's own data (``cfg.data.source``): the evaluated or audited dataset's table."""
    from omegaconf import OmegaConf, open_dict

    labeler = cfg.privacy.get("labeler") or {}
    if labeler.get("kind") != "dataset" or labeler.get("source") or cfg.get("data") is None:
        return
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    source.pop("_partial_", None)
    with open_dict(cfg):
        labeler.source = source


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
    if kind == "dataset":
        source = spec.get("source")
        if source is None:
            raise ValueError(
                "labeler.kind=dataset needs privacy.labeler.source: the data source of the label "
                "table, e.g. {_target_: dpglow.data.NIHSource, root: /path/to/ChestX-ray14}"
            )
        if not callable(getattr(source, "records", None)):
            from hydra.utils import instantiate

            source = instantiate(source)
        return DatasetLabeler(source=source, names=names, unknown=spec.get("unknown", "negative"))
    raise ValueError(f"privacy.labeler.kind must be one of {KINDS}, got {kind!r}")
