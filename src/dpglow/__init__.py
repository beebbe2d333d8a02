"""dpglow: local differential privacy for chest X-rays through a Glow flow (DP-GLOW)."""

__version__ = "0.1.0"
