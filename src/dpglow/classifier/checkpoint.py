"""Reading a classifier checkpoint back (the evaluation classifier and the release classifier)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from dpglow.classifier.module import ClassifierModule
from dpglow.flow import file_sha256, read_checkpoint

# Lightning's section of a checkpoint with the module's constructor arguments.
SECTION = "hyper_parameters"


def load_classifier(
    path: str | Path,
    *,
    what: str = "classifier",
    make: str = "python src/train_classifier.py",
    pass_key: str = "classifier.ckpt_path",
) -> tuple[ClassifierModule, dict[str, Any]]:
    """The :class:`ClassifierModule` (eval mode) a training checkpoint holds, read by the one
    checkpoint reader (:func:`~dpglow.flow.read_checkpoint`: ``weights_only``, pickled code
    refused, errors that say what to train or pass), and ``{"path", "sha256", "weights"}``.
    Checkpoints from before the decision thresholds existed decide at probability 1/2."""
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path, section=SECTION, what=what, make=make, pass_key=pass_key)
    accepted = inspect.signature(ClassifierModule).parameters
    arguments = {k: v for k, v in ckpt[SECTION].items() if k in accepted}
    module = ClassifierModule(**arguments)
    state = dict(ckpt["state_dict"])
    state.setdefault("decision_logits", torch.zeros(len(module.pathologies)))
    module.load_state_dict(state)
    info = {"path": str(path.resolve()), "sha256": file_sha256(path), "weights": None}
    return module.eval(), info
