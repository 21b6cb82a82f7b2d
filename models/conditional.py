"""Generative models conditioned on a class label ``y`` (passed as the keyword argument ``y``).

- :class:`ConditionalVAE`: p(z) p(x | z, y) with y always observed (Sohn, Lee & Yan
  2015, "Learning structured output representation using deep conditional
  generative models"); samples of a chosen class decode z ~ p(z) with that y.
- :class:`SemiSupervisedVAE`: the M2 model of Kingma, Rezende, Mohamed & Welling
  2014 ("Semi-supervised learning with deep generative models", arXiv 1406.5298,
  section 2.2): p(y) = Cat(1/C), p(z) = N(0, I), p(x | y, z). A batch with labels
  observes y; a batch without (``y=None``) leaves y latent, for the guide to
  enumerate. While training, the model also scores ``alpha * log q(y | x)`` for
  each labelled datum with the guide's classifier, so that the classifier learns
  from the labels directly: the paper's eq. 9,
  J^a = sum_labelled L(x, y) + sum_unlabelled U(x) + a E_labelled[-log q(y | x)]
  with a = 0.1 N, puts the weight ``alpha = a / N_l = 0.1 N / N_l`` on each of
  the N_l labelled data among N (the authors' code: ``beta = alpha * n_tot /
  n_labeled``). The term belongs to the training objective only (the module in
  train mode; it is in the training bound a run reports): in eval mode -- the
  validation and test ELBO, the log-likelihood -- a labelled datum is scored by
  the bound L(x, y) <= log p(x, y) alone.

Labels are class indices ``[B]`` (int64); inside the programs they are one-hot
rows of ``torch.eye(C)`` (indexing, so no value-dependent check: the SVI step
stays recordable), and the label site is a ``OneHotCategorical``.
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def one_hot(y, num_classes, like):
    """Class indices ``[...]`` as one-hot rows ``[..., C]`` in ``like``'s dtype and device."""
    return torch.eye(num_classes, dtype=like.dtype, device=like.device)[y]


def _join(*parts):
    """Concatenate along the last dim after broadcasting the leading dims."""
    batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], -1)


class ConditionalVAE(nn.Module):
    """``model(x, y)``: z ~ prior, x ~ likelihood(decoder(concat(z, onehot(y)))), under ``pyro.plate("data")``.

    ``decoder`` takes the latent and the one-hot label concatenated
    (``latent_dim + num_classes`` inputs).
    """

    def __init__(self, decoder, prior, likelihood, num_classes):
        super().__init__()
        self.decoder, self.prior, self.likelihood = decoder, prior, likelihood
        self.num_classes = num_classes

    def forward(self, x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            h = _join(z, one_hot(y, self.num_classes, z))
            return pyro.sample("x", self.likelihood(self.decoder(h)), obs=x)


class SemiSupervisedVAE(nn.Module):
    """``model(x, y=None)``: the M2 model (module doc). ``classifier`` is the guide's q(y | x) network, held by
    reference (the guide owns it) for the labelled-data term; ``alpha`` weighs that term per labelled datum
    (0.1 N / N_l in the paper) while the module trains."""

    def __init__(self, decoder, likelihood, latent_dim, num_classes, classifier, alpha=1.0):
        super().__init__()
        self.decoder, self.likelihood = decoder, likelihood
        self.latent_dim, self.num_classes, self.alpha = latent_dim, num_classes, float(alpha)
        self._classifier = (classifier,)  # a tuple: not registered here, its parameters are the guide's

    def forward(self, x, y=None):
        c = self.num_classes
        with pyro.plate("data", x.shape[0]):
            prior_y = dist.OneHotCategorical(logits=x.new_zeros(c))
            y_hot = pyro.sample("y", prior_y, obs=None if y is None else one_hot(y, c, x))
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(_join(z, y_hot))), obs=x)
            if y is not None and self.alpha and self.training:
                q_y = dist.OneHotCategorical(logits=self._classifier[0](x))
                pyro.factor("classification", self.alpha * q_y.log_prob(y_hot))
