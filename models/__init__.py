"""Generative models: Pyro model callables (installed as ``pyrovae.models``)."""

from .hierarchical import HierarchicalVAE, level_names
from .vae import VAE

__all__ = ["HierarchicalVAE", "VAE", "level_names"]
