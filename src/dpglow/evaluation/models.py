"""The trained models an evaluation job uses: the flow, the evaluation classifier, the release
classifier (the label channel's labeler), each the given checkpoint or the newest finished run on
the same data, and the predict trainer of the per-image pass."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from dpglow.flow import load_flow
from dpglow.privatizers.labelers import fill_dataset_source
from dpglow.utils.discovery import MissingCheckpointError, find_latest, run_dir_of

log = logging.getLogger(__name__)


def data_target(cfg: DictConfig) -> tuple[str, str | None]:
    """(``data.source._target_``, the raw ``data.root``) of a task config: what a model's run must
    have been trained on to be found for it."""
    raw = OmegaConf.to_container(cfg.data, resolve=False)
    return raw["source"]["_target_"], raw.get("root")


def newest(cfg: DictConfig, task: str, metric: str, what: str) -> Path:
    """The newest finished run of ``task`` on this data (said in the log, with its test metric)."""
    target, root = data_target(cfg)
    found = find_latest(task, log_dir=cfg.paths.log_dir, data_target=target, data_root=root)
    value = found.summary.get("metrics", {}).get(metric)
    shown = f" ({metric} {value:.3f})" if value is not None else ""
    log.info("%s: newest trained %s for this data: %s%s", what, what, found.checkpoint, shown)
    return found.checkpoint


def evaluated_flow(cfg: DictConfig) -> tuple[Any, dict, Path | None]:
    """(flow, its checkpoint info, its run folder) for ``flow.ckpt_path`` or the newest flow."""
    path = cfg.flow.get("ckpt_path") or newest(cfg, "train", "test/bpd", "flow")
    flow, info = load_flow(path)
    return flow, info, run_dir_of(path)


def evaluation_classifier(cfg: DictConfig, pathologies: list[str]) -> tuple[Any, dict, Path | None]:
    """(classifier in eval mode, ``{"path", "sha256", "weights"}``, its run folder): pretrained
    torchxrayvision ``classifier.weights``, ``classifier.ckpt_path``, or the newest classifier."""
    from dpglow.classifier import ClassifierModule
    from dpglow.classifier.checkpoint import load_classifier

    weights = cfg.classifier.get("weights")
    if weights:
        module = ClassifierModule(pathologies=pathologies, weights=weights)
        log.info("classifier: pretrained torchxrayvision weights %s", weights)
        return module.eval(), {"path": None, "sha256": weights, "weights": weights}, None
    path = cfg.classifier.get("ckpt_path") or newest(
        cfg, "train_classifier", "test/auc_mean", "classifier"
    )
    module, info = load_classifier(path)
    return module, info, run_dir_of(path)


def labeler_runs(cfg: DictConfig) -> dict[str, Path | None]:
    """The run folders of the release classifiers the privatizer uses: ``{"labeler": ...}`` when
    it labels images with one (``privacy.labeler.kind=classifier`` and a label budget; a missing
    ``privacy.labeler.ckpt_path`` is filled with the newest release classifier on this data), and
    ``{"render_classifier": ...}`` when one rates its rendering candidates (with the data holder's
    own labels, ``kind=dataset``, a missing ``privacy.render.classifier`` is filled the same way
    when there is one), else ``{}``."""
    labeler = cfg.privacy.get("labeler") or {}
    if float(cfg.privacy.get("label_fraction", 0) or 0) <= 0:
        return {}
    if labeler.get("kind") == "dataset":
        fill_dataset_source(cfg)  # the evaluated data's own label table
        render = cfg.privacy.get("render")
        if render is not None and "classifier" in render and not render.classifier:
            try:
                found = newest(
                    cfg, "train_release_classifier", "test/auc_mean", "render classifier"
                )
            except MissingCheckpointError:
                log.info("no release classifier for this data: rendering without selection")
                return {}
            with open_dict(cfg):
                render.classifier = str(found)
    runs = {}
    render_classifier = OmegaConf.select(cfg, "privacy.render.classifier")
    if render_classifier:
        runs["render_classifier"] = run_dir_of(render_classifier)
    if labeler.get("kind") != "classifier":
        return runs
    if not labeler.get("ckpt_path"):
        with open_dict(cfg):
            labeler.ckpt_path = str(
                newest(cfg, "train_release_classifier", "test/auc_mean", "labeler")
            )
    return {**runs, "labeler": run_dir_of(labeler.ckpt_path)}


def predict_trainer(cfg: DictConfig) -> Any:
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
