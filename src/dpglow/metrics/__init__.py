"""The metrics of the evaluation protocol (docs/evaluation.md): utility, privacy, fidelity, realism.

All functions are pure: tensors in, Python numbers (or dicts of them) out. Inputs are validated and
a bad shape or value raises ``ValueError`` saying what was expected. The package imports nothing
else from dpglow (the classifier's own validation AUC uses it too).
"""

from dpglow.metrics.artifacts import saturated_patches
from dpglow.metrics.classification import (
    auc_per_pathology,
    auc_retention,
    ldp_auc_ceiling,
    mean_auc,
    released_bit_auc,
    retention_ceiling,
    youden_threshold,
)
from dpglow.metrics.fidelity import frechet_distance, paired_cosine, psnr, ssim
from dpglow.metrics.linkage import linkage_topk, reidentification
from dpglow.metrics.realism import (
    discriminator_auc,
    discriminator_folds,
    embedding_discriminator_auc,
    real_vs_real_auc,
    realism_features,
)

__all__ = [
    "auc_per_pathology",
    "auc_retention",
    "discriminator_auc",
    "discriminator_folds",
    "embedding_discriminator_auc",
    "frechet_distance",
    "ldp_auc_ceiling",
    "linkage_topk",
    "mean_auc",
    "paired_cosine",
    "psnr",
    "real_vs_real_auc",
    "realism_features",
    "reidentification",
    "released_bit_auc",
    "retention_ceiling",
    "saturated_patches",
    "ssim",
    "youden_threshold",
]
