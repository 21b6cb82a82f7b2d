import gzip
import struct

import pyro
import pytest
import torch

from pyrovae.data import Split, load_dataset
from pyrovae.guides import GaussianGuide
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.models import VAE
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.priors import StandardNormal


def small_pair(image_shape=(1, 64, 64), latent_dim=4, hidden=(32,), seed=0):
    pyro.set_rng_seed(seed)
    enc, dec = MLPEncoder(image_shape, latent_dim, hidden), MLPDecoder(image_shape, latent_dim, hidden)
    return VAE(dec, StandardNormal(latent_dim), Bernoulli()), GaussianGuide(enc)


@pytest.fixture(scope="session")
def shapes_small():
    return load_dataset("shapes", num_train=512, val_size=128, num_test=128, seed=3)


@pytest.fixture
def binary_images():
    g = torch.Generator().manual_seed(0)
    return Split((torch.rand(96, 1, 8, 8, generator=g) < 0.3).float())


def pair_sites(model, guide, x, num_particles=None, **kwargs):
    """``(guide latent sites, model sample sites)`` of one run of the pair (Pyro trace nodes), every site drawn."""
    from pyrovae.infer.trace import is_sample, trace_pair

    pt = trace_pair(model, guide, x, num_particles=num_particles, enumerate=False, **kwargs)
    return pt.latents, {n: s for n, s in pt.model.nodes.items() if is_sample(s)}


def write_tiny_mnist(folder, sizes=(("train", 200), ("t10k", 30)), random_labels=False):
    """The four IDX files of a tiny MNIST look-alike in ``folder``: grey noise brightened by the class,
    10 classes (cycled, or drawn with ``random_labels``). Returns ``str(folder)``."""
    g = torch.Generator().manual_seed(0)
    for stem, n in sizes:
        labels = torch.randint(0, 10, (n,), generator=g) if random_labels else torch.arange(n) % 10
        images = (torch.rand(n, 28, 28, generator=g) * 120 + labels.view(-1, 1, 1) * 12).to(torch.uint8)
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBIII", 0, 0x08, 3, n, 28, 28) + images.numpy().tobytes())
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBI", 0, 0x08, 1, n) + labels.to(torch.uint8).numpy().tobytes())
    return str(folder)
