"""pyrovae: deep latent-variable models on Pyro.

Write a generative model as a Pyro ``model`` and an amortized encoder as a Pyro
``guide``; pyrovae trains the pair with SVI and evaluates it. See the README
for the pair contract.
"""

from pyrovae.data import Batch, Split, as_split, load_dataset
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.infer.elbo import ELBO, Objective
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.regularized import BetaVAE, ControlledCapacity, FreeBits
from pyrovae.infer.svi import SVIRun, evaluate_elbo
from pyrovae.infer.trace import PairError, check_pair, trace_pair

__version__ = "0.1.0"

__all__ = ["Batch", "BetaVAE", "ControlledCapacity", "ELBO", "FreeBits", "IWAE", "Objective", "PairError", "SVIRun",
           "Split", "as_split", "check_pair", "evaluate_elbo", "load_dataset", "log_likelihood", "trace_pair"]
