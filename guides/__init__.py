"""Amortized encoders: Pyro guide callables (installed as ``pyrovae.guides``)."""

from .conditional import ConditionalGaussianGuide, SemiSupervisedGuide
from .flow import FLOWS, FlowGuide, HouseholderGuide, IAFGuide, PlanarGuide
from .gaussian import GaussianGuide
from .hierarchical import BottomUpGuide, TopDownGuide

__all__ = ["BottomUpGuide", "ConditionalGaussianGuide", "FLOWS", "FlowGuide", "GaussianGuide", "HouseholderGuide",
           "IAFGuide", "PlanarGuide", "SemiSupervisedGuide", "TopDownGuide"]
