"""Does a pair trained on ``shapes`` draw the right shape? A shape classifier reads its pictures.

The ELBO does not say whether pictures look right: a VAE that turns every square
and heart into a round blob of the right size and place loses little of it. Here
a small convolutional network, trained on ground-truth ``shapes`` images
(:class:`~pyrovae.data.ShapesFactors`) rendered from random factors, predicts
the shape (square, ellipse, heart) of an image, and three figures read a pair
through it:

- :func:`reconstruction_shape_accuracy`: the fraction of test images x whose
  reconstruction E[x' | z], z ~ q(z|x), the classifier labels with x's true
  shape (chance: 1/3);
- :func:`prior_sample_confidence`: for decoded prior samples E[x | z], z ~ p(z),
  the classifier's mean max-probability and the fraction of samples with
  max-probability above 0.9 (*confident*: the sample is one shape);
- :func:`aggregate_posterior_confidence`: the same for E[x | z] with z drawn
  from the aggregate posterior q(z) = (1/N) sum_n q(z|x_n), i.e. z ~ q(z|x_n)
  for random test images n. Where it is high and the prior's figure is low, the
  standard-normal prior puts mass where q(z) has none ("holes", Rezende &
  Viola 2018, arXiv 1810.00597; Tomczak & Welling 2018, arXiv 1705.07120).

**What the classifier is trained on.** A picture of a pair is a mean E[x|z],
not a binary draw: where the decoder hesitates between shapes, the mean is close
to a weighted superposition sum_k w_k x_k of the images of the candidate shapes;
where it hesitates about the pose it is a blurred shape; where it has learnt
little it is a cloud. Each training batch (:func:`training_batch`) is half
binary renders with one-hot targets, a quarter superpositions of one pose
rendered as all three shapes, with random weights w (one-hot or
Dirichlet(1, 1, 1)), a Gaussian blur (up to ``max_blur`` pixels) and a random
contrast, with target w (soft-label cross-entropy, as in mixup, Zhang et al.
2018, arXiv 1710.09412), and a quarter pictures of no shape (round blobs and
smooth clouds, :func:`distractors`) with the uniform target. The image is first
cropped around its centre of mass (:func:`centre_crop`), so the network never
has to learn the position. The max-probability then reads as "how much this
picture is one shape": binary renders score above 0.9 (98% of them with the
default budget: the ceiling of ``prior_sample_confidence``), superpositions and
clouds below it. The default budget (600 steps) trains in about 20 s of one CPU core.

Limits. Hearts are the roundest shape, so a round blurred blob reads as a heart
more often than as anything else (with probability about 0.7, rarely above
0.9): a pair that draws every square and heart as a blob scores about 0.55, not
1/3 (ellipses stay elongated). ``reconstruction_shape_accuracy_by_shape`` in
:func:`shape_summary` shows it: such a pair gets squares wrong.
The classifier knows the ``shapes`` renderer only: it is no judge of dSprites'
images (another heart) or of other sizes than 64x64.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyrovae.data.shapes import FACTOR_SIZES, IMAGE_SIZE, SHAPE_NAMES, render
from pyrovae.data.splits import Split
from pyrovae.infer.distributions import distribution_mean
from pyrovae.infer.predictive import ResampleObserved
from pyrovae.infer.trace import evaluation_mode, trace_pair, trace_program
from pyrovae.util import positive_int, seeded

CONFIDENT = 0.9  # max-probability above which a picture counts as one shape
IMAGE_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)


def centre_crop(images, size=32):
    """The ``size`` x ``size`` window of images ``[N, 1, 64, 64]`` centred on each image's centre of mass.

    Bilinear sampling (``grid_sample``) at the sub-pixel centroid of the pixel
    values; an empty image keeps the image centre. A shape reaches at most 13
    pixels from its centre, so the window of 32 holds all of it.
    """
    n, size_in = images.shape[0], images.shape[-1]
    w = images[:, 0]
    mass = w.sum((1, 2))
    coords = torch.arange(size_in, dtype=images.dtype, device=images.device) + 0.5
    empty = mass < 1e-3
    cy = torch.where(empty, size_in / 2, (w.sum(2) * coords).sum(1) / mass.clamp_min(1e-3))
    cx = torch.where(empty, size_in / 2, (w.sum(1) * coords).sum(1) / mass.clamp_min(1e-3))
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = size / size_in
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / size_in - 1, 2 * cy / size_in - 1
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


class ShapeClassifier(nn.Module):
    """Images ``[*batch, 1, 64, 64]`` with values in [0, 1] -> shape logits ``[*batch, 3]``.

    The image is cropped to 32x32 around its centre of mass (:func:`centre_crop`:
    the position no longer matters), then three 3x3 convolutions, each followed
    by a ReLU and 2x2 max pooling (16, 32, 32 channels, down to 4x4), and a
    hidden layer of 64 units.
    """

    def __init__(self, width=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, len(SHAPE_NAMES)))

    def forward(self, x):
        _check_images(x)
        batch = x.shape[:-3]
        return self.net(centre_crop(x.reshape(-1, *IMAGE_SHAPE))).reshape(*batch, len(SHAPE_NAMES))

    @torch.no_grad()
    def probabilities(self, images, batch_size=500):
        """p(shape | image) ``[N, 3]`` in eval mode, on the classifier's device, in batches."""
        _check_images(images)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            return torch.cat([F.softmax(self(images[s:s + batch_size].to(device, torch.float32)), -1).cpu()
                              for s in range(0, images.shape[0], batch_size)])
        finally:
            self.train(was_training)


def _check_images(x):
    if not isinstance(x, torch.Tensor) or x.dim() < 4 or tuple(x.shape[-3:]) != IMAGE_SHAPE:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"the shape classifier reads shapes images [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}], got {shape}")


# ---------------------------------------------------------------------------
# Training data: ground-truth renders, plain and as mean-like mixtures

def render_pose_triplets(num, rng):
    """``num`` random poses (scale, orientation, position), each rendered as all three shapes: ``[num, 3, 1, 64, 64]``."""
    factors = np.stack([rng.integers(0, n, size=num) for n in FACTOR_SIZES], axis=1)
    triplets = np.repeat(factors, len(SHAPE_NAMES), axis=0)
    triplets[:, 0] = np.tile(np.arange(len(SHAPE_NAMES)), num)
    images = torch.from_numpy(render(triplets)).float()
    return images.reshape(num, len(SHAPE_NAMES), *IMAGE_SHAPE)


def gaussian_blur(images, sigma):
    """Blur ``[N, 1, H, W]`` images with a Gaussian of standard deviation ``sigma[n]`` pixels (0: unchanged)."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # [N, 2r+1], a delta where sigma ~ 0
    n = images.shape[0]
    padded = F.pad(images.reshape(1, n, *images.shape[-2:]), (radius,) * 4)
    rows = F.conv2d(padded, kernel.reshape(n, 1, -1, 1), groups=n)
    both = F.conv2d(rows, kernel.reshape(n, 1, 1, -1), groups=n)
    return both.reshape(images.shape)


def distractors(num, generator, max_blur=1.0):
    """``num`` pictures of no shape, ``[num, 1, 64, 64]``: round blobs and smooth clouds (half each).

    A round blob is a filled ellipse of aspect ratio in [0.8, 1] (the ellipse
    shape has 0.55) and radius U(4, 12) pixels at a random place, blurred by
    sigma ~ U(0, ``max_blur``); a cloud is white noise smoothed by sigma ~ U(1.5,
    4) pixels, thresholded and windowed by a Gaussian bump of width U(5, 12)
    pixels. Both get a contrast ~ U(0.4, 1).
    """
    u = functools.partial(_uniform, num, generator)
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    cx, cy = u(14, 50)[:, None, None], u(14, 50)[:, None, None]
    dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
    radius, aspect, angle = u(4, 12)[:, None, None], u(0.8, 1)[:, None, None], u(0, math.pi)[:, None, None]
    a = (torch.cos(angle) * dx + torch.sin(angle) * dy) / radius
    b = (-torch.sin(angle) * dx + torch.cos(angle) * dy) / (radius * aspect)
    blobs = gaussian_blur((a * a + b * b <= 1).float().unsqueeze(1), u(0, 3 * max_blur))
    noise = gaussian_blur(torch.randn(num, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator), u(1.5, 4))
    noise = noise / noise.std((1, 2, 3), keepdim=True)
    window = torch.exp(-(dx * dx + dy * dy) / (2 * u(5, 12)[:, None, None] ** 2)).unsqueeze(1)
    clouds = (noise - u(0.3, 1.2)[:, None, None, None]).clamp_min(0) * window
    clouds = clouds / clouds.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    images = torch.where((torch.arange(num) % 2 == 0)[:, None, None, None], blobs, clouds)
    return images * u(0.4, 1)[:, None, None, None]


def _uniform(num, generator, low, high):
    return low + (high - low) * torch.rand(num, generator=generator)


def training_batch(triplets, generator, max_blur=1.0):
    """One batch from pose triplets ``[B, 3, 1, 64, 64]``: ``(images [B, 1, 64, 64], target probabilities [B, 3])``.

    Half of the batch are binary renders with one-hot targets; a quarter are
    mixtures sum_k w_k x_k with w one-hot or Dirichlet(1, 1, 1) (a coin flip),
    blurred by sigma ~ U(0, ``max_blur``) and scaled by a contrast ~ U(0.4, 1),
    with target w; a quarter are :func:`distractors` with the uniform target
    (1/3, 1/3, 1/3): no shape.
    """
    b, k = triplets.shape[0], triplets.shape[1]
    shape = torch.randint(k, (b,), generator=generator)
    weights = F.one_hot(shape, k).float()
    soft = (torch.arange(b) >= b // 2) & (torch.arange(b) < 3 * b // 4)
    none = torch.arange(b) >= 3 * b // 4
    dirichlet = -torch.log(torch.rand(b, k, generator=generator))  # Gamma(1) draws
    dirichlet = dirichlet / dirichlet.sum(1, keepdim=True)
    mixed = soft & (torch.rand(b, generator=generator) < 0.5)
    weights[mixed] = dirichlet[mixed]
    images = torch.einsum("bk,bkchw->bchw", weights, triplets)
    sigma = _uniform(b, generator, 0, max_blur) * soft
    contrast = torch.where(soft, _uniform(b, generator, 0.4, 1), torch.ones(b))
    images = gaussian_blur(images, sigma) * contrast[:, None, None, None]
    images[none] = distractors(int(none.sum()), generator, max_blur)
    weights[none] = 1 / k
    return images, weights


def train_shape_classifier(seed=0, num_steps=600, batch_size=64, num_poses=3000, lr=4e-3, max_blur=1.0):
    """A :class:`ShapeClassifier` trained from ``seed`` (same seed, same network) and put in eval mode.

    ``num_poses`` random poses are rendered as all three shapes once; each of the
    ``num_steps`` Adam steps (learning rate ``lr``, decayed by a cosine to 0)
    draws ``batch_size`` of them and builds a :func:`training_batch`.
    """
    num_steps, batch_size = positive_int("num_steps", num_steps), positive_int("batch_size", batch_size)
    num_poses = positive_int("num_poses", num_poses)
    triplets = render_pose_triplets(num_poses, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):
        net = ShapeClassifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps)
    net.train()
    for _ in range(num_steps):
        index = torch.randint(num_poses, (batch_size,), generator=generator)
        images, target = training_batch(triplets[index], generator, max_blur)
        loss = F.cross_entropy(net(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval()


@functools.lru_cache(maxsize=4)
def shape_classifier(seed=0):
    """The default :func:`train_shape_classifier` of ``seed``, trained once per process."""
    return train_shape_classifier(seed)


def ground_truth_accuracy(classifier, num=3000, seed=12345):
    """The classifier's accuracy on ``num`` fresh binary renders of random factors."""
    factors = np.stack([np.random.default_rng(seed).integers(0, n, size=num) for n in FACTOR_SIZES], axis=1)
    images = torch.from_numpy(render(factors)).float()
    return shape_accuracy(images, torch.from_numpy(factors[:, 0]), classifier)


# ---------------------------------------------------------------------------
# Figures of pictures

@dataclass
class ShapeConfidence:
    """How sure the classifier is of the shape in ``num`` pictures.

    ``mean_max_prob``: mean over pictures of max_k p(k | picture); ``confident``:
    the fraction with max-probability above ``threshold``; ``shape_fractions``:
    the fraction of pictures labelled with each shape (``SHAPE_NAMES`` order).
    """

    mean_max_prob: float
    confident: float
    shape_fractions: list
    num: int
    threshold: float = CONFIDENT

    def as_dict(self):
        return {"mean_max_prob": self.mean_max_prob, "confident": self.confident,
                "shape_fractions": dict(zip(SHAPE_NAMES, self.shape_fractions)), "num": self.num,
                "threshold": self.threshold}


def shape_accuracy(images, shapes, classifier=None, by_shape=False):
    """The fraction of ``images`` ``[N, 1, 64, 64]`` the classifier labels with shape index ``shapes[n]``.

    ``by_shape``: also the accuracy over the images of each true shape, ``{name: fraction}``.
    """
    shapes = torch.as_tensor(shapes).reshape(-1).cpu()
    if shapes.shape[0] != images.shape[0]:
        raise ValueError(f"{shapes.shape[0]} shape labels for {images.shape[0]} images")
    if shapes.numel() and (shapes.min() < 0 or shapes.max() >= len(SHAPE_NAMES)):
        raise ValueError(f"shape labels must be indices 0..{len(SHAPE_NAMES) - 1} {SHAPE_NAMES}")
    correct = ((classifier or shape_classifier()).probabilities(images).argmax(-1) == shapes).float()
    accuracy = float(correct.mean())
    if not by_shape:
        return accuracy
    return accuracy, {name: float(correct[shapes == k].mean()) if (shapes == k).any() else math.nan
                      for k, name in enumerate(SHAPE_NAMES)}


def shape_confidence(images, classifier=None, threshold=CONFIDENT):
    """:class:`ShapeConfidence` of ``images`` ``[N, 1, 64, 64]``."""
    probs = (classifier or shape_classifier()).probabilities(images)
    top = probs.max(-1).values
    fractions = torch.bincount(probs.argmax(-1), minlength=len(SHAPE_NAMES)).float() / probs.shape[0]
    return ShapeConfidence(float(top.mean()), float((top > threshold).float().mean()), fractions.tolist(),
                           probs.shape[0], threshold)


def _shown_mean(trace, obs, like):
    """The mean of the observed site ``obs`` (a draw where its distribution has none) in the shape of ``like``."""
    if obs not in trace.nodes:
        raise ValueError(f"the model has no observed site {obs!r}")
    site = trace.nodes[obs]
    mean = distribution_mean(site["fn"])
    value = site["value"] if mean is None else mean.expand_as(site["value"])
    return value.reshape(like.shape)


@torch.no_grad()
def reconstructions(model, guide, x, obs="x", seed=0, **kwargs):
    """E[x' | z] at z ~ q(z|x), one per datum (as :func:`pyrovae.app.viz.reconstruction_means`)."""
    with seeded(seed), poutine.block(), evaluation_mode(model, guide):
        pt = trace_pair(model, guide, x, enumerate=False, **kwargs)
    return _shown_mean(pt.model, obs, x)


@torch.no_grad()
def prior_samples(model, like_x, obs="x", seed=0, **kwargs):
    """E[x | z] at z ~ p(z), one per datum of ``like_x`` (shapes only; as :func:`pyrovae.app.viz.sample_means`)."""
    with seeded(seed), poutine.block(), evaluation_mode(model, None):
        tr = trace_program(ResampleObserved([obs])(model), like_x, **kwargs)
    return _shown_mean(tr, obs, like_x)


def _in_batches(fn, x, batch_size, seed):
    return torch.cat([fn(x[s:s + batch_size], seed=seed + i).cpu()
                      for i, s in enumerate(range(0, x.shape[0], batch_size))])


def _images_and_shapes(split_or_images, labels):
    if isinstance(split_or_images, Split):
        images = split_or_images.data
        labels = split_or_images.labels if labels is None else labels
    else:
        images = split_or_images
    if labels is None:
        raise ValueError("give the true shapes: labels [N] (shape indices) or [N, 5] (shapes factors), or a Split "
                         "with labels")
    labels = torch.as_tensor(labels)
    return images, labels[:, 0] if labels.dim() == 2 else labels


def reconstruction_shape_accuracy(model, guide, split_or_images, labels=None, classifier=None, batch_size=500,
                                  seed=0, by_shape=False):
    """The fraction of images whose reconstruction (:func:`reconstructions`) the classifier labels with the true shape.

    ``split_or_images``: a :class:`~pyrovae.data.Split` of ``shapes`` (its labels
    are the factors, shape first) or images ``[N, 1, 64, 64]`` with ``labels``
    ``[N]`` (shape indices) or ``[N, 5]`` (factor indices). Chance is 1/3.
    ``by_shape``: also the accuracy per true shape (:func:`shape_accuracy`).
    """
    images, shapes = _images_and_shapes(split_or_images, labels)
    _check_images(images)
    device = _device_of(model, guide)
    recon = _in_batches(lambda x, seed: reconstructions(model, guide, x.to(device), seed=seed), images, batch_size,
                        seed)
    return shape_accuracy(recon, shapes, classifier, by_shape)


def prior_sample_confidence(model, like_x, classifier=None, batch_size=500, seed=0, threshold=CONFIDENT):
    """:class:`ShapeConfidence` of prior samples E[x | z], z ~ p(z), one per datum of ``like_x`` (shapes only)."""
    _check_images(like_x)
    device = _device_of(model, None)
    samples = _in_batches(lambda x, seed: prior_samples(model, x.to(device), seed=seed), like_x, batch_size, seed)
    return shape_confidence(samples, classifier, threshold)


def aggregate_posterior_confidence(model, guide, x, num=None, classifier=None, batch_size=500, seed=0,
                                   threshold=CONFIDENT):
    """:class:`ShapeConfidence` of E[x | z] for ``num`` (default N) draws z ~ q(z|x_n), n uniform over ``x``'s N images."""
    _check_images(x)
    num = x.shape[0] if num is None else positive_int("num", num)
    index = torch.randint(x.shape[0], (num,), generator=torch.Generator().manual_seed(seed))
    device = _device_of(model, guide)
    decoded = _in_batches(lambda b, seed: reconstructions(model, guide, b.to(device), seed=seed), x[index],
                          batch_size, seed)
    return shape_confidence(decoded, classifier, threshold)


def shape_summary(model, guide, split, num=1000, seed=0, classifier=None):
    """The figures for a run's ``summary.json``, on the first ``num`` images of a test ``split``.

    ``reconstruction_shape_accuracy`` (and ``..._by_shape``); ``prior_sample_confidence``
    and ``aggregate_posterior_confidence``: the fractions of confident pictures
    (:attr:`ShapeConfidence.confident`), with the details of each under
    ``prior_samples`` and ``aggregate_posterior_samples`` (:meth:`ShapeConfidence.as_dict`).
    """
    split = split.subset(num)
    accuracy, by_shape = reconstruction_shape_accuracy(model, guide, split, classifier=classifier, seed=seed,
                                                       by_shape=True)
    prior = prior_sample_confidence(model, split.data, classifier, seed=seed)
    aggregate = aggregate_posterior_confidence(model, guide, split.data, classifier=classifier, seed=seed)
    return {"reconstruction_shape_accuracy": accuracy, "reconstruction_shape_accuracy_by_shape": by_shape,
            "prior_sample_confidence": prior.confident, "aggregate_posterior_confidence": aggregate.confident,
            "prior_samples": prior.as_dict(), "aggregate_posterior_samples": aggregate.as_dict()}


def _device_of(model, guide):
    for m in (model, guide):
        if isinstance(m, nn.Module):
            for p in m.parameters():
                return p.device
    return torch.device("cpu")
