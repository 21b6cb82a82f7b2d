"""The recorded step's check against the eager step: it catches a wrong graph and tolerates rounding."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrovae.data import Batch
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.step import StepFunction, _gradient_tolerance


class _TemperedPair(nn.Module):
    """A linear-Gaussian pair whose likelihood reads ``temperature``, a plain tensor attribute: state outside
    the step's inputs, which the recorded graph holds as the constant it was at recording time."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.dec = nn.Linear(4, 4), nn.Linear(2, 4)
        self.temperature = torch.tensor(1.0)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z) * self.temperature, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_the_recheck_catches_a_graph_that_holds_stale_state():
    pair = _TemperedPair()
    step = StepFunction(ELBO()(pair.model, pair.guide), list(pair.parameters()))
    batch = Batch(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    step(batch)
    step.recheck()
    step(batch)
    assert step.mode == "graph", step.reason  # unchanged state: the graph passes its check again
    pair.temperature = torch.tensor(3.0)
    step.recheck()
    with pytest.warns(UserWarning, match="gradient for .* differs from the eager step's"):
        step(batch)
    assert step.mode == "eager"


def test_the_gradient_tolerance_is_relative_to_the_larger_of_own_norm_and_share():
    big, small = torch.ones(1000), torch.full((10,), 1e-4)  # small: a gradient left by cancellation
    expected = [big, small]
    share_of_small = torch.cat(expected).norm() * (10 / 1010) ** 0.5  # 3.15, against its own norm 3e-4
    torch.testing.assert_close(_gradient_tolerance(small, expected), 1e-3 * share_of_small + 1e-6)
    torch.testing.assert_close(_gradient_tolerance(big, expected), 1e-3 * big.norm() + 1e-6)
