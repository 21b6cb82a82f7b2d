"""Generative models: Pyro model callables (installed as ``pyrovae.models``)."""

from .vae import VAE

__all__ = ["VAE"]
