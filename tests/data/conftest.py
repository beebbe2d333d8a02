"""Fixtures of the data tests (defined in fixtures.py so other folders can use them too)."""

from .fixtures import *  # noqa: F403
