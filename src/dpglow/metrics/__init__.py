"""The metrics of the evaluation protocol (docs/evaluation.md): utility, privacy, fidelity, realism.

All functions are pure: tensors in, Python numbers (or dicts of them) out. Inputs are validated and
a bad shape or value raises ``ValueError`` saying what was expected. The package imports nothing
else from dpglow (the classifier's own validation AUC uses it too).
"""

from dpglow.metrics.classification import auc_per_pathology, auc_retention, mean_auc
from dpglow.metrics.fidelity import frechet_distance, psnr, ssim
from dpglow.metrics.linkage import linkage_topk, reidentification
from dpglow.metrics.realism import (
    discriminator_auc,
    discriminator_folds,
    real_vs_real_auc,
    realism_features,
)

__all__ = [
    "auc_per_pathology",
    "auc_retention",
    "discriminator_auc",
    "discriminator_folds",
    "frechet_distance",
    "linkage_topk",
    "mean_auc",
    "psnr",
    "real_vs_real_auc",
    "realism_features",
    "reidentification",
    "ssim",
]
