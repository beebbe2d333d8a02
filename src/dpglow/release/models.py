"""The models a release uses, found when the command line does not name them.

``python src/privatize.py input_dir=... output_dir=... epsilon=3`` after the README's main job:
the flow is the newest finished ``python src/train.py`` run; the label channel's labeler the
newest release classifier trained on the flow's data, or, when there is none, the basis' latent
probes (a labeler that needs no extra training), with a warning that gives the command to train
one; a missing basis is fitted on the flow's own training split, read with the data settings the
flow's run recorded (its ``.hydra/config.yaml``). Whatever is found is written into the task's
config, so the release report names it (path and SHA-256).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dpglow.utils.discovery import (
    MAKE_COMMAND,
    MissingCheckpointError,
    data_of,
    find_latest,
    run_dir_of,
)

log = logging.getLogger(__name__)


def find_flow(cfg: DictConfig) -> None:
    """Fill ``flow.ckpt_path`` with the newest finished flow when it is not given."""
    if OmegaConf.select(cfg, "flow.ckpt_path"):
        return
    found = find_latest("train", log_dir=cfg.paths.log_dir, data_target=None)
    log.info("flow: the newest trained flow, %s", found.checkpoint)
    with open_dict(cfg):
        cfg.flow.ckpt_path = str(found.checkpoint)


def _newest_release_classifier(cfg: DictConfig):
    run = run_dir_of(cfg.flow.ckpt_path)
    target, root = data_of(run) if run is not None else (None, None)
    return find_latest(
        "train_release_classifier", log_dir=cfg.paths.log_dir, data_target=target, data_root=root
    )


def find_render_classifier(cfg: DictConfig) -> None:
    """With the data holder's own labels (``labeler.kind=dataset``), fill the classifier that
    rates rendering candidates (``privacy.render.classifier``) with the newest release classifier
    trained on the flow's data; without one, the releases are rendered without selection."""
    labeler, render = cfg.privacy.get("labeler"), cfg.privacy.get("render")
    if not labeler or labeler.get("kind") != "dataset" or render is None:
        return
    if "classifier" not in render or render.classifier:
        return
    run = run_dir_of(cfg.flow.ckpt_path)
    if run is None or data_of(run)[0] is None:
        log.info("the flow's training data is not recorded: rendering without selection")
        return
    try:
        found = _newest_release_classifier(cfg)
    except MissingCheckpointError:
        log.info("no release classifier for the flow's data: rendering without selection")
        return
    log.info("render classifier: the newest release classifier, %s", found.checkpoint)
    with open_dict(cfg):
        render.classifier = str(found.checkpoint)


def find_labeler(cfg: DictConfig) -> None:
    """Fill the label channel's release classifier with the newest one trained on the flow's
    data; without one, fall back to the latent probes (and say how to train a classifier)."""
    labeler = cfg.privacy.get("labeler")
    if float(cfg.privacy.get("label_fraction") or 0) <= 0:
        return
    find_render_classifier(cfg)
    if not labeler or labeler.get("kind") != "classifier" or labeler.get("ckpt_path"):
        return
    try:
        found = _newest_release_classifier(cfg)
    except MissingCheckpointError:
        log.warning(
            "no release classifier for the flow's data under %s: the labels come from the "
            "basis' latent probes instead (privacy.labeler.kind=probe, recorded in the report). "
            "For the labeler the defaults were chosen with, train one: `%s`",
            Path(cfg.paths.log_dir) / "train_release_classifier",
            MAKE_COMMAND["train_release_classifier"],
        )
        with open_dict(cfg):
            labeler.kind = "probe"
        return
    log.info("labeler: the newest release classifier for the flow's data, %s", found.checkpoint)
    with open_dict(cfg):
        labeler.ckpt_path = str(found.checkpoint)


def flow_training_config(cfg: DictConfig) -> DictConfig:
    """The task's config with the data settings (``data``, ``seed``, ``image_size``) of the flow's
    own training run: what reads the flow's training split, e.g. to fit a missing basis."""
    run = run_dir_of(cfg.flow.ckpt_path)
    saved = run / ".hydra" / "config.yaml" if run is not None else None
    if saved is None or not saved.is_file():
        if cfg.get("data") is not None:  # the task's own data settings (evaluate, audit)
            return cfg
        raise FileNotFoundError(
            f"{cfg.flow.ckpt_path} has no training run config (.hydra/config.yaml) beside it: "
            "fit its basis with `python src/fit_basis.py flow.ckpt_path=... data=<its data>` "
            "or pass privacy.basis.path"
        )
    trained = OmegaConf.load(saved)
    merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(merged):
        merged.data = trained.data
        merged.seed = trained.get("seed")
        # runs from before split_seed existed split by their seed
        merged.split_seed = trained.get("split_seed", trained.get("seed"))
        merged.image_size = trained.get("image_size")
    return merged
