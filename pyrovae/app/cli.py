"""``pyrovae`` command line: ``train``, ``evaluate``, ``ppc``, ``metrics`` and ``report``.

``pyrovae train`` with no arguments trains a VAE on the built-in ``shapes``
dataset on the CPU and writes a run folder; ``pyrovae evaluate RUN`` prints the
test bound of a run folder.
"""

import argparse
import json
import os
import sys

from pyrovae.infer.checkpoint import write_json
from pyrovae.data import BINARIZE, DATASETS
from pyrovae.nn.likelihoods import LIKELIHOODS
from pyrovae.nn.nets import ACTIVATIONS
from pyrovae.nn.priors import PRIORS, PSEUDO_INPUT_INITS
from pyrovae.infer.step import MODES


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model/guide pair with SVI and write a run folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="vae",
                   help="built-in model (vae; hvae: the VampPrior paper's top-down L-level HVAE; stacked: the "
                        "IWAE paper's bottom-up L-level model) or path/to/file.py:Name")
    p.add_argument("--guide", default="gaussian", help="built-in guide name (gaussian) or path/to/file.py:Name")
    p.add_argument("--dataset", default="shapes", choices=DATASETS)
    p.add_argument("--data-dir", default=None,
                   help="folder with the dataset's files (MNIST / Fashion-MNIST IDX; dSprites: its .npz or its folder)")
    p.add_argument("--download", action="store_true", help="fetch MNIST / Fashion-MNIST with torchvision (online)")
    p.add_argument("--binarize", default=None, choices=[b for b in BINARIZE if b],
                   help="binarization of grey images (default: dynamic for a Bernoulli likelihood)")
    p.add_argument("--num-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--num-test", type=int, default=None, help="use only this many test images")
    p.add_argument("--val-size", type=int, default=None, help="validation images (shapes: 1000, MNIST: 10000)")
    p.add_argument("--arch", default="mlp", choices=["mlp", "conv"], help="encoder/decoder networks")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes")
    p.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS), help="hidden-layer nonlinearity")
    p.add_argument("--latent-dim", type=int, nargs="+", default=[10],
                   help="latent size, or one per level for hierarchical models (z1 first)")
    p.add_argument("--levels", type=int, default=None, help="stochastic levels of hvae/stacked (default 2)")
    p.add_argument("--prior", default="standard", choices=sorted(PRIORS),
                   help="p(z) of the top level: standard normal, mixture of Gaussians (mog) or VampPrior (vamp)")
    p.add_argument("--components", type=int, default=None,
                   help="mixture components (mog, default 10) or pseudo-inputs (vamp, default 500)")
    p.add_argument("--prior-init", default="random", choices=PSEUDO_INPUT_INITS,
                   help="VampPrior pseudo-inputs: random N(0.05, 0.01) or drawn from training images")
    p.add_argument("--warmup", type=int, default=0,
                   help="KL warm-up: the KL weight grows linearly from 0 to 1 over this many epochs; early "
                        "stopping ignores them")
    p.add_argument("--likelihood", default="bernoulli", choices=sorted(LIKELIHOODS))
    p.add_argument("--no-analytic-kl", dest="analytic_kl", action="store_false",
                   help="estimate the KL term by Monte Carlo even where it has a closed form")
    p.add_argument("--objective", default="elbo", choices=["elbo", "iwae"],
                   help="training bound: the ELBO or the importance-weighted bound with --particles K")
    p.add_argument("--particles", type=int, default=1, help="Monte Carlo draws (IWAE: K) per datapoint")
    p.add_argument("--dreg", action="store_true", help="IWAE: doubly reparameterized guide gradients")
    p.add_argument("--beta", type=float, default=None,
                   help="beta-VAE: reconstruction - beta * KL (Higgins et al. 2017), e.g. 4")
    p.add_argument("--capacity", type=float, default=None,
                   help="controlled capacity: reconstruction - gamma |KL - C|, C rising linearly to this many "
                        "nats (Burgess et al. 2018), e.g. 25; needs --capacity-steps")
    p.add_argument("--capacity-steps", type=int, default=None, help="SVI steps over which C rises to --capacity")
    p.add_argument("--gamma", type=float, default=None, help="controlled capacity: weight of |KL - C| (default 1000)")
    p.add_argument("--free-bits", type=float, default=None,
                   help="free bits: the KL of each latent dimension counts as at least this many nats "
                        "(Kingma et al. 2016), e.g. 0.5")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=None, help="clip the gradient norm to this value")
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--step-mode", default="graph", choices=MODES, help="how SVI steps run (see pyrovae.infer.step)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def cmd_train(args):
    from pyrovae.app.runs import make_config, make_objective, train

    keys = ("model", "guide", "dataset", "data_dir", "download", "binarize", "num_train", "num_test", "val_size",
            "arch", "hidden", "activation", "latent_dim", "levels", "prior", "components", "prior_init", "warmup", "likelihood",
            "objective", "analytic_kl", "particles", "dreg", "beta", "capacity", "capacity_steps", "gamma",
            "free_bits", "epochs", "batch_size", "lr", "clip_norm", "patience", "seed", "device", "step_mode", "out")
    cfg = make_config(**{k: getattr(args, k) for k in keys})
    if len(cfg["latent_dim"]) == 1:
        cfg["latent_dim"] = cfg["latent_dim"][0]
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out RUN_FOLDER")
    make_objective(cfg)  # contradictory objective flags fail before any data is loaded
    summary = train(cfg, resume=args.resume, progress=args.progress)
    print(f"run folder: {cfg['out']}")
    print(f"test ELBO: {summary['test_elbo']:.2f} nats per image ({summary['num_test']} test images)")
    print(f"epochs: {summary['epochs_run']}, training wall time: {summary['train_seconds']:.1f} s")


def cmd_evaluate(args):
    from pyrovae.app.runs import load_run
    from pyrovae.infer.svi import evaluate_elbo

    cfg, model, guide, data = load_run(args.run)
    test = data.test if args.num_test is None else _first(data.test, args.num_test)
    elbo = evaluate_elbo(model, guide, test, device=cfg["device"], seed=cfg["seed"])
    result = {"test_elbo": elbo, "num_test": len(test), "nll": None, "nll_std_error": None,
              "iw_samples": args.iw_samples}
    if args.iw_samples:
        from pyrovae.evaluate.likelihood import log_likelihood

        ll = log_likelihood(model, guide, test, num_samples=args.iw_samples, device=cfg["device"], seed=cfg["seed"])
        result.update(nll=ll.nll, nll_std_error=ll.nll_std_error)
    from pyrovae.evaluate.diagnostics import active_units, elbo_surgery

    au = active_units(model, guide, test, threshold=args.au_threshold, device=cfg["device"], seed=cfg["seed"])
    result["active_units"] = dict(au.counts)
    surgery = None
    if args.surgery_points:
        surgery = elbo_surgery(model, guide, test, num_points=args.surgery_points, device=cfg["device"],
                               seed=cfg["seed"])
        result["surgery"] = surgery.to_dict()
    write_json(os.path.join(args.run, "evaluation.json"), result)
    if args.json:
        print(json.dumps(result))
        return
    print(f"test ELBO: {elbo:.2f} nats per image ({len(test)} test images)")
    if args.iw_samples:
        print(f"test NLL (K={args.iw_samples} importance samples): {result['nll']:.2f} +- "
              f"{result['nll_std_error']:.2f} nats per image")
    print(f"active units (A_u > {args.au_threshold:g}): {au.describe()}")
    if surgery is not None:
        print(f"ELBO surgery (Hoffman & Johnson 2016) over N = {surgery.num_data} test images, "
              f"{surgery.num_points} points:")
        print(f"  {'ELBO':>9} {'avg KL':>9} {'mutual information':>19} {'marginal KL':>12} {'log N':>7}")
        print(f"  {elbo:9.2f} {surgery.avg_kl:9.2f} {surgery.mutual_information:19.2f} {surgery.marginal_kl:12.2f} "
              f"{surgery.log_n:7.2f}")


def _first(split, n):
    """The first ``n`` data of a split, dynamic binarization drawn once."""
    return split.fixed(0).subset(n)


def cmd_ppc(args):
    from pyrovae.evaluate.ppc import run_ppc
    from pyrovae.app.runs import load_run

    cfg, model, guide, data = load_run(args.run)
    test = _first(data.test, args.num_data)
    folder = args.out or os.path.join(args.run, "ppc")
    result = run_ppc(model, guide, test, num_samples=args.num_samples, folder=folder, obs_site=args.obs_site,
                     seed=cfg["seed"])
    summary = result["summary"]
    write_json(os.path.join(folder, "summary.json"), {**summary, "num_data": result["num_data"],
                                                      "num_samples": args.num_samples, "obs_site": args.obs_site})
    if args.json:
        print(json.dumps(summary))
        return
    print(f"posterior predictive checks: {args.num_data} test images, {args.num_samples} draws each")
    for name, p in summary["p_value"].items():
        print(f"  {name:<20} p = {p:.3f}")
    for name, frac in summary["extreme_fraction"].items():
        print(f"  {name:<20} extreme p-values (alpha {summary['alpha']}): {frac:.3f}")
    print(f"plots in {folder}")


def cmd_metrics(args):
    import numpy as np

    from pyrovae.data import GROUND_TRUTH, ground_truth
    from pyrovae.evaluate.disentangle import compute_all, mean_representation
    from pyrovae.app.runs import load_run

    cfg, model, guide, data = load_run(args.run)
    name = args.dataset or cfg["dataset"]
    if name not in GROUND_TRUTH:
        raise ValueError(f"disentanglement metrics need ground-truth factors; run {args.run} was trained on "
                         f"{cfg['dataset']!r}: pass --dataset {' or '.join(GROUND_TRUTH)}")
    truth = ground_truth(name, args.data_dir or (cfg["data_dir"] if name == cfg["dataset"] else None))
    if tuple(truth.image_shape) != tuple(data.image_shape):
        raise ValueError(f"{name} images have shape {list(truth.image_shape)} but run {args.run} was trained on "
                         f"images of shape {list(data.image_shape)}")
    rep = mean_representation(guide, sites=args.site, device=cfg["device"])
    n = args.num_points
    scores = compute_all(rep, truth, np.random.default_rng(args.seed), num_train=n, num_eval=n // 2,
                         num_variance_estimate=n, n_estimators=args.trees)
    settings = {"dataset": name, "num_points": n, "trees": args.trees, "seed": args.seed, "sites": args.site}
    write_json(os.path.join(args.run, "disentanglement.json"), {**scores, "settings": settings})  # for the report
    if args.json:
        print(json.dumps(scores))
        return
    for metric, values in scores.items():
        shown = ", ".join(f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, float))
        print(f"{metric:<24} {shown}")


def cmd_report(args):
    from pyrovae.app.report import write_report

    print(f"report: {write_report(args.run, out=args.out)}")


def build_parser():
    parser = argparse.ArgumentParser(prog="pyrovae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub).set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="evaluate a trained run folder")
    ev.add_argument("run", help="run folder written by pyrovae train")
    ev.add_argument("--iw-samples", type=int, default=0,
                    help="also estimate log p(x) by importance sampling with this many samples (e.g. 5000)")
    ev.add_argument("--num-test", type=int, default=None, help="evaluate on the first N test images only")
    ev.add_argument("--au-threshold", type=float, default=0.01,
                    help="a latent dim is active when Cov_x(E_q[u|x]) exceeds this (Burda et al. 2015)")
    ev.add_argument("--surgery-points", type=int, default=1000,
                    help="ELBO surgery: draws from the aggregate posterior for MI and marginal KL (0: skip)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_evaluate)
    pp = sub.add_parser("ppc", help="posterior predictive checks of a run folder (p-values and plots)")
    pp.add_argument("run")
    pp.add_argument("--num-data", type=int, default=200, help="test images to check")
    pp.add_argument("--num-samples", type=int, default=100, help="posterior predictive draws per image")
    pp.add_argument("--obs-site", default="x", help="the model's observed site")
    pp.add_argument("--out", default=None, help="folder for the plots (default RUN/ppc)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_ppc)
    me = sub.add_parser("metrics", help="disentanglement scores of a run on a dataset with ground-truth factors")
    me.add_argument("run")
    me.add_argument("--dataset", default=None, choices=["shapes", "dsprites"],
                    help="ground-truth factors to score against (default: the run's dataset)")
    me.add_argument("--data-dir", default=None, help="dsprites: the .npz file or its folder (default: the run's)")
    me.add_argument("--num-points", type=int, default=10_000, help="training points per metric (eval: half)")
    me.add_argument("--trees", type=int, default=100, help="gradient-boosted trees in DCI")
    me.add_argument("--site", nargs="+", default=None, metavar="NAME",
                    help="latent site(s) whose guide means form the code (default: every latent site, in the "
                         "guide's order, each drawn at its mean)")
    me.add_argument("--seed", type=int, default=0)
    me.add_argument("--json", action="store_true")
    me.set_defaults(func=cmd_metrics)
    rp = sub.add_parser("report", help="write a run's self-contained report.html (config, metrics, pictures, PPC)")
    rp.add_argument("run")
    rp.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    rp.set_defaults(func=cmd_report)
    return parser


def main(argv=None):
    """Entry point of the ``pyrovae`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
