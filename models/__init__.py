"""Generative models: Pyro model callables (installed as ``pyrovae.models``)."""

from .conditional import ConditionalVAE, SemiSupervisedVAE
from .hierarchical import HierarchicalVAE, level_names
from .vae import VAE

__all__ = ["ConditionalVAE", "HierarchicalVAE", "SemiSupervisedVAE", "VAE", "level_names"]
