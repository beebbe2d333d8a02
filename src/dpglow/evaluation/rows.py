"""The columns of an evaluation row (docs/evaluation.md), as pure functions of tensors and
records: the release's settings and privacy record, U1, P1, P2 and fidelity. U2, which trains
classifiers, is :mod:`dpglow.evaluation.utility`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dpglow import metrics as M
from dpglow.data.subsets import LabelledImages

# Record fields copied into the row under the same names.
RECORD_COLUMNS = (
    "epsilon_per_image", "epsilon_per_element", "delta", "d", "clip", "noise", "noise_scale",
    "noise_source", "private",
)  # fmt: skip


def aligned_scores(
    scores: torch.Tensor, classifier_pathologies: Sequence[str], images: LabelledImages
) -> tuple[torch.Tensor, list[str]]:
    """The score columns and names of the pathologies both the classifier and the data have."""
    names = [p for p in classifier_pathologies if p in images.pathologies]
    if not names:
        raise ValueError(
            f"the classifier predicts {list(classifier_pathologies)} but the data is labelled "
            f"with {images.pathologies}: use a classifier trained on this dataset"
        )
    cols = [list(classifier_pathologies).index(p) for p in names]
    return scores[:, cols], names


def settings_columns(description: Mapping[str, Any], flow_info: Mapping[str, Any]) -> dict:
    """The release's description: the privatizer's own settings, then the flow's architecture
    (named as :class:`~dpglow.flow.Glow` names it, prefixed ``flow_``) and checkpoint."""
    row = dict(description)
    net = flow_info["net_config"]
    row.update(
        {
            "flow_depth": net["depth"],
            "flow_num_levels": net["num_levels"],
            "flow_hidden_channels": net["hidden_channels"],
            "flow_ckpt": flow_info["path"],
        }
    )
    return row


# The records of the label mechanisms (one label; several as one label set).
LABEL_MECHANISMS = ("randomized_response", "label_set_response")


def epsilon_split(record: Mapping[str, Any]) -> tuple[float, float]:
    """(epsilon the labels received, epsilon the latents or pixels received) per image."""
    parts = record.get("parts") or {}
    if not parts:
        eps = record["epsilon_per_image"]
        return (eps, 0.0) if record["mechanism"] in LABEL_MECHANISMS else (0.0, eps)
    share = {name: part["epsilon_per_image"] for name, part in parts.items()}
    return share.get("labels", 0.0), share.get("latent", 0.0)


def record_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The privacy record's fields of the row, and the per-image epsilon split into its label
    and image parts (``epsilon_label + epsilon_latent = epsilon_per_image``)."""
    row = {key: record[key] for key in RECORD_COLUMNS}
    row["epsilon_label"], row["epsilon_latent"] = epsilon_split(record)
    return row


def u1_columns(orig_scores, priv_scores, labels, names: Sequence[str]) -> dict[str, float]:
    """U1: the classifier's AUC on original and on released images, and the retention, mean and
    per pathology."""
    auc_o = M.auc_per_pathology(orig_scores, labels, names)
    auc_p = M.auc_per_pathology(priv_scores, labels, names)
    row = {
        "u1/auc_orig_mean": M.mean_auc(auc_o),
        "u1/auc_priv_mean": M.mean_auc(auc_p),
    }
    row["u1/retention"] = M.auc_retention(row["u1/auc_priv_mean"], row["u1/auc_orig_mean"])
    for name in names:
        row[f"u1/auc_orig_{name}"] = auc_o[name]
        row[f"u1/auc_priv_{name}"] = auc_p[name]
        row[f"u1/retention_{name}"] = M.auc_retention(auc_p[name], auc_o[name])
    return row


def recovery_columns(orig_logits, priv_logits, labels, names: Sequence[str]) -> dict[str, float]:
    """Recovery: the AUC of the release's own public classifier (the one that rated its rendering
    candidates) against the true labels, on the originals and on the released images, mean and per
    label (the columns of :func:`u1_columns`, prefixed ``recovery/``). On originals it is the most
    that classifier reads of the labels; on releases, how much of it survives the release."""
    row = u1_columns(orig_logits, priv_logits, labels, names)
    return {"recovery/" + key.removeprefix("u1/"): value for key, value in row.items()}


def p1_columns(private, original, priv_emb, orig_emb, ks: Sequence[int]) -> dict[str, float]:
    """P1: top-k linkage of each released image to its own original, in pixel space (L2) and in
    the classifier's embedding (cosine), with the chance level (``k`` larger than the set is
    dropped)."""
    ks = tuple(k for k in ks if k <= len(private))
    pixel = M.linkage_topk(private.flatten(1).float(), original.flatten(1).float(), ks=ks)
    embed = M.linkage_topk(priv_emb, orig_emb, ks=ks, metric="cosine")
    row = {}
    for k in ks:
        row[f"p1/pixel_top{k}"] = pixel[f"top{k}"]
        row[f"p1/embed_top{k}"] = embed[f"top{k}"]
        row[f"p1/chance_top{k}"] = pixel[f"chance_top{k}"]
    return row


def originals_p2(images: LabelledImages, orig_emb) -> dict[str, float]:
    """Re-identification among the original images: how identifying the images are at all
    (``{}`` when no patient has two images)."""
    if len(set(images.patients)) == len(images.patients):
        return {}
    embed = M.reidentification(orig_emb, images.patients, metric="cosine")
    pixel = M.reidentification(images.images.flatten(1).float(), images.patients)
    return {
        "p2/orig_embed_top1": embed["top1"],
        "p2/orig_embed_map": embed["map"],
        "p2/orig_pixel_top1": pixel["top1"],
        "p2/orig_pixel_map": pixel["map"],
    }


def p2_columns(
    images: LabelledImages, private, priv_emb, orig_emb, original_p2: Mapping[str, float]
) -> dict[str, float]:
    """P2: re-identifying a released image's patient among the other originals (``{}`` when no
    patient has two images), beside ``original_p2`` (:func:`originals_p2`)."""
    counts = Counter(images.patients)
    if max(counts.values()) < 2:
        return {}
    pixel = M.reidentification(
        private.flatten(1).float(), images.patients, gallery=images.images.flatten(1).float()
    )
    embed = M.reidentification(priv_emb, images.patients, gallery=orig_emb, metric="cosine")
    # An attacker who ignores the query and ranks the gallery in one fixed order, led by two
    # images of the patient with the most test images, is right for all of that patient's
    # queries: the top-1 any uninformative output reaches (chance_top1 is a random ranking's).
    most = max(counts.values())
    return {
        "p2/constant_top1": most / embed["n_queries"],
        "p2/pixel_top1": pixel["top1"],
        "p2/pixel_map": pixel["map"],
        "p2/embed_top1": embed["top1"],
        "p2/embed_map": embed["map"],
        "p2/chance_top1": embed["chance_top1"],
        "p2/chance_map": embed["chance_map"],
        "p2/n_queries": embed["n_queries"],
        **original_p2,
    }


def ceiling_columns(row: Mapping[str, Any]) -> dict[str, float]:
    """The LDP ceiling of U1 at the row's per-image epsilon (docs/evaluation.md): the largest
    mean AUC an eps-LDP release allows, the retention it allows against the originals' AUC, and
    the fraction of that retention reached (NaN where the originals have no skill)."""
    eps = float(row["epsilon_per_image"])
    ceiling = M.retention_ceiling(eps, row["u1/auc_orig_mean"])
    retention = row["u1/retention"]
    return {
        "u1/auc_ceiling": M.ldp_auc_ceiling(eps),
        "u1/retention_ceiling": ceiling,
        "u1/fraction_of_ceiling": retention / ceiling if ceiling > 0 else math.nan,
    }


def labeler_bound_columns(
    decisions: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
    *,
    flips: Sequence[float],
    row: Mapping[str, Any],
) -> dict[str, float]:
    """The labeler's bound (docs/evaluation.md): for each label released by randomized response
    (flip probability ``flips[j]``) of the labeler's decision ``decisions[:, j]`` on the
    originals, the expected AUC of a reader that sees the released bit perfectly
    (:func:`~dpglow.metrics.released_bit_auc`), and the retention it allows against the
    evaluation classifier's AUC on the originals (``row``'s U1 columns; at most 1, as the
    ceiling's); their mean, and the fraction of it the release reached. No rendering of the
    released labels can beat it in expectation: the LDP ceiling for a labeler that is right
    about every image."""
    out: dict[str, float] = {}
    bounds = []
    for j, name in enumerate(names):
        auc = M.released_bit_auc(decisions[:, j], labels[:, j], flip_probability=flips[j])
        out[f"u1/labeler_auc_bound_{name}"] = auc
        retention = M.auc_retention(auc, row[f"u1/auc_orig_{name}"])
        out[f"u1/labeler_bound_{name}"] = (
            retention if math.isnan(retention) else min(1.0, retention)
        )
        bounds.append(out[f"u1/labeler_bound_{name}"])
    bound = M.mean_auc(bounds)  # the mean of the defined ones
    out["u1/labeler_bound"] = bound
    out["u1/fraction_of_labeler_bound"] = row["u1/retention"] / bound if bound > 0 else math.nan
    return out


def fidelity_columns(private, original, priv_emb, orig_emb) -> dict[str, float]:
    """PSNR and SSIM of uint8 released against original images (SSIM NaN below 11 px), the mean
    cosine of each release's embedding with its own original's, and the Frechet distance of the
    two sets of embeddings."""
    a, b = private.double() / 255.0, original.double() / 255.0
    row = {"fidelity/psnr": M.psnr(a, b)}
    row["fidelity/ssim"] = M.ssim(a, b) if min(a.shape[-2:]) >= 11 else math.nan
    row["fidelity/cosine"] = M.paired_cosine(priv_emb, orig_emb)
    row["fidelity/frechet"] = M.frechet_distance(orig_emb, priv_emb)
    return row


def artifact_columns(private: torch.Tensor) -> dict[str, int]:
    """Saturated patches (:func:`~dpglow.metrics.saturated_patches`) over every released image:
    the number of images with at least one, and the number of patches."""
    counts = M.saturated_patches(private)
    return {
        "artifacts/images_with_patches": int((counts > 0).sum()),
        "artifacts/patches": int(counts.sum()),
    }


def evaluation_row(
    *,
    settings: Mapping[str, Any],
    record: Mapping[str, Any],
    context: Mapping[str, Any],
    images: LabelledImages,
    classifier_pathologies: Sequence[str],
    original: Mapping[str, Any],
    released: Mapping[str, torch.Tensor],
    linkage_ks: Sequence[int],
) -> dict[str, Any]:
    """One row: ``settings`` (:func:`settings_columns`), the record's columns, ``context`` (data,
    split, classifier, ...), then U1, P1, P2 and fidelity.

    ``original``: the originals' ``scores``, ``embeddings`` and ``p2`` (:func:`originals_p2`);
    ``released``: ``images`` (uint8, in the order of ``images``), their ``scores`` and
    ``embeddings``.
    """
    orig_scores, names = aligned_scores(original["scores"], classifier_pathologies, images)
    priv_scores, _ = aligned_scores(released["scores"], classifier_pathologies, images)
    labels = images.labels[:, [images.pathologies.index(p) for p in names]]
    private, priv_emb, orig_emb = released["images"], released["embeddings"], original["embeddings"]
    row: dict[str, Any] = dict(settings)
    row.update(record_columns(record))
    row.update(context)
    row["n_images"] = len(images.images)
    row.update(u1_columns(orig_scores, priv_scores, labels, names))
    row.update(ceiling_columns(row))
    row.update(p1_columns(private, images.images, priv_emb, orig_emb, linkage_ks))
    row.update(p2_columns(images, private, priv_emb, orig_emb, original["p2"]))
    row.update(fidelity_columns(private, images.images, priv_emb, orig_emb))
    row.update(artifact_columns(private))
    if len(private) >= 10:  # the stronger realism discriminator, on the classifier's embedding
        row["realism/embedding_auc"] = M.embedding_discriminator_auc(orig_emb, priv_emb)
    return row
