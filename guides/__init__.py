"""Amortized encoders: Pyro guide callables (installed as ``pyrovae.guides``)."""

from .gaussian import GaussianGuide
from .hierarchical import BottomUpGuide, TopDownGuide

__all__ = ["BottomUpGuide", "GaussianGuide", "TopDownGuide"]
