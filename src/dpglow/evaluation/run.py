"""``evaluate(cfg)``: one evaluation job of docs/evaluation.md (the plain function behind
``src/evaluate.py``).

A job privatizes the held-out test split with one setting (mechanism, epsilon, temperature, levels,
flow) and measures U1 (classifier AUC on original vs privatized images, retention), P1 (linkage
of privatized to original images in pixel and classifier-embedding space), P2 (same-patient
re-identification where patients have several images), fidelity (PSNR, SSIM, Frechet distance in
the classifier's embedding) and, with ``eval.train_on_privatized``, U2. It writes ``row.json``
(one flat row), ``originals.png`` / ``samples.png`` (for the sweep's image grid) and logs to the
configured loggers; the sweep's rows are merged by :mod:`dpglow.evaluation.report`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from dpglow.data.subsets import LabelledImages, load_split
from dpglow.evaluation import metrics as M
from dpglow.evaluation.artifacts import key_of, load_cached, store, tensor_digest
from dpglow.evaluation.discovery import find_latest, run_dir_of, training_paths
from dpglow.evaluation.shards import per_image_pass
from dpglow.privatization.build import build_privatizer, privatizer_class
from dpglow.privatization.checkpoint import CheckpointError, file_sha256, load_flow
from dpglow.privatization.fit import ensure_basis

log = logging.getLogger(__name__)

ROW_FILE = "row.json"
SAMPLES_FILE = "samples.png"
ORIGINALS_FILE = "originals.png"


class LeakageError(ValueError):
    """Evaluation images were seen by the flow or the classifier during training."""


# The test split an evaluation job works on.
EvalImages = LabelledImages


# --------------------------------------------------------------------------- models


def sweep_dir(cfg: DictConfig) -> Path:
    """The multirun's sweep folder (shared by its jobs), else this run's folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir)
    return Path(cfg.paths.output_dir)


def _data_target(cfg: DictConfig) -> tuple[str, str]:
    raw = OmegaConf.to_container(cfg.data, resolve=False)
    return raw["source"]["_target_"], raw.get("root")


def _newest(cfg: DictConfig, task: str, metric: str, what: str) -> Path:
    """The newest finished run of ``task`` on this data (said in the log, with its test metric)."""
    target, root = _data_target(cfg)
    found = find_latest(task, log_dir=cfg.paths.log_dir, data_target=target, data_root=root)
    value = found.summary.get("metrics", {}).get(metric)
    shown = f" ({metric} {value:.3f})" if value is not None else ""
    log.info("%s: newest trained %s for this data: %s%s", what, what, found.checkpoint, shown)
    return found.checkpoint


def _flow(cfg: DictConfig) -> tuple[Any, dict, Path | None]:
    path = cfg.flow.get("ckpt_path") or _newest(cfg, "train", "test/bpd", "flow")
    flow, info = load_flow(path)
    return flow, info, run_dir_of(path)


def _classifier(cfg: DictConfig, pathologies: list[str]) -> tuple[Any, dict, Path | None]:
    from dpglow.classifier import ClassifierModule

    weights = cfg.classifier.get("weights")
    if weights:
        module = ClassifierModule(pathologies=pathologies, weights=weights)
        log.info("classifier: pretrained torchxrayvision weights %s", weights)
        return module.eval(), {"path": None, "sha256": weights, "weights": weights}, None
    path = cfg.classifier.get("ckpt_path") or _newest(
        cfg, "train_classifier", "test/auc_mean", "classifier"
    )
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"classifier checkpoint {str(path)!r} does not exist: train one with "
            "`python src/train_classifier.py` or pass classifier.ckpt_path=<...>.ckpt"
        )
    try:
        module = ClassifierModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a dpglow classifier checkpoint ({type(err).__name__}: {err}); "
            "train one with `python src/train_classifier.py`"
        ) from err
    info = {"path": str(path.resolve()), "sha256": file_sha256(path), "weights": None}
    return module.eval(), info, run_dir_of(path)


# --------------------------------------------------------------------------- data


def _split(cfg: DictConfig, image_size: int, split: str, limit: int | None) -> EvalImages:
    return load_split(cfg, image_size=image_size, split=split, limit=limit)


def _check_no_leakage(test: EvalImages, runs: dict[str, Path | None], split: str = "test") -> None:
    """Refuse to evaluate on images a model trained on, or (for the test split) validated on (the
    threat model; the validation split is where settings are searched)."""
    used = ("train",) if split == "val" else ("train", "val")
    for what, run_dir in runs.items():
        seen = training_paths(run_dir, used)
        if seen is None:
            log.warning(
                "cannot verify that the %s never saw the test images (no splits.csv beside its "
                "checkpoint); make sure it was trained on this data's training split",
                what,
            )
            continue
        leaked = [p for p in test.paths if p in seen]
        if leaked:
            raise LeakageError(
                f"{len(leaked)} of the {len(test.paths)} evaluation images were in the {what}'s "
                f"training or validation split (e.g. {leaked[0]}; run {run_dir}). Evaluate with "
                "the same data settings (seed, fractions, data.max_images) the models were "
                "trained with, or retrain them on this split."
            )


# --------------------------------------------------------------------------- computation


def _aligned_scores(
    scores: torch.Tensor, classifier, test: EvalImages
) -> tuple[torch.Tensor, list]:
    """Scores and labels for the pathologies both the classifier and the data have."""
    names = [p for p in classifier.pathologies if p in test.pathologies]
    if not names:
        raise ValueError(
            f"the classifier predicts {classifier.pathologies} but the data is labelled with "
            f"{test.pathologies}: use a classifier trained on this dataset"
        )
    cols = [classifier.pathologies.index(p) for p in names]
    return scores[:, cols], names


def _u1(orig_scores, priv_scores, labels, names) -> dict[str, float]:
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


def _p1(private, original, priv_emb, orig_emb, ks) -> dict[str, float]:
    ks = tuple(k for k in ks if k <= len(private))
    pixel = M.linkage_topk(private.flatten(1).float(), original.flatten(1).float(), ks=ks)
    embed = M.linkage_topk(priv_emb, orig_emb, ks=ks, metric="cosine")
    row = {}
    for k in ks:
        row[f"p1/pixel_top{k}"] = pixel[f"top{k}"]
        row[f"p1/embed_top{k}"] = embed[f"top{k}"]
        row[f"p1/chance_top{k}"] = pixel[f"chance_top{k}"]
    return row


def _p2(test: EvalImages, private, priv_emb, orig_emb, original_p2: dict) -> dict[str, float]:
    counts = Counter(test.patients)
    if max(counts.values()) < 2:
        return {}
    pixel = M.reidentification(
        private.flatten(1).float(), test.patients, gallery=test.images.flatten(1).float()
    )
    embed = M.reidentification(priv_emb, test.patients, gallery=orig_emb, metric="cosine")
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


def _originals_p2(test: EvalImages, orig_emb) -> dict[str, float]:
    """Re-identification among the original images: how identifying the images are at all."""
    if len(set(test.patients)) == len(test.patients):
        return {}
    embed = M.reidentification(orig_emb, test.patients, metric="cosine")
    pixel = M.reidentification(test.images.flatten(1).float(), test.patients)
    return {
        "p2/orig_embed_top1": embed["top1"],
        "p2/orig_embed_map": embed["map"],
        "p2/orig_pixel_top1": pixel["top1"],
        "p2/orig_pixel_map": pixel["map"],
    }


def _fidelity(private, original, priv_emb, orig_emb) -> dict[str, float]:
    a, b = private.double() / 255.0, original.double() / 255.0
    row = {"fid/psnr": M.psnr(a, b)}
    row["fid/ssim"] = M.ssim(a, b) if min(a.shape[-2:]) >= 11 else math.nan
    row["fid/frechet"] = M.frechet_distance(orig_emb, priv_emb)
    return row


# --------------------------------------------------------------------------- output


def _strip(images: torch.Tensor) -> np.ndarray:
    """uint8 [K, 1, S, S] -> one row image [S, K*S]."""
    return torch.cat(list(images[:, 0]), dim=1).numpy()


def _settings(privatizer: Any, flow_info: dict) -> dict[str, Any]:
    """The row's description of the release: the privatizer's own settings, then the flow's."""
    row = dict(privatizer.describe())
    row.update(
        {
            "flow_depth": flow_info["net_config"]["depth"],
            "flow_levels": flow_info["net_config"]["num_levels"],
            "flow_width": flow_info["net_config"]["hidden_channels"],
            "flow_ckpt": flow_info["path"],
        }
    )
    return row


def _epsilon_split(record: dict[str, Any]) -> tuple[float, float]:
    """(epsilon the labels received, epsilon the latents or pixels received) per image."""
    parts = record.get("parts") or {}
    if not parts:
        eps = record["epsilon_per_image"]
        return (eps, 0.0) if record["mechanism"] == "randomized_response" else (0.0, eps)
    share = {name: part["epsilon_per_image"] for name, part in parts.items()}
    return share.get("labels", 0.0), share.get("latent", 0.0)


def _trainer(cfg: DictConfig) -> Any:
    """The predict trainer of the per-image pass; refuses a multirun job that Lightning would have
    to re-launch on extra devices (the re-launched command would be the whole multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    environment = getattr(trainer.strategy, "cluster_environment", None)
    relaunches = trainer.world_size > 1 and not (
        environment is not None and environment.creates_processes_externally
    )
    if relaunches and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(
            f"trainer.devices={cfg.trainer.devices} inside a multirun: Lightning would start the "
            "extra ranks by re-running the whole sweep. Run the job on its own (without -m), or "
            "sweep with a launcher that starts the ranks (hydra/launcher=submitit_slurm with "
            "hydra.launcher.tasks_per_node equal to the devices)."
        )
    return trainer


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one evaluation job; returns (row, objects).

    The per-image work (privatizing, classifier scores and embeddings) runs through Lightning's
    predict loop on ``cfg.trainer``'s devices, each rank on its own share of fixed batches; rank 0
    merges the shares once and computes the metrics and the row. Other ranks return an empty row.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = int(cfg.eval.batch_size)
    cache_dir = sweep_dir(cfg) / "cache" if cfg.eval.get("cache") else None
    noise_seed = cfg.get("noise_seed")
    trainer = _trainer(cfg)

    flow, flow_info, flow_run = _flow(cfg)
    split = cfg.eval.get("split", "test")
    if split not in ("test", "val"):
        raise ValueError(f"eval.split must be test or val (a search scores on val), got {split!r}")
    test = _split(cfg, flow.image_size, split, cfg.eval.get("max_images"))
    classifier, clf_info, clf_run = _classifier(cfg, test.pathologies)
    runs = {"flow": flow_run, "classifier": clf_run}
    labeler = cfg.privacy.get("labeler") or {}
    if labeler.get("kind") == "classifier" and float(cfg.privacy.get("label_fraction", 0)) > 0:
        if not labeler.get("ckpt_path"):
            with open_dict(cfg):
                labeler.ckpt_path = str(
                    _newest(cfg, "train_release_classifier", "test/auc_mean", "labeler")
                )
        runs["labeler"] = run_dir_of(labeler.ckpt_path)
    _check_no_leakage(test, runs, split)
    ensure_basis(cfg, flow, flow_info)
    privatizer = build_privatizer(
        cfg.privacy,
        flow=flow if privatizer_class(cfg.privacy).needs_flow else None,
        flow_info=flow_info,
        temperature=cfg.temperature,
        image_size=flow.image_size,
    )
    images_key = tensor_digest(test.images)
    # Computed once per sweep: everything that depends on the original images only.
    # (The "p2" tag keeps caches written before the entry existed from being read.)
    originals_key = key_of([clf_info["sha256"], images_key, "p2"])
    private_key = key_of(
        {
            "flow": flow_info["sha256"] if privatizer.needs_flow else flow.image_size,
            "privatizer": privatizer.describe(),
            "privacy": OmegaConf.to_container(cfg.privacy, resolve=True),
            "noise_seed": noise_seed,
            # Seeded noise is drawn per fixed batch of the images.
            "noise": "per batch" if noise_seed is None else f"per batch of {batch}",
            "images": images_key,
        }
    )
    original = load_cached(cache_dir, "originals", originals_key)
    released = load_cached(cache_dir, "privatized", private_key)

    log.info(
        "evaluating on %d test images (%d px), %d process(es)",
        len(test.images),
        flow.image_size,
        trainer.world_size,
    )
    merged = per_image_pass(
        trainer,
        images=test.images,
        released=released["images"] if released else None,
        classifier=classifier,
        privatizer=privatizer,
        score_originals=original is None,
        noise_seed=noise_seed,
        batch_size=batch,
        out_dir=out_dir,
    )
    if merged is None:  # not rank 0: its share is merged there
        return {}, {"rank": trainer.global_rank}
    if original is None and "orig_emb" in merged:
        embeddings = merged["orig_emb"]
        original = {
            "scores": merged["orig_scores"],
            "embeddings": embeddings,
            "p2": _originals_p2(test, embeddings),
        }
        store(cache_dir, "originals", originals_key, original)
    elif original is None:  # another rank found the sweep's cache (written meanwhile)
        original = load_cached(cache_dir, "originals", originals_key)
    if released is None:
        released = {"images": merged["released"], "record": merged["record"]}
        store(cache_dir, "privatized", private_key, released)
    private, record = merged["released"], merged["record"]
    priv_scores, priv_emb = merged["priv_scores"], merged["priv_emb"]

    orig_scores, names = _aligned_scores(original["scores"], classifier, test)
    priv_scores, _ = _aligned_scores(priv_scores, classifier, test)
    labels = test.labels[:, [test.pathologies.index(p) for p in names]]
    orig_emb = original["embeddings"]

    row: dict[str, Any] = _settings(privatizer, flow_info)
    eps_label, eps_latent = _epsilon_split(record)
    row.update(
        {
            "eps_per_image": record["epsilon_per_image"],
            "eps_per_element": record["epsilon_per_element"],
            "delta": record["delta"],
            "d": record["d"],
            "clip": record["clip"],
            "noise": record["noise"],
            "noise_scale": record["noise_scale"],
            "noise_source": record["noise_source"],
            "private": record["private"],
            "eps_label": eps_label,
            "eps_latent": eps_latent,
            "data": _data_target(cfg)[0].rsplit(".", 1)[-1],
            "split": split,
            "n_images": len(test.images),
            "classifier": clf_info["path"] or clf_info["weights"],
        }
    )
    row.update(_u1(orig_scores, priv_scores, labels, names))
    row.update(_p1(private, test.images, priv_emb, orig_emb, cfg.eval.linkage_ks))
    row.update(_p2(test, private, priv_emb, orig_emb, original["p2"]))
    row.update(_fidelity(private, test.images, priv_emb, orig_emb))
    if cfg.eval.get("train_on_privatized"):
        from dpglow.evaluation.utility import u2

        device = trainer.strategy.root_device  # U2 runs on rank 0's device
        for part in privatizer.modules().values():
            part.to(device)  # Lightning moved the pass's modules back to the CPU
        row.update(
            u2(
                cfg,
                classifier=classifier.to(device),
                privatizer=privatizer,
                test=test,
                device=device,
                cache_dir=cache_dir,
            )
        )

    (out_dir / ROW_FILE).write_text(json.dumps(row, indent=2))
    k = min(int(cfg.eval.grid_images), len(test.images))
    Image.fromarray(_strip(test.images[:k])).save(out_dir / ORIGINALS_FILE)
    Image.fromarray(_strip(private[:k])).save(out_dir / SAMPLES_FILE)
    log.info(
        "%s eps/image=%.4g: AUC %.3f -> %.3f (retention %.3f), linkage top-1 pixel %.3f / "
        "embedding %.3f (chance %.3f)",
        row["mechanism"],
        row["eps_per_image"],
        row["u1/auc_orig_mean"],
        row["u1/auc_priv_mean"],
        row["u1/retention"],
        row["p1/pixel_top1"],
        row["p1/embed_top1"],
        row["p1/chance_top1"],
    )
    _log_row(cfg, row, out_dir)
    return row, {"private": private, "test": test, "record": record}


def _log_row(cfg: DictConfig, row: dict[str, Any], out_dir: Path) -> None:
    from dpglow.utils.instantiate import instantiate_loggers

    logger_cfg = cfg.get("logger")
    if logger_cfg and "wandb" in logger_cfg:
        # One W&B run per job, grouped by the sweep, so the dashboard compares its settings.
        with open_dict(cfg):
            logger_cfg.wandb.group = f"{cfg.task_name}-{sweep_dir(cfg).name}"
            logger_cfg.wandb.name = logger_cfg.wandb.get("name") or out_dir.name
    loggers = instantiate_loggers(logger_cfg)
    if not loggers:
        return
    numeric = {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
        logger.log_metrics(numeric)
        if hasattr(logger, "log_table"):  # W&B: the row as a table, and the image strips
            columns = list(row)
            logger.log_table(key="results", columns=columns, data=[[row[c] for c in columns]])
            logger.log_image(
                key="privatized",
                images=[str(out_dir / ORIGINALS_FILE), str(out_dir / SAMPLES_FILE)],
                caption=["original", f"{row['mechanism']} eps/image={row['eps_per_image']:.4g}"],
            )
        logger.save()
        logger.finalize("success")
