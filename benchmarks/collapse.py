"""Posterior collapse on binarized MNIST: a PixelCNN decoder with the plain ELBO, KL warm-up and free bits.

A decoder that can model x alone -- an autoregressive PixelCNN (van den Oord et al.
2016, arXiv 1606.05328) -- lets the ELBO's KL term push q(z|x) onto the prior:
the code carries nothing (Bowman et al. 2016, arXiv 1511.06349; Chen et al. 2017,
"Variational Lossy Autoencoder", arXiv 1611.02731). Two cures are tried. Rows
(``--rows``):

- ``mlp``: the MLP decoder (p(x|z) factorized over pixels) with the plain ELBO, the reference;
- ``pixelcnn``: the PixelCNN decoder with the plain ELBO;
- ``warmup``: the same with KL warm-up, the KL weight rising linearly from
  1/W to 1 over the first W = ``--warmup`` epochs (Bowman et al. 2016);
- ``freebits``: the same with free bits, each latent dimension's batch-averaged KL
  counted as at least ``--free-bits`` nats (Kingma et al. 2016, arXiv 1606.04934).

Every row has the same MLP encoder (``--hidden``, latent ``--latent-dim``), prior
N(0, I), seed, data, epochs, batch 100 and learning rate 1e-3; the PixelCNN
(:class:`pyrovae.nn.pixelcnn.PixelCNNLikelihood`, ``--layers`` gated layers of
``--channels`` maps, 5x5 kernels) is conditioned on a 32-d vector decoded from z
by an MLP. It is trained on the first ``--num-train`` images of Larochelle's
statically binarized MNIST (validation: the first 500 of the ``valid`` file), and
the final parameters are scored on the first ``--num-test`` test images:

- ``kl``: (1/N) sum_n KL(q(z|x_n) || p(z)) in nats per image (closed form);
- ``active_units``: dims with Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2015);
- ``mutual_information``: I_q[n; z] from ELBO surgery (Hoffman & Johnson 2016), at
  most log N, and ``marginal_kl`` = KL(q(z) || p(z)) (:func:`pyrovae.evaluate.diagnostics.elbo_surgery`);
- ``test_elbo``; ``nll``: -log p(x) by importance sampling with ``--iw-samples``
  draws on the first ``--num-nll`` test images (a PixelCNN pass per draw, so K is
  kept small; with a collapsed code q(z|x) = p(z) and any K is exact in expectation).

    python benchmarks/collapse.py --data-dir DIR [--epochs 8] [--warmup 6] [--num-train 3000] [--rows mlp,pixelcnn,warmup,freebits]

For a quick check: ``--epochs 1 --num-train 200 --num-test 50 --num-nll 5 --iw-samples 5``.
"""

import argparse
import json
import time

import pyro
import torch

from common import add_binarized_mnist_dir, environment, parse_rows
from pyrovae.data import load_dataset
from pyrovae.evaluate.diagnostics import active_units, elbo_surgery
from pyrovae.evaluate.likelihood import log_likelihood
from pyrovae.guides import GaussianGuide
from pyrovae.infer.elbo import ELBO
from pyrovae.infer.regularized import FreeBits
from pyrovae.infer.svi import SVIRun, evaluate_elbo
from pyrovae.models import VAE
from pyrovae.nn.likelihoods import Bernoulli
from pyrovae.nn.nets import MLPDecoder, MLPEncoder
from pyrovae.nn.pixelcnn import PixelCNNLikelihood
from pyrovae.nn.priors import StandardNormal

SHAPE, CONTEXT = (1, 28, 28), 32
ROWS = ("mlp", "pixelcnn", "warmup", "freebits")
LABELS = {"mlp": "MLP decoder, ELBO", "pixelcnn": "PixelCNN decoder, ELBO", "warmup": "PixelCNN decoder, KL warm-up",
          "freebits": "PixelCNN decoder, free bits"}


def make_pair(name, args):
    torch.manual_seed(args.seed)
    encoder = MLPEncoder(SHAPE, args.latent_dim, args.hidden)
    if name == "mlp":
        decoder, likelihood = MLPDecoder(SHAPE, args.latent_dim, args.hidden), Bernoulli()
    else:
        decoder = MLPDecoder((CONTEXT,), args.latent_dim, args.hidden)
        likelihood = PixelCNNLikelihood(SHAPE, (CONTEXT,), channels=args.channels, layers=args.layers)
    return VAE(decoder, StandardNormal(args.latent_dim), likelihood), GaussianGuide(encoder)


def make_objective(name, args):
    if name == "warmup":
        return ELBO(warmup=args.warmup)
    if name == "freebits":
        return FreeBits(args.free_bits)
    return ELBO()


def run_row(name, data, args):
    pyro.clear_param_store()
    model, guide = make_pair(name, args)
    run = SVIRun(model, guide, data.train, data.val, make_objective(name, args), lr=1e-3, batch_size=100,
                 epochs=args.epochs, seed=args.seed, progress=False)
    start = time.perf_counter()
    history = run.fit()
    train_s = time.perf_counter() - start
    test = data.test
    start = time.perf_counter()
    with run.param_scope():
        surgery = elbo_surgery(model, guide, test, num_points=len(test), num_samples=1, seed=args.seed)
        au = active_units(model, guide, test, seed=args.seed)
        elbo = evaluate_elbo(model, guide, test, seed=args.seed)
        ll = log_likelihood(model, guide, test.subset(args.num_nll), num_samples=args.iw_samples, seed=args.seed)
    eval_s = time.perf_counter() - start
    return {"row": name, "label": LABELS[name], "epochs": run.epoch, "kl": surgery.avg_kl,
            "active_units": au.counts["z"], "latent_dim": args.latent_dim,
            "mutual_information": surgery.mutual_information,
            "mutual_information_std_error": surgery.std_errors["mutual_information"], "log_n": surgery.log_n,
            "marginal_kl": surgery.marginal_kl, "marginal_kl_std_error": surgery.std_errors["marginal_kl"],
            "test_elbo": elbo, "nll": ll.nll, "nll_std_error": ll.nll_std_error,
            "nll_data_std_error": ll.nll_data_std_error, "khat_above_0.7": ll.khat_above,
            "val_elbo_per_epoch": [h.get("val_elbo") for h in history],
            "train_seconds": train_s, "eval_seconds": eval_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_binarized_mnist_dir(parser)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows among {list(ROWS)}")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per row (the same for every row)")
    parser.add_argument("--warmup", type=int, default=6, help="KL warm-up epochs (warmup row)")
    parser.add_argument("--free-bits", type=float, default=0.5, help="nats per latent dimension (freebits row)")
    parser.add_argument("--num-train", type=int, default=3000, help="training images (the first of the file)")
    parser.add_argument("--num-test", type=int, default=500, help="test images for KL, active units, MI, ELBO")
    parser.add_argument("--num-nll", type=int, default=100, help="test images for the NLL")
    parser.add_argument("--iw-samples", type=int, default=100, help="importance samples per image for the NLL")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--hidden", type=int, nargs="+", default=[300])
    parser.add_argument("--layers", type=int, default=5, help="gated PixelCNN layers")
    parser.add_argument("--channels", type=int, default=16, help="PixelCNN feature maps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give the binarized MNIST folder with --data-dir DIR or $BINARIZED_MNIST_DIR")
    names = parse_rows(parser, args.rows, ROWS)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    data = load_dataset("binarized-mnist", args.data_dir, num_train=args.num_train, val_size=500,
                        num_test=args.num_test)
    rows = []
    for name in names:
        rows.append(run_row(name, data, args))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "collapse", "dataset": "binarized-mnist", "epochs": args.epochs, "warmup": args.warmup,
              "free_bits": args.free_bits, "num_train": len(data.train), "num_test": len(data.test),
              "num_nll": args.num_nll, "iw_samples": args.iw_samples, "latent_dim": args.latent_dim,
              "hidden": args.hidden, "layers": args.layers, "channels": args.channels,
              "network": f"MLP {'-'.join(map(str, args.hidden))} ReLU encoder; decoders: the MLP, or an MLP to a 32-d "
                         f"context and a gated PixelCNN ({args.layers} layers, {args.channels} maps, 5x5); batch 100, "
                         "lr 1e-3, final parameters scored",
              "seed": args.seed, "rows": rows, "wall_seconds": time.perf_counter() - start_wall,
              "cpu_seconds": time.process_time() - start_cpu, **environment()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"\n| decoder, objective | KL (nats/image) | active units (of {args.latent_dim}) | I[n; z] (max "
          f"{rows[0]['log_n']:.2f}) | test ELBO | NLL (K={args.iw_samples}, {args.num_nll} images) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['kl']:.2f} | {r['active_units']} | {r['mutual_information']:.2f} +- "
              f"{r['mutual_information_std_error']:.2f} | {r['test_elbo']:.2f} | {r['nll']:.2f} +- "
              f"{r['nll_std_error']:.2f} |")


if __name__ == "__main__":
    main()
