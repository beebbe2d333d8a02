"""Training: the Lightning module, schedules, and the train() pipeline behind src/train.py."""

from dpglow.training.module import GlowModule

__all__ = ["GlowModule"]
