"""``pyrovae`` command line: ``train``, ``evaluate``, ``ppc``, ``metrics`` and ``report``.

``pyrovae train`` with no arguments trains a VAE on the built-in ``shapes``
dataset on the CPU and writes a run folder; the other commands read a run
folder. A mistake in the input -- an option, a file, a run folder, a pair -- is
one line on stderr and exit status 2 (a diverged training run: 3); ``--debug``
(or ``PYROVAE_DEBUG=1``) shows the traceback instead.

Under ``torchrun`` (``torchrun --nproc-per-node=N -m pyrovae train ...``) the
commands run data-parallel (:mod:`pyrovae.infer.distributed`): the ranks share
the work (``report`` leaves it to rank 0), rank 0 alone writes files and
prints, and an error is printed once.
"""

import argparse
import json
import os
import sys

from pyrovae.app.config import ConfigError, add_arguments, make_config
from pyrovae.data import GROUND_TRUTH
from pyrovae.infer import distributed

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, ConfigError, OSError)


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model/guide pair with SVI and write a run folder",
                       description="Train a model/guide pair with SVI and write a run folder.")
    add_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (options given must match the run's)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def _say_main_job_defaults(cfg):
    """Name the main job's defaults a run of the vae on shapes takes (they differ from the options' own)."""
    from pyrovae.app.config import BY_NAME, MAIN_JOB, is_main_job

    taken = {k: cfg[k] for k in MAIN_JOB if k not in cfg["given"] and cfg[k] == MAIN_JOB[k]}
    if is_main_job(cfg) and taken and distributed.current().is_main:
        shown = ", ".join(f"{BY_NAME[k].cli_flag} {v:g}" for k, v in taken.items())
        print(f"the vae on shapes takes the main job's defaults (options given win): {shown}", flush=True)


def cmd_train(args):
    from pyrovae.app.config import OPTIONS
    from pyrovae.app.runs import make_objective, train

    given = {o.name: getattr(args, o.name) for o in OPTIONS}
    if args.resume and given["out"] is None:
        raise ConfigError("--resume needs --out RUN_FOLDER")
    cfg = make_config(given)
    if not args.resume:
        make_objective(cfg)  # contradictory objective flags fail before any data is loaded
        _say_main_job_defaults(cfg)
    summary = train(cfg, resume=args.resume, progress=args.progress)
    if not distributed.current().is_main:
        return
    print(f"run folder: {cfg['out']}")
    print(f"test ELBO: {summary['test_elbo']:.2f} nats per datum ({summary['num_test']} test data)")
    print(f"epochs: {summary['epochs_run']}, training wall time: {summary['train_seconds']:.1f} s")
    for name, why in summary.get("pictures_skipped", {}).items():
        print(f"no {name}: {why}")
    for key, label in (("reconstruction_shape_accuracy", "reconstructions with the test image's shape"),
                       ("prior_sample_confidence", "prior samples showing one shape (p > 0.9)"),
                       ("aggregate_posterior_confidence", "aggregate-posterior samples showing one shape")):
        if summary.get(key) is not None:
            print(f"{label}: {100 * summary[key]:.1f}%")
    if "shape_check_skipped" in summary:
        print(f"no shape check: {summary['shape_check_skipped']}")


def cmd_evaluate(args):
    from pyrovae.app.runs import load_run
    from pyrovae.evaluate.diagnostics import active_units, elbo_surgery
    from pyrovae.infer.checkpoint import write_json
    from pyrovae.infer.svi import evaluate_elbo

    run = load_run(args.run)
    cfg, test = run.cfg, _first(run.data.test, args.num_test)
    seed, device = cfg.get("seed", 0), run.device
    result = {"test_elbo": None, "num_test": len(test), "nll": None, "nll_std_error": None,
              "iw_samples": args.iw_samples}
    with run.scope():
        elbo = evaluate_elbo(run.model, run.guide, test, device=device, seed=seed)
        result["test_elbo"] = elbo
        if args.iw_samples:
            from pyrovae.evaluate.likelihood import log_likelihood

            ll = log_likelihood(run.model, run.guide, test, num_samples=args.iw_samples, chunk_size=args.chunk_size,
                                batch_size=args.batch_size, device=device, seed=seed, memory_mb=args.memory_mb,
                                progress=args.progress)
            result.update(ll.to_dict())
        au = active_units(run.model, run.guide, test, threshold=args.au_threshold, device=device, seed=seed)
        result["active_units"] = dict(au.counts)
        if au.discrete:
            result["discrete_sites"] = au.discrete
        surgery = None
        if args.surgery_points:
            surgery = elbo_surgery(run.model, run.guide, test, num_points=args.surgery_points, device=device,
                                   seed=seed)
            result["surgery"] = surgery.to_dict()
    world = distributed.current()
    world.on_main(lambda: write_json(os.path.join(args.run, "evaluation.json"), result))
    if not world.is_main:
        return
    if args.json:
        print(json.dumps(result))
        return
    print(f"test ELBO: {elbo:.2f} nats per datum ({len(test)} test data)")
    if args.iw_samples:
        print(f"test NLL (K={args.iw_samples} importance samples): {result['nll']:.2f} +- "
              f"{result['nll_std_error']:.2f} nats per datum; Pareto k-hat > 0.7 for "
              f"{100 * result['khat_above_0.7']:.1f}% of the data" + (
                  " (their error bars are not to be trusted)" if result["khat_above_0.7"] > 0 else ""))
    print(f"active units (A_u > {args.au_threshold:g}): {au.describe()}")
    if surgery is not None:
        print(f"ELBO surgery (Hoffman & Johnson 2016) over N = {surgery.num_data} test data, "
              f"{surgery.num_points} points:")
        print(f"  {'ELBO':>9} {'avg KL':>9} {'mutual information':>19} {'marginal KL':>12} {'log N':>7}")
        print(f"  {elbo:9.2f} {surgery.avg_kl:9.2f} {surgery.mutual_information:19.2f} {surgery.marginal_kl:12.2f} "
              f"{surgery.log_n:7.2f}")


def _first(split, n):
    """The first ``n`` data of a split (all when None), dynamic binarization drawn once."""
    return split.fixed(0) if n is None else split.fixed(0).subset(n)


def cmd_ppc(args):
    from pyrovae.app.runs import load_run
    from pyrovae.evaluate.ppc import run_ppc
    from pyrovae.infer.checkpoint import write_json

    run = load_run(args.run)
    test = _first(run.data.test, args.num_data)
    folder = args.out or os.path.join(args.run, "ppc")
    world = distributed.current()
    world.on_main(lambda: os.makedirs(folder, exist_ok=True))
    with run.scope():
        result = run_ppc(run.model, run.guide, test, num_samples=args.num_samples, folder=folder,
                         obs_site=args.obs_site, seed=run.cfg.get("seed", 0))
    summary = result["summary"]
    world.on_main(lambda: write_json(os.path.join(folder, "summary.json"), {
        **summary, "num_data": result["num_data"], "num_samples": args.num_samples, "obs_site": args.obs_site}))
    if not world.is_main:
        return
    if args.json:
        print(json.dumps(summary))
        return
    print(f"posterior predictive checks: {result['num_data']} test data, {args.num_samples} draws each")
    for name, p in summary["p_value"].items():
        print(f"  {name:<20} p = {p:.3f}")
    for name, frac in summary["extreme_fraction"].items():
        print(f"  {name:<20} extreme p-values (alpha {summary['alpha']}): {frac:.3f}")
    print(f"plots in {folder}")


def cmd_metrics(args):
    import numpy as np

    from pyrovae.app.runs import load_run
    from pyrovae.data import ground_truth
    from pyrovae.evaluate.disentangle import compute_all, mean_representation
    from pyrovae.infer.checkpoint import write_json

    run = load_run(args.run)
    cfg = run.cfg
    name = args.dataset or cfg["dataset"]
    if name not in GROUND_TRUTH:
        raise ValueError(f"disentanglement metrics need ground-truth factors; run {args.run} was trained on "
                         f"{cfg['dataset']!r}: pass --dataset {' or '.join(GROUND_TRUTH)}")
    truth = ground_truth(name, args.data_dir or (cfg.get("data_dir") if name == cfg["dataset"] else None))
    if tuple(truth.image_shape) != tuple(run.data.event_shape):
        raise ValueError(f"{name} images have shape {list(truth.image_shape)} but run {args.run} was trained on "
                         f"data of shape {list(run.data.event_shape)}")
    n = args.num_points
    with run.scope():
        rep = mean_representation(run.guide, sites=args.site, device=run.device)
        scores = compute_all(rep, truth, np.random.default_rng(args.seed), num_train=n, num_eval=n // 2,
                             num_variance_estimate=n, n_estimators=args.trees)
    settings = {"dataset": name, "num_points": n, "trees": args.trees, "seed": args.seed, "sites": args.site}
    world = distributed.current()
    world.on_main(lambda: write_json(os.path.join(args.run, "disentanglement.json"),
                                     {**scores, "settings": settings}))  # for the report
    if not world.is_main:
        return
    if args.json:
        print(json.dumps(scores))
        return
    for metric, values in scores.items():
        shown = ", ".join(f"{k}={v:.3f}" for k, v in values.items() if isinstance(v, float))
        print(f"{metric:<24} {shown}")


def cmd_report(args):
    from pyrovae.app.report import write_report
    from pyrovae.app.runs import load_run

    run = load_run(args.run) if args.pictures else None

    def write():
        with distributed.local():  # rank 0 draws the missing pictures alone
            return write_report(args.run, out=args.out, run=run, pictures=args.pictures)

    path = distributed.current().on_main(write)
    if distributed.current().is_main:
        print(f"report: {path}")


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _nonnegative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="pyrovae", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or PYROVAE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub).set_defaults(func=cmd_train)
    ev = sub.add_parser("evaluate", help="evaluate a trained run folder")
    ev.add_argument("run", help="run folder written by pyrovae train")
    ev.add_argument("--iw-samples", type=_nonnegative, default=0,
                    help="also estimate log p(x) by importance sampling with this many samples (e.g. 5000)")
    ev.add_argument("--num-test", type=_positive, default=None, help="evaluate on the first N test data only")
    ev.add_argument("--batch-size", type=_positive, default=100, help="data per importance-sampling pass (default 100)")
    ev.add_argument("--chunk-size", type=_positive, default=None,
                    help="particles per pass (default: as many as --memory-mb allows)")
    ev.add_argument("--memory-mb", type=float, default=512,
                    help="memory budget of one pass's tensors, for the chunk size (default 512)")
    ev.add_argument("--au-threshold", type=float, default=0.01,
                    help="a latent dim is active when Cov_x(E_q[u|x]) exceeds this (Burda et al. 2015; default 0.01)")
    ev.add_argument("--surgery-points", type=_nonnegative, default=1000,
                    help="ELBO surgery: draws from the aggregate posterior for MI and marginal KL (0: skip; default 1000)")
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_evaluate)
    pp = sub.add_parser("ppc", help="posterior predictive checks of a run folder (p-values and plots)")
    pp.add_argument("run")
    pp.add_argument("--num-data", type=_positive, default=200, help="test data to check (default 200)")
    pp.add_argument("--num-samples", type=_positive, default=100, help="posterior predictive draws per datum (default 100)")
    pp.add_argument("--obs-site", default="x", help="the model's observed site (default x)")
    pp.add_argument("--out", default=None, help="folder for the plots (default RUN/ppc)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_ppc)
    me = sub.add_parser("metrics", help="disentanglement scores of a run on a dataset with ground-truth factors")
    me.add_argument("run")
    me.add_argument("--dataset", default=None, choices=GROUND_TRUTH,
                    help="ground-truth factors to score against (default: the run's dataset)")
    me.add_argument("--data-dir", default=None, help="dsprites: the .npz file or its folder (default: the run's)")
    me.add_argument("--num-points", type=_positive, default=10_000,
                    help="training points per metric; evaluation: half (default 10000)")
    me.add_argument("--trees", type=_positive, default=100, help="gradient-boosted trees in DCI (default 100)")
    me.add_argument("--site", nargs="+", default=None, metavar="NAME",
                    help="latent site(s) whose guide means form the code (default: every latent site, in the "
                         "guide's order, each drawn at its mean)")
    me.add_argument("--seed", type=_nonnegative, default=0)
    me.add_argument("--json", action="store_true")
    me.set_defaults(func=cmd_metrics)
    rp = sub.add_parser("report", help="write a run's self-contained report.html (config, metrics, pictures, PPC)")
    rp.add_argument("run")
    rp.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    rp.add_argument("--no-pictures", dest="pictures", action="store_false",
                    help="do not draw the pictures the run lacks (and do not load its pair)")
    rp.set_defaults(func=cmd_report)
    return parser


def main(argv=None):
    """Entry point of the ``pyrovae`` console script; returns the exit status."""
    from pyrovae.infer.svi import DivergenceError

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PYROVAE_DEBUG") == "1"
    world = distributed.current()
    try:
        world = distributed.init(getattr(args, "device", None) or "cpu")
        args.func(args)
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback with --debug
        if debug:
            raise
        where = "" if world.is_main else f" (rank {world.rank})"
        say = (lambda line: None) if getattr(e, "raised_on_rank_0", False) else (
            lambda line: print(f"pyrovae {args.command}{where}: {line}", file=sys.stderr))
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, DivergenceError):
            say(f"diverged: {message}")
            return 3
        if isinstance(e, USER_ERRORS) or type(e).__name__.endswith("Error") and e.__module__.startswith("pyrovae"):
            say(f"error: {message}")
            return 2
        say(f"internal error: {type(e).__name__}: {message} (rerun with --debug for the traceback)")
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
