"""``evaluate(cfg)``: one evaluation job of docs/evaluation.md (the plain function behind
``src/evaluate.py``).

A job privatizes the held-out test split (or, for a search, the validation split) with one
setting (privatizer, epsilon, temperature, flow) and measures U1 (classifier AUC on original vs
privatized images, retention), P1 (linkage of privatized to original images in pixel and
classifier-embedding space), P2 (same-patient re-identification where patients have several
images), fidelity (PSNR, SSIM, Frechet distance in the classifier's embedding) and, with
``eval.train_on_privatized``, U2. It writes ``row.json`` (one flat row, see
:mod:`dpglow.evaluation.rows`), the image strips of the sweep's grid and logs to the configured
loggers; the sweep's rows are merged by :mod:`dpglow.evaluation.report`.

The steps live in their own modules: ``models`` (which flow and classifiers), ``inputs`` (which
images, and the leakage check), ``sweep_cache`` (the sweep's cache), ``shards`` (the per-image
pass), ``rows`` (the columns), ``utility`` (U2) and ``outputs`` (files and loggers).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages
from dpglow.evaluation import label_level as L
from dpglow.evaluation.inputs import check_no_leakage, evaluation_images
from dpglow.evaluation.layout import CACHE_DIR, sweep_dir
from dpglow.evaluation.models import (
    data_target,
    evaluated_flow,
    evaluation_classifier,
    labeler_runs,
    predict_trainer,
)
from dpglow.evaluation.outputs import log_row, write_job
from dpglow.evaluation.realism import prior_samples, realism_columns
from dpglow.evaluation.rows import (
    evaluation_row,
    labeler_bound_columns,
    originals_p2,
    recovery_columns,
    settings_columns,
)
from dpglow.evaluation.shards import per_image_pass, privatize_in_batches
from dpglow.evaluation.sweep_cache import cache_keys
from dpglow.evaluation.utility import u2
from dpglow.privacy import noise_generator
from dpglow.privatizers import build_privatizer, ensure_basis, privatizer_class, with_refiner
from dpglow.utils.cache import load_cached, store
from dpglow.utils.discovery import run_dir_of

log = logging.getLogger(__name__)


def _cached_outputs(cache_dir, keys, merged, images, original, released):
    """The originals' and the release's tensors: from the cache, else from this pass (then
    stored for the sweep's other jobs)."""
    originals_key, private_key = keys
    if original is None and "orig_emb" in merged:
        embeddings = merged["orig_emb"]
        original = {
            "scores": merged["orig_scores"],
            "embeddings": embeddings,
            "p2": originals_p2(images, embeddings),
        }
        store(cache_dir, "originals", originals_key, original)
    elif original is None:  # another rank found the sweep's cache (written meanwhile)
        original = load_cached(cache_dir, "originals", originals_key)
    if released is None:
        store(
            cache_dir,
            "privatized",
            private_key,
            {"images": merged["released"], "record": merged["record"]},
        )
    return original


class _Job(NamedTuple):
    """What one evaluation job works with, once its models and images are loaded and checked."""

    flow: Any
    flow_info: dict
    split: str
    images: LabelledImages
    classifier: Any
    clf_info: dict
    privatizer: Any
    shift: dict


def _prepare(cfg: DictConfig) -> _Job:
    """Load the flow, the images, the classifier; refuse leaked images; build the privatizer."""
    flow, flow_info, flow_run = evaluated_flow(cfg)
    split, images, shift = evaluation_images(cfg, image_size=flow.image_size)
    classifier, clf_info, clf_run = evaluation_classifier(cfg, images.pathologies)
    refiner_path = OmegaConf.select(cfg, "refiner.ckpt_path")
    runs = {"flow": flow_run, "classifier": clf_run, **labeler_runs(cfg)}
    if refiner_path:
        runs["refiner"] = run_dir_of(refiner_path)
    check_no_leakage(images, runs, split)
    ensure_basis(cfg, flow, flow_info)
    privatizer = build_privatizer(
        cfg.privacy,
        flow=flow if privatizer_class(cfg.privacy).needs_flow else None,
        flow_info=flow_info,
        temperature=cfg.temperature,
        image_size=flow.image_size,
    )
    privatizer = with_refiner(
        privatizer, refiner_path, image_size=flow.image_size, flow_info=flow_info
    )
    return _Job(flow, flow_info, split, images, classifier, clf_info, privatizer, shift)


def _row(cfg: DictConfig, job: _Job, original: dict, merged: dict) -> dict[str, Any]:
    return evaluation_row(
        settings=settings_columns(job.privatizer.describe(), job.flow_info),
        record=merged["record"],
        context={
            "data": data_target(cfg)[0].rsplit(".", 1)[-1],
            "split": job.split,
            **job.shift,
            "classifier": job.clf_info["path"] or job.clf_info["weights"],
        },
        images=job.images,
        classifier_pathologies=job.classifier.pathologies,
        original=original,
        released={
            "images": merged["released"],
            "scores": merged["priv_scores"],
            "embeddings": merged["priv_emb"],
        },
        linkage_ks=cfg.eval.linkage_ks,
    )


def _realism(cfg: DictConfig, job: _Job, released, device, cache_dir) -> dict[str, float]:
    """The realism columns; the prior samples are drawn at the row's temperature (the task's for
    a privatizer without one, else the prior's default of 1) and, for a refined release, refined
    by the same refiner."""
    temperature = job.privatizer.describe().get("temperature")
    if temperature is None:
        temperature = cfg.temperature if cfg.temperature is not None else 1.0
    prior = prior_samples(
        job.flow,
        n=len(job.images.images),
        temperature=float(temperature),
        noise_seed=cfg.get("noise_seed"),
        batch_size=int(cfg.eval.batch_size),
        device=device,
        cache_dir=cache_dir,
        flow_sha256=job.flow_info["sha256"],
        refine=getattr(job.privatizer, "refine", None),
    )
    return realism_columns(job.images.images, released, prior, cache_dir=cache_dir)


def _more_releases(cfg: DictConfig, job: _Job, device) -> list:
    """``eval.grid_releases - 1`` further releases of the grid's images (fresh noise; with a
    ``noise_seed``, the seeds after it)."""
    images = job.images.images[: int(cfg.eval.grid_images)]
    for part in job.privatizer.modules().values():
        part.to(device)
    out = []
    for r in range(1, int(cfg.eval.grid_releases)):
        seed = None if cfg.noise_seed is None else int(cfg.noise_seed) + r
        out.append(
            privatize_in_batches(
                job.privatizer,
                images,
                noise_seed=seed,
                batch_size=len(images),
                device=device,
                names=job.images.paths[: len(images)],
            )["images"].cpu()
        )
    return out


@torch.no_grad()
def _recovery(job: _Job, released: torch.Tensor, device) -> dict[str, float]:
    """The recovery columns (:func:`~dpglow.evaluation.rows.recovery_columns`) when a public
    release classifier rated the rendering candidates, else none."""
    inner = getattr(job.privatizer, "inner", job.privatizer)
    judge = getattr(inner, "judge", None)
    names = [n for n in getattr(inner, "label_names", []) if n in job.images.pathologies]
    if judge is None or not names:
        return {}
    judge.to(device)
    columns = [inner.label_names.index(n) for n in names]

    def logits(images: torch.Tensor) -> torch.Tensor:
        parts = [judge.logits(chunk.to(device)).cpu() for chunk in images.split(256)]
        return torch.cat(parts)[:, columns]

    labels = job.images.labels[:, [job.images.pathologies.index(n) for n in names]]
    return recovery_columns(logits(job.images.images), logits(released), labels, names)


def _labeler_bound(job: _Job, row: Mapping[str, Any], device) -> dict[str, float]:
    """The labeler's bound columns (:func:`~dpglow.evaluation.rows.labeler_bound_columns`) when
    the release's labels are one randomized response per label of a labeler that reads the image
    (a release classifier, the data holder's labels), else none."""
    inner = getattr(job.privatizer, "inner", job.privatizer)
    labeler, mechanism = getattr(inner, "labeler", None), getattr(inner, "label_mechanism", None)
    if labeler is None or mechanism is None or mechanism.flip_probabilities is None:
        return {}
    if getattr(labeler, "reads_latents", True):  # the probe: it reads the flow's latents
        return {}
    names = [n for n in inner.label_names if f"u1/auc_orig_{n}" in row]
    if not names:
        return {}
    if isinstance(labeler, torch.nn.Module):
        labeler.to(device)
    images, paths = job.images.images, list(job.images.paths)
    with torch.no_grad():
        decisions = torch.cat(
            [
                labeler(images[i : i + 256].to(device), None, paths[i : i + 256]).cpu()
                for i in range(0, len(images), 256)
            ]
        )
    columns = [inner.label_names.index(n) for n in names]
    labels = job.images.labels[:, [job.images.pathologies.index(n) for n in names]]
    flips = [mechanism.flip_probabilities[c] for c in columns]
    return labeler_bound_columns(decisions[:, columns], labels, names, flips=flips, row=row)


def _rank_zero_columns(cfg: DictConfig, job: _Job, merged, device, cache_dir) -> dict[str, Any]:
    """The columns computed on rank 0 alone: recovery (the rendering classifier's AUC on the
    originals and the releases), realism (``eval.realism``) and U2
    (``eval.train_on_privatized``)."""
    row: dict[str, Any] = _recovery(job, merged["released"], device)
    if cfg.eval.realism:
        row.update(_realism(cfg, job, merged["released"], device, cache_dir))
    if cfg.eval.train_on_privatized:
        for part in job.privatizer.modules().values():
            part.to(device)  # Lightning moved the pass's modules back to the CPU
        row.update(
            u2(
                cfg,
                classifier=job.classifier.to(device),
                privatizer=job.privatizer,
                test=job.images,
                device=device,
                cache_dir=cache_dir,
            )
        )
    return row


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one evaluation job; returns (row, objects).

    The per-image work (privatizing, classifier scores and embeddings) runs through Lightning's
    predict loop on ``cfg.trainer``'s devices, each rank on its own share of fixed batches; rank 0
    merges the shares once and computes the metrics and the row. Other ranks return an empty row.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = sweep_dir(cfg) / CACHE_DIR if cfg.eval.cache else None
    trainer = predict_trainer(cfg)
    job = _prepare(cfg)
    keys = cache_keys(cfg, job.images, job.clf_info, job.flow, job.flow_info, job.privatizer)
    original = load_cached(cache_dir, "originals", keys[0])
    released = load_cached(cache_dir, "privatized", keys[1])
    log.info(
        "evaluating on %d %s images (%d px), %d process(es)",
        len(job.images.images),
        job.split,
        job.flow.image_size,
        trainer.world_size,
    )
    merged = per_image_pass(
        trainer,
        images=job.images.images,
        released=released["images"] if released else None,
        classifier=job.classifier,
        privatizer=job.privatizer,
        score_originals=original is None,
        noise_seed=cfg.noise_seed,
        batch_size=int(cfg.eval.batch_size),
        out_dir=out_dir,
        names=job.images.paths,
    )
    if merged is None:  # not rank 0: its share is merged there
        return {}, {"rank": trainer.global_rank}
    original = _cached_outputs(cache_dir, keys, merged, job.images, original, released)
    device = trainer.strategy.root_device  # realism and U2 run on rank 0's device
    row = _row(cfg, job, original, merged) | _rank_zero_columns(cfg, job, merged, device, cache_dir)
    row.update(_labeler_bound(job, row, device))
    private = merged["released"]
    write_job(
        out_dir,
        row,
        originals=job.images.images,
        released=private,
        k=cfg.eval.grid_images,
        more_releases=_more_releases(cfg, job, device),
    )
    log_row(cfg, row, out_dir)
    return row, {"private": private, "test": job.images, "record": merged["record"]}


def evaluate_labels(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The label-level evaluation (``python src/evaluate_labels.py``; no images): NIH's label
    table split by patient, settings chosen on public-validation, both label mechanisms reported
    on the private patients. Writes ``split.csv``, ``label_level_validation.csv``,
    ``label_level.csv`` and ``label_level.md`` in the run folder."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, patients = L.read_nih_labels(cfg.labels_csv)
    split = L.split_patients(patients, **cfg.split)
    split.to_csv(out / "split.csv", index=False)
    part = patients.map(dict(zip(split["patient_id"], split["part"], strict=True))).to_numpy()
    data = {name: labels[torch.from_numpy(part == name)] for name in L.PARTS}
    log.info("label vectors per part: %s", {name: len(y) for name, y in data.items()})
    private = data["private"]
    if cfg.max_private is not None and len(private) > cfg.max_private:
        pick = torch.Generator().manual_seed(int(cfg.subsample_seed))
        private = private[torch.randperm(len(private), generator=pick)[: cfg.max_private]]
    names, epsilons = list(L.NIH_PATHOLOGIES), [float(e) for e in cfg.epsilons]
    generator, source = noise_generator(noise_seed=cfg.noise_seed)
    grid, best = L.select_settings(
        data["public_train"],
        data["public_validation"],
        epsilons=epsilons,
        names=names,
        generator=generator,
        **cfg.selection,
    )
    pd.DataFrame(grid).to_csv(out / "label_level_validation.csv", index=False)
    rows = L.label_level_rows(
        private, data["public_train"], best, epsilons=epsilons, names=names, generator=generator
    )
    pd.DataFrame(rows).to_csv(out / "label_level.csv", index=False)
    table = L.report_tables(rows, names)
    header = (
        f"Label-level retention (AUC - 0.5) / 0.5 of P(finding | release) on the {len(private)} "
        f"private label vectors (noise: {source}); settings chosen on public-validation.\n\n"
    )
    (out / "label_level.md").write_text(header + table + "\n")
    log.info("%s%s", header, table)
    metrics = {
        f"label_level/eps_{row['epsilon']:g}/{row['mechanism']}": row["mean_retention"]
        for row in rows
    }
    return metrics, {"rows": rows, "validation": grid, "split": split}
