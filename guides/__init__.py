"""Amortized encoders: Pyro guide callables (installed as ``pyrovae.guides``)."""

from .flow import FLOWS, FlowGuide, HouseholderGuide, IAFGuide, PlanarGuide
from .gaussian import GaussianGuide
from .hierarchical import BottomUpGuide, TopDownGuide

__all__ = ["BottomUpGuide", "FLOWS", "FlowGuide", "GaussianGuide", "HouseholderGuide", "IAFGuide", "PlanarGuide",
           "TopDownGuide"]
