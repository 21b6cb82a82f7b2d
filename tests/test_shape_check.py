"""The shape classifier of pyrovae.evaluate.shape_check and the figures it reads from a pair."""

import math
import os

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.app import viz
from pyrovae.app.build import build_pair
from pyrovae.app.config import make_config
from pyrovae.data import ShapesFactors, Split
from pyrovae.data.shapes import IMAGE_SIZE, factor_values
from pyrovae.evaluate import shape_check as sc

@pytest.fixture(scope="module")
def classifier():
    """The judge the main job uses: the default classifier of seed 0."""
    return sc.shape_classifier(0)


def shapes_data(num, seed):
    factors, images = ShapesFactors().sample(num, np.random.default_rng(seed))
    return images, torch.from_numpy(factors)


def binomial_tolerance(p, n, sds=4.0):
    return sds * math.sqrt(p * (1 - p) / n)


# -- pairs with known pictures -------------------------------------------------

def identity_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Delta(x.reshape(x.shape[0], -1), event_dim=1))


def identity_model(x):
    """p(x | z) = Bernoulli(z): its mean at z = x is x itself, so a reconstruction is the input."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.5, 0.2).expand([x[0].numel()]).to_event(1))
        pyro.sample("x", dist.Bernoulli(probs=z.clamp(0, 1).reshape(x.shape), validate_args=False).to_event(3), obs=x)


def bank_model(bank):
    """A model whose prior samples are the images of ``bank``: z ~ U(0, 1) picks one."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            u = pyro.sample("u", dist.Uniform(0.0, 1.0))
            pick = (u * bank.shape[0]).long().clamp(max=bank.shape[0] - 1)
            pyro.sample("x", dist.Bernoulli(probs=bank[pick], validate_args=False).to_event(3), obs=x)
    return model


def round_blobs(factors, blur):
    """Discs of radius 9 * scale at each shape's centre: they depend on the pose, never on the shape."""
    values = factor_values()
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    span = IMAGE_SIZE - 28.0
    cx = torch.tensor(14.0 + span * values[3][factors[:, 3]], dtype=torch.float32)[:, None, None]
    cy = torch.tensor(14.0 + span * values[4][factors[:, 4]], dtype=torch.float32)[:, None, None]
    radius = torch.tensor(9.0 * values[1][factors[:, 1]], dtype=torch.float32)[:, None, None]
    inside = ((grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2 <= radius ** 2).float()
    return sc.gaussian_blur(inside.unsqueeze(1), torch.full((len(factors),), float(blur)))


# -- the classifier ------------------------------------------------------------

def test_the_classifier_is_accurate_on_fresh_ground_truth(classifier):
    # 3000 renders the classifier never saw (another seed than its training poses)
    accuracy = sc.ground_truth_accuracy(classifier, num=3000, seed=777)
    assert accuracy >= 0.98


def test_the_default_classifier_is_trained_once_per_process(classifier):
    assert sc.shape_classifier(0) is classifier


def test_binary_renders_are_confident(classifier):
    images, _ = shapes_data(2000, 19)
    assert sc.shape_confidence(images, classifier).confident >= 0.98  # the ceiling of prior_sample_confidence


def test_training_is_deterministic_for_a_seed():
    a, b = (sc.train_shape_classifier(seed=3, num_steps=3, num_poses=64) for _ in range(2))
    c = sc.train_shape_classifier(seed=4, num_steps=3, num_poses=64)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_the_centre_crop_removes_the_position():
    factors = ShapesFactors().sample_factors(4, np.random.default_rng(0))
    factors[:, 3:] = 16  # near the centre: the shifted shapes stay inside the image
    images = ShapesFactors().sample_observations_from_factors(factors)
    shifted = torch.roll(images, shifts=(3, -5), dims=(-2, -1))  # the shapes stay inside the image
    assert torch.allclose(sc.centre_crop(images), sc.centre_crop(shifted), atol=1e-5)
    assert sc.centre_crop(images).shape == (4, 1, 32, 32)
    assert torch.equal(sc.centre_crop(torch.zeros(2, 1, 64, 64)), torch.zeros(2, 1, 32, 32))


def test_ground_truth_through_the_identity_pair_scores_all(classifier):
    images, factors = shapes_data(600, 11)
    recon = sc.reconstructions(identity_model, identity_guide, images)
    assert torch.equal(recon, images)
    accuracy, by_shape = sc.reconstruction_shape_accuracy(identity_model, identity_guide, Split(images, factors),
                                                          classifier=classifier, by_shape=True)
    assert accuracy >= 0.98 and min(by_shape.values()) >= 0.96
    # images with labels [N] or [N, 5] give the same figure
    assert sc.reconstruction_shape_accuracy(identity_model, identity_guide, images, factors[:, 0],
                                            classifier=classifier) == accuracy
    confidence = sc.aggregate_posterior_confidence(identity_model, identity_guide, images, num=300,
                                                   classifier=classifier)
    assert confidence.num == 300 and confidence.confident >= 0.95 and confidence.mean_max_prob >= 0.95


@pytest.mark.parametrize("blur", [0.0, 2.0])
def test_round_blobs_score_chance(classifier, blur):
    # a disc drawn from the pose alone carries no shape, so any classifier is right 1/3 of the time in
    # expectation: the number right is a sum of N independent Bernoulli(1/3) given the poses
    images, factors = shapes_data(900, 12)
    blobs = round_blobs(factors.numpy(), blur)
    accuracy = sc.shape_accuracy(blobs, factors[:, 0], classifier)
    assert abs(accuracy - 1 / 3) < binomial_tolerance(1 / 3, 900)
    assert sc.shape_accuracy(images, factors[:, 0], classifier) >= 0.98


def test_prior_samples_of_true_shapes_are_confident_and_superpositions_are_not(classifier):
    images, _ = shapes_data(200, 13)
    like = torch.zeros(300, 1, 64, 64)
    sharp = sc.prior_sample_confidence(bank_model(images), like, classifier)
    assert sharp.num == 300 and sharp.confident >= 0.95 and sharp.mean_max_prob >= 0.95
    assert sum(sharp.shape_fractions) == pytest.approx(1.0)
    even = sc.render_pose_triplets(200, np.random.default_rng(14)).mean(1)  # each pose as 1/3 of every shape
    blurred = sc.prior_sample_confidence(bank_model(even), like, classifier)
    assert blurred.confident <= 0.05 and blurred.mean_max_prob < 0.7
    noise = sc.shape_confidence(sc.distractors(200, torch.Generator().manual_seed(15)), classifier)
    assert noise.confident <= 0.05


def test_the_pictures_are_those_of_viz():
    cfg = make_config(hidden=[32], latent_dim=4, out=os.devnull)
    cfg["image_shape"] = [1, 64, 64]
    model, guide, _ = build_pair(cfg)
    images, _ = shapes_data(8, 16)
    torch.manual_seed(5)
    assert torch.equal(sc.prior_samples(model, images, seed=5), viz.sample_means(model, images))
    torch.manual_seed(6)
    assert torch.equal(sc.reconstructions(model, guide, images, seed=6), viz.reconstruction_means(model, guide, images))


def test_shape_summary_holds_the_figures(classifier):
    images, factors = shapes_data(60, 17)
    summary = sc.shape_summary(identity_model, identity_guide, Split(images, factors), num=50, classifier=classifier)
    assert set(summary) == {"reconstruction_shape_accuracy", "reconstruction_shape_accuracy_by_shape",
                            "prior_sample_confidence", "aggregate_posterior_confidence", "prior_samples",
                            "aggregate_posterior_samples"}
    assert summary["aggregate_posterior_samples"]["num"] == 50
    assert summary["aggregate_posterior_confidence"] == summary["aggregate_posterior_samples"]["confident"] >= 0.95
    assert summary["reconstruction_shape_accuracy"] >= 0.95
    assert set(summary["reconstruction_shape_accuracy_by_shape"]) == {"square", "ellipse", "heart"}


def test_bad_input_is_named(classifier):
    with pytest.raises(ValueError, match=r"\[N, 1, 64, 64\]"):
        classifier.probabilities(torch.zeros(3, 1, 28, 28))
    images, factors = shapes_data(4, 18)
    with pytest.raises(ValueError, match="true shapes"):
        sc.reconstruction_shape_accuracy(identity_model, identity_guide, images, classifier=classifier)
    with pytest.raises(ValueError, match="3 shape labels for 4 images"):
        sc.shape_accuracy(images, factors[:3, 0], classifier)
    with pytest.raises(ValueError, match="indices 0..2"):
        sc.shape_accuracy(images, torch.full((4,), 3), classifier)
    with pytest.raises(ValueError, match="num_steps"):
        sc.train_shape_classifier(num_steps=0)
