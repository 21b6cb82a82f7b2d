"""The IWAE paper's one-stochastic-layer model on MNIST, trained on the K-sample bound, scored by its K=5000 NLL.

Burda, Grosse & Salakhutdinov (2015, arXiv 1509.00519): x - 200 - 200 - z(50)
with tanh units, a Bernoulli likelihood and a standard normal prior, trained on
dynamically binarized MNIST with the importance-weighted bound

    L_k(x) = E[ log (1/k) sum_i p(x, z_i) / q(z_i | x) ],  z_i ~ q(z | x),

(k = 1 is the VAE). The pair is a plain pyrovae VAE; ``pyrovae.infer.iwae.IWAE`` is the
objective (``--dreg``: doubly reparameterized guide gradients, Tucker et al. 2018).
After training the script prints the test NLL estimated with 5000 importance
samples per image (``pyrovae.evaluate.likelihood.log_likelihood``) with its Monte Carlo
standard error, and the number of active units (``pyrovae.evaluate.diagnostics.active_units``).
The paper's numbers (after 3280 epochs): 86.76 nats for k = 1, 85.54 for k = 5 and
84.78 for k = 50; a few epochs land several nats above them.

    python examples/iwae_mnist.py --data-dir DIR [--particles 5] [--epochs 5] [--num-test 1000]

``DIR`` holds the four MNIST IDX files (``train-images-idx3-ubyte.gz`` ...); the
``MNIST_DIR`` environment variable may give it instead. One epoch with k = 5 takes
about half a minute on a 2-core CPU, the NLL of 1000 test images about a minute.
"""

import argparse
import os

import torch

import pyrovae
from pyrovae.data import Split
from pyrovae.evaluate.diagnostics import active_units
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import GaussianGuide
from pyrovae.infer.iwae import IWAE
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.priors import StandardNormal

SHAPE, HIDDEN, LATENT = (1, 28, 28), (200, 200), 50


def iwae_pair():
    """The paper's 1-layer model: 784-200-200-50 tanh encoder and decoder, Bernoulli likelihood."""
    encoder = MLPEncoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    decoder = MLPDecoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    return VAE(decoder, StandardNormal(LATENT), Bernoulli()), GaussianGuide(encoder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR"),
                        help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    parser.add_argument("--particles", type=int, default=5, help="k of the training bound (1: the VAE)")
    parser.add_argument("--dreg", action="store_true", help="doubly reparameterized guide gradients")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=20, help="the paper's 20")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-test", type=int, default=1000, help="test images for the NLL")
    parser.add_argument("--iw-samples", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give the MNIST folder with --data-dir DIR or the MNIST_DIR environment variable")

    data = pyrovae.load_dataset("mnist", args.data_dir, binarize="dynamic", seed=args.seed)
    # the paper trains on all 60,000 training images
    train = Split(torch.cat([data.train.data, data.val.data]), binarize="dynamic", seed=args.seed)
    torch.manual_seed(args.seed)
    model, guide = iwae_pair()
    run = pyrovae.SVIRun(model, guide, train, objective=IWAE(num_particles=args.particles, dreg=args.dreg),
                         lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, progress=False)
    for group in run.optimizer.param_groups:  # the paper's Adam: beta2 0.999, eps 1e-4
        group["eps"] = 1e-4
    for row in run.fit():
        print(f"epoch {row['epoch']}: training bound L_{args.particles} = {row['train_elbo']:.2f} "
              f"({row['train_seconds']:.0f} s)")

    test = Split(data.test.data[:args.num_test], binarize="dynamic", seed=args.seed)
    ll = log_likelihood(model, guide, test, num_samples=args.iw_samples, seed=args.seed)
    elbo = pyrovae.evaluate_elbo(model, guide, test, seed=args.seed)
    au = active_units(model, guide, data.test, seed=args.seed)
    print(f"test NLL (k={args.iw_samples}, {len(test)} images): {ll.nll:.2f} +- {ll.nll_std_error:.2f} nats")
    print(f"test ELBO: {elbo:.2f} nats")
    print(f"active units: {au} of {au.dims['z']}")


if __name__ == "__main__":
    main()
