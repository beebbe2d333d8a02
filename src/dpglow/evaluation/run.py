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
images, and the leakage check), ``artifacts`` (the sweep's cache), ``shards`` (the per-image
pass), ``rows`` (the columns), ``utility`` (U2) and ``outputs`` (files and loggers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages
from dpglow.evaluation.artifacts import cache_keys, load_cached, store
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
from dpglow.evaluation.rows import evaluation_row, originals_p2, settings_columns
from dpglow.evaluation.shards import per_image_pass
from dpglow.evaluation.utility import u2
from dpglow.privatization import build_privatizer, ensure_basis, privatizer_class, with_refiner
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


def _prepare(cfg: DictConfig) -> _Job:
    """Load the flow, the images, the classifier; refuse leaked images; build the privatizer."""
    flow, flow_info, flow_run = evaluated_flow(cfg)
    split, images = evaluation_images(cfg, image_size=flow.image_size)
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
    return _Job(flow, flow_info, split, images, classifier, clf_info, privatizer)


def _row(cfg: DictConfig, job: _Job, original: dict, merged: dict) -> dict[str, Any]:
    return evaluation_row(
        settings=settings_columns(job.privatizer.describe(), job.flow_info),
        record=merged["record"],
        context={
            "data": data_target(cfg)[0].rsplit(".", 1)[-1],
            "split": job.split,
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


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one evaluation job; returns (row, objects).

    The per-image work (privatizing, classifier scores and embeddings) runs through Lightning's
    predict loop on ``cfg.trainer``'s devices, each rank on its own share of fixed batches; rank 0
    merges the shares once and computes the metrics and the row. Other ranks return an empty row.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = sweep_dir(cfg) / CACHE_DIR if cfg.eval.get("cache") else None
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
        noise_seed=cfg.get("noise_seed"),
        batch_size=int(cfg.eval.batch_size),
        out_dir=out_dir,
    )
    if merged is None:  # not rank 0: its share is merged there
        return {}, {"rank": trainer.global_rank}
    original = _cached_outputs(cache_dir, keys, merged, job.images, original, released)
    row = _row(cfg, job, original, merged)
    device = trainer.strategy.root_device  # realism and U2 run on rank 0's device
    if cfg.eval.get("realism", True):
        row.update(_realism(cfg, job, merged["released"], device, cache_dir))
    if cfg.eval.get("train_on_privatized"):
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
    private = merged["released"]
    write_job(out_dir, row, originals=job.images.images, released=private, k=cfg.eval.grid_images)
    log_row(cfg, row, out_dir)
    return row, {"private": private, "test": job.images, "record": merged["record"]}
