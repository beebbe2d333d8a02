"""Training: the flow's Lightning module and the train() task behind src/train.py (the
classifiers and the refiner train through it too)."""

from dpglow.training.module import GlowModule

__all__ = ["GlowModule"]
