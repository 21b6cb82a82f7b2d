"""Amortized encoders: Pyro guide callables (installed as ``pyrovae.guides``)."""

from .gaussian import GaussianGuide

__all__ = ["GaussianGuide"]
