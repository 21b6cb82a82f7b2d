"""Train the VampPrior paper's HVAE (L=2) on MNIST and print its test log-likelihood.

Tomczak & Welling 2018 (arXiv 1705.07120): p(z2) = (1/K) sum_k q(z2 | u_k) with K
learnable pseudo-inputs u_k, p(z1 | z2), p(x | z1, z2); q(z2 | x), q(z1 | x, z2).
The prior's q(z2 | .) is the guide's own encoder: built once, owned by the guide.

    python examples/vampprior_mnist.py --data-dir path/to/mnist [--epochs 20] [--warmup 5]

(The paper: 100 warm-up epochs and up to 2000 epochs, test LL -83.19 nats.)
"""

import argparse

import pyrovae
from pyrovae.data import load_dataset
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import TopDownGuide
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import HierarchicalVAE
from pyrovae.nn.nets import ConditionalGaussian, MLPDecoder
from pyrovae.nn.priors import VampPrior

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--warmup", type=int, default=5, help="KL warm-up epochs (the paper: 100)")
parser.add_argument("--components", type=int, default=500, help="pseudo-inputs K")
parser.add_argument("--num-test", type=int, default=1000, help="test images for the K=5000 estimate")
args = parser.parse_args()

data = load_dataset("mnist", args.data_dir, binarize="dynamic")
image, (d1, d2), hidden = (1, 28, 28), (40, 40), (300, 300)

q_z2 = ConditionalGaussian([image], d2, hidden)                  # q(z2 | x), shared with the prior
q_z1 = ConditionalGaussian([image, (d2,)], d1, hidden)           # q(z1 | x, z2)
guide = TopDownGuide(q_z2, [q_z1])
prior = VampPrior(q_z2, image, num_components=args.components)   # p(z2) = (1/K) sum_k q(z2 | u_k)
p_z1 = ConditionalGaussian([(d2,)], d1, hidden)                  # p(z1 | z2)
model = HierarchicalVAE(MLPDecoder(image, d1 + d2, hidden), prior, [p_z1], Bernoulli(), decode_from="all")

run = pyrovae.SVIRun(model, guide, data.train, data.val, pyrovae.ELBO(warmup=args.warmup), lr=5e-4,
                     batch_size=100, epochs=args.epochs, ignore_before_epoch=args.warmup)
run.fit()
test = data.test.fixed(0).data[:args.num_test]
ll = log_likelihood(model, guide, test, num_samples=5000, seed=0)
print(f"test log-likelihood (K=5000, {len(test)} images): {-ll.nll:.2f} +- {ll.nll_std_error:.2f} nats")
print(f"test ELBO: {pyrovae.evaluate_elbo(model, guide, data.test):.2f} nats")
