"""pyrovae: deep latent-variable models on Pyro.

Write a generative model as a Pyro ``model`` and an amortized encoder as a Pyro
``guide``; pyrovae trains the pair with SVI and evaluates it. See the README
for the pair contract.
"""

from pyrovae.data import ImageSplit, load_dataset
from pyrovae.infer.elbo import ELBO, Objective
from pyrovae.infer.trace import PairError, check_pair, run_pair
from pyrovae.infer.svi import SVIRun, evaluate_elbo

__version__ = "0.1.0"

__all__ = ["ELBO", "ImageSplit", "Objective", "PairError", "SVIRun", "check_pair", "evaluate_elbo",
           "load_dataset", "run_pair"]
