"""Find the newest trained flow / classifier of an experiment under ``outputs/``.

A run folder (``outputs/<task>/runs/<time>/`` or ``outputs/<task>/multiruns/<time>/<n>/``) holds
``checkpoints/``, Hydra's ``.hydra/config.yaml`` (which data it was trained on), ``splits.csv`` and,
once it finished, ``summary.json`` (its best checkpoint).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

MAKE_COMMAND = {
    "train": "python src/train.py",
    "train_classifier": "python src/train_classifier.py",
    "train_release_classifier": (
        "python src/train_classifier.py --config-name train_release_classifier"
    ),
}
WHAT = {
    "train": "flow",
    "train_classifier": "classifier",
    "train_release_classifier": "release classifier (the label channel's labeler)",
}
PASS_KEY = {
    "train": "flow.ckpt_path",
    "train_classifier": "classifier.ckpt_path",
    "train_release_classifier": "privacy.labeler.ckpt_path",
}


class MissingCheckpointError(FileNotFoundError):
    """No trained model of the requested kind exists for this experiment."""


@dataclass(frozen=True)
class FoundRun:
    checkpoint: Path
    run_dir: Path | None
    data_target: str | None
    summary: dict


def data_of(run_dir: Path) -> tuple[str | None, str | None]:
    """(source class, raw root string) of a run's data config, from its .hydra/config.yaml."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None, None
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # an unreadable config: not a run to use
        return None, None
    data = config.get("data") or {} if isinstance(config, dict) else {}
    source = data.get("source") or {}
    return source.get("_target_"), data.get("root")


def _best_checkpoint(run_dir: Path) -> tuple[Path | None, dict]:
    summary: dict = {}
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = {}
    best = summary.get("best_checkpoint")
    if best and Path(best).is_file():
        return Path(best), summary
    last = run_dir / "checkpoints" / "last.ckpt"
    return (last if last.is_file() else None), summary


def _run_dirs(task_dir: Path) -> list[Path]:
    found = [p for p in task_dir.glob("runs/*") if p.is_dir()]
    found += [p for p in task_dir.glob("multiruns/*/*") if p.is_dir()]
    return found


def find_latest(
    task: str, *, log_dir: str | Path, data_target: str | None, data_root: str | None = None
) -> FoundRun:
    """The newest finished run of ``task`` (``train`` or ``train_classifier``) trained on the same
    data source (and raw ``data.root``) as ``data_target``; its best checkpoint, else last.ckpt.

    Runs with a ``summary.json`` (finished) win over unfinished ones; among those, the newest
    checkpoint file. Raises :class:`MissingCheckpointError` naming the command that makes one.
    """
    task_dir = Path(log_dir) / task
    candidates = []
    for run_dir in _run_dirs(task_dir) if task_dir.is_dir() else []:
        target, root = data_of(run_dir)
        if data_target is not None and target != data_target:
            continue
        if data_root is not None and root is not None and root != data_root:
            continue
        ckpt, summary = _best_checkpoint(run_dir)
        if ckpt is None:
            continue
        candidates.append((bool(summary), ckpt.stat().st_mtime, ckpt, run_dir, target, summary))
    if not candidates:
        dataset = data_target.rsplit(".", 1)[-1] if data_target else "this data"
        raise MissingCheckpointError(
            f"no trained {WHAT[task]} for {dataset} under {task_dir}: make one with "
            f"`{MAKE_COMMAND[task]}` (same data=... as here), or pass "
            f"{PASS_KEY[task]}=<path/to/checkpoint.ckpt>"
        )
    _, _, ckpt, run_dir, target, summary = max(candidates, key=lambda c: (c[0], c[1]))
    return FoundRun(ckpt, run_dir, target, summary)


def run_folder(checkpoint: str | Path) -> Path:
    """The folder a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<name>.ckpt``, else
    the checkpoint's own folder (where its bases and notes are kept)."""
    path = Path(checkpoint).expanduser().resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """:func:`run_folder`, when it is a training run's folder (``.hydra/`` or ``splits.csv``)."""
    run_dir = run_folder(checkpoint)
    return run_dir if (run_dir / ".hydra").is_dir() or (run_dir / "splits.csv").is_file() else None


def training_paths(
    run_dir: Path | None, splits: tuple[str, ...] = ("train", "val")
) -> set[str] | None:
    """Resolved paths of the images a run used in ``splits`` (None: no splits.csv)."""
    if run_dir is None or not (run_dir / "splits.csv").is_file():
        return None
    with open(run_dir / "splits.csv", newline="") as fh:
        return {
            str(Path(row["path"]).resolve()) for row in csv.DictReader(fh) if row["split"] in splits
        }
