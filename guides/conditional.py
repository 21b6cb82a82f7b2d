"""Amortized guides for the label-conditioned models of :mod:`pyrovae.models.conditional`.

- :class:`ConditionalGaussianGuide`: q(z | x, y) = N(mu(x, y), sigma(x, y)) for the
  conditional VAE (y always given).
- :class:`SemiSupervisedGuide`: the M2 recognition model q(y | x) q(z | x, y)
  (Kingma et al. 2014, arXiv 1406.5298): a batch with labels draws z only; a
  batch without draws y from the classifier's ``OneHotCategorical``, marked
  ``infer={"enumerate": "parallel"}`` so that pyrovae (as Pyro's
  ``TraceEnum_ELBO``) sums over the classes exactly instead of sampling one.
"""

import pyro
import pyro.distributions as dist
from torch import nn

from pyrovae.models.conditional import one_hot


class ConditionalGaussianGuide(nn.Module):
    """``guide(x, y)``: z ~ N(encoder(x, onehot(y))); ``encoder`` takes the datum and the one-hot label
    (e.g. :class:`pyrovae.nn.nets.ConditionalGaussian` with ``in_shapes=[x_shape, (C,)]``)."""

    def __init__(self, encoder, num_classes):
        super().__init__()
        self.encoder, self.num_classes = encoder, num_classes

    def forward(self, x, y):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x, one_hot(y, self.num_classes, x))
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


class SemiSupervisedGuide(nn.Module):
    """``guide(x, y=None)``: q(y | x) = OneHotCategorical(classifier(x)) enumerated when y is missing, then
    q(z | x, y) = N(encoder(x, y))."""

    def __init__(self, classifier, encoder, num_classes):
        super().__init__()
        self.classifier, self.encoder, self.num_classes = classifier, encoder, num_classes

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y_hot = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(x)),
                                    infer={"enumerate": "parallel"})
            else:
                y_hot = one_hot(y, self.num_classes, x)
            loc, log_scale = self.encoder(x, y_hot)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def classify(self, x):
        """The most probable class under q(y | x): ``[B]``."""
        return self.classifier(x).argmax(-1)
