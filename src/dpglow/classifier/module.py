"""LightningModule around torchxrayvision's DenseNet: own weights trained on the training split, or
pretrained weights by name where they can be downloaded."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dpglow.classifier.contract import to_xrv_input
from dpglow.utils.optim import build_optimizers

log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """Pretrained torchxrayvision weights could not be obtained (e.g. no internet)."""


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known labels only (NaN = unknown, never a negative)."""
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], labels[known])


def _load_pretrained(weights: str, pathologies: Sequence[str]) -> tuple[torch.nn.Module, list[int]]:
    import torchxrayvision as xrv

    try:
        model = xrv.models.get_model(weights)
    except Exception as err:  # ConnectionError offline, HTTP errors, unknown names
        raise PretrainedWeightsError(
            f"could not load torchxrayvision weights {weights!r} ({type(err).__name__}: {err}). "
            "Without internet, train the classifier locally on the training split instead: "
            "`python src/train_classifier.py data=<dataset>` (model.weights=null), then pass its "
            "checkpoint."
        ) from err
    index = []
    for name in pathologies:
        if name not in model.pathologies or not model.pathologies[model.pathologies.index(name)]:
            raise PretrainedWeightsError(
                f"weights {weights!r} have no output for {name!r} (they cover "
                f"{[p for p in model.pathologies if p]}); train own weights instead"
            )
        index.append(model.pathologies.index(name))
    return model, index


class ClassifierModule(pl.LightningModule):
    """Multi-label chest X-ray classifier for the dataset's ``pathologies``.

    ``weights=None`` builds torchxrayvision's ``DenseNet`` architecture (1 channel) with one output
    per pathology, trained here with a loss that masks unknown (NaN) labels. A weight name (e.g.
    ``densenet121-res224-chex``) loads pretrained weights and maps their outputs to ``pathologies``.
    Metrics: ``train/loss``, ``val/auc_mean``, ``test/auc_mean`` and ``test/auc_<pathology>``.
    """

    def __init__(
        self,
        *,
        pathologies: Sequence[str],
        image_size: int = 64,
        weights: str | None = None,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        drop_rate: float = 0.0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        if not pathologies:
            raise ValueError(
                "the classifier needs labelled data: this dataset has no pathologies "
                "(data=folder has no labels); use data=pediatric, nih, chexpert or a MedMNIST set"
            )
        # Plain Python containers (not Hydra's ListConfig), so checkpoints load with weights_only.
        pathologies, block_config = list(pathologies), tuple(block_config)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.pathologies = pathologies
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if weights:
            self.model, index = _load_pretrained(weights, self.pathologies)
            self.register_buffer("output_index", torch.tensor(index), persistent=False)
            self.resolution = 224
        else:
            import torchxrayvision as xrv

            self.model = xrv.models.DenseNet(
                weights=None,
                num_classes=len(self.pathologies),
                in_channels=1,
                growth_rate=growth_rate,
                block_config=block_config,
                num_init_features=num_init_features,
                drop_rate=drop_rate,
            )
            self.output_index = None
            self.resolution = image_size
        # Per pathology, the logit above which an image is called positive: Youden's threshold on
        # the validation split of the last validation (0, i.e. probability 1/2, until then).
        self.register_buffer("decision_logits", torch.zeros(len(self.pathologies)))
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, P]`` (pretrained weights: their calibrated scores) for uint8 or
        flow-range images."""
        out = self.model(to_xrv_input(images, resolution=self.resolution))
        return out if self.output_index is None else out[:, self.output_index]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled DenseNet features ``[B, F]`` (for linkage attacks and Frechet distances)."""
        return self.model.features2(to_xrv_input(images, resolution=self.resolution))

    @torch.no_grad()
    def score_and_embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B, P], features [B, F])`` from one pass: the same scores as ``forward``
        (logits for own weights, torchxrayvision's calibrated outputs for pretrained ones)."""
        features = self.model.features2(to_xrv_input(images, resolution=self.resolution))
        out = self.model.classifier(features)
        if getattr(self.model, "op_threshs", None) is not None:
            from torchxrayvision.models import op_norm

            out = op_norm(torch.sigmoid(out), self.model.op_threshs)
        elif getattr(self.model, "apply_sigmoid", False):
            out = torch.sigmoid(out)
        if self.output_index is not None:
            out = out[:, self.output_index]
        return out, features

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = masked_bce(self(batch["image"]), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _collect(self, stage: str, batch: dict) -> torch.Tensor:
        logits = self(batch["image"])
        scores = torch.sigmoid(logits).float().cpu()
        self._outputs.setdefault(stage, []).append((scores, batch["labels"].float().cpu()))
        return logits

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self._collect("val", batch)
        self.log("val/loss", masked_bce(logits, batch["labels"]), batch_size=len(logits))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect("test", batch)

    def _log_aucs(self, stage: str) -> None:
        from dpglow.metrics import auc_per_pathology, mean_auc

        outputs = self._outputs.pop(stage, [])
        if not outputs:
            return
        scores = torch.cat([o[0] for o in outputs])
        labels = torch.cat([o[1] for o in outputs])
        aucs = auc_per_pathology(scores, labels, self.pathologies)
        mean = mean_auc(aucs)
        self.log(f"{stage}/auc_mean", mean if math.isfinite(mean) else 0.5)
        if stage == "test":
            for name, value in aucs.items():
                if math.isfinite(value):
                    self.log(f"test/auc_{name}", value)

    def on_validation_epoch_end(self) -> None:
        outputs = self._outputs.get("val", [])
        if outputs and self.output_index is None:
            self._fit_decision_logits(
                torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
            )
        self._log_aucs("val")

    def _fit_decision_logits(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Youden's threshold per pathology on these validation scores (kept where a
        pathology lacks positives or negatives); saved with the checkpoint."""
        from dpglow.metrics import youden_threshold

        for j in range(len(self.pathologies)):
            known = labels[:, j][~torch.isnan(labels[:, j])]
            if (known == 1).any() and (known == 0).any():
                p = youden_threshold(scores[:, j], labels[:, j])
                p = min(max(p, 1e-6), 1 - 1e-6)
                self.decision_logits[j] = math.log(p / (1 - p))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints from before the decision thresholds existed decide at probability 1/2.
        state = checkpoint.get("state_dict", {})
        state.setdefault("decision_logits", torch.zeros(len(self.pathologies)))

    def on_test_epoch_end(self) -> None:
        self._log_aucs("test")

    def configure_optimizers(self) -> dict:
        return build_optimizers(self, self.optimizer_factory, self.scheduler_factory)
