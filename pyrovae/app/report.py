"""The run report: one self-contained HTML page per run folder.

:func:`write_report` gathers what a run folder holds into ``report.html``: the
configuration, the metrics that exist (``summary.json`` from ``pyrovae train``,
``evaluation.json`` from ``pyrovae evaluate``, ``disentanglement.json`` from
``pyrovae metrics``, ``ppc/summary.json`` from ``pyrovae ppc``), every PNG in the
folder and in ``ppc/``, and the posterior predictive p-values. Pictures are
embedded as base64 ``data:`` URIs and the style sheet is inline, so the page
makes no request of its own: it opens from disk, offline, and can be mailed as
one file. :func:`write_run_pictures` first draws the pictures a run lacks
(training curves, traversals, interpolations, latent scatter; see
:mod:`pyrovae.app.viz`).
"""

import base64
import html
import json
import os
import warnings

import torch

from pyrovae.app import viz
from pyrovae.infer.checkpoint import atomic_open
from pyrovae.data.shapes import FACTOR_NAMES
from pyrovae.app.runs import load_run, read_config, write_pictures

PICTURES = {  # file name -> caption, in the order shown
    "training_curves.png": "Training curves: the training bound (mean over each epoch's batches) and the "
                           "validation ELBO at the end of each epoch.",
    "samples.png": "Samples: the mean of p(x|z) for z ~ p(z).",
    "reconstructions.png": "Test inputs (odd rows) and the mean of p(x|z), z ~ q(z|x) (even rows).",
    "traversals.png": "Latent traversals: one test input's guide means, one dimension swept at a time "
                      "over the prior's mean +- 3 sd; rows by decreasing KL per dimension.",
    "interpolations.png": "Interpolations: decoded straight lines between the guide means of two test "
                          "inputs (shown at both ends).",
    "latent_scatter.png": "Guide means of test images in the two latent dimensions of largest KL, coloured "
                          "by label or ground-truth factor.",
}
METRIC_FILES = {  # file -> section title
    "summary.json": "Training summary (pyrovae train)",
    "evaluation.json": "Evaluation (pyrovae evaluate)",
    "disentanglement.json": "Disentanglement scores (pyrovae metrics)",
}
_FAILURES = (ValueError, RuntimeError, TypeError, NotImplementedError, KeyError)


# ---------------------------------------------------------------------------
# Pictures

def write_run_pictures(run_dir, run=None, overwrite=False, num_points=500, max_dims=10):
    """Draw the pictures of :data:`PICTURES` that ``run_dir`` lacks (all with ``overwrite``).

    ``run`` is ``(cfg, model, guide, data)`` as :func:`pyrovae.app.runs.load_run`
    returns it; the run is loaded from its ``best`` checkpoint when it is needed
    and not given. The pictures use the first ``num_points`` test images (dynamic
    binarization drawn once with the run's seed), a fixed random state, and at
    most ``max_dims`` traversal rows. A picture the pair cannot make (e.g. a
    model that cannot run without data) is skipped with a warning. Returns the
    paths written.
    """
    def wanted(name):
        return overwrite or not os.path.exists(os.path.join(run_dir, name))

    written = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if wanted("training_curves.png") and os.path.exists(metrics):
        written += _attempt("training_curves.png", viz.save_training_curves, metrics,
                            os.path.join(run_dir, "training_curves.png"))
    pair_pictures = [name for name in PICTURES if name != "training_curves.png" and wanted(name)]
    if not pair_pictures:
        return written
    cfg, model, guide, data = run if run is not None else load_run(run_dir)
    split = data.test.fixed(cfg.get("seed", 0))
    n = min(num_points, len(split))
    x = split.data[:n].to(cfg.get("device", "cpu"))
    labels = None if split.labels is None else split.labels[:n]
    names = None if labels is None else _label_names(cfg, labels)
    half = min(4, n // 2)

    def path(name):
        return os.path.join(run_dir, name)

    with torch.random.fork_rng():
        torch.manual_seed(cfg.get("seed", 0))
        if "samples.png" in pair_pictures or "reconstructions.png" in pair_pictures:
            _attempt("samples.png and reconstructions.png", write_pictures, model, guide, data.test, run_dir,
                     cfg.get("device", "cpu"))
            written += [path(p) for p in ("samples.png", "reconstructions.png") if os.path.exists(path(p))]
        if "traversals.png" in pair_pictures:
            written += _attempt("traversals.png", viz.save_traversals, model, guide, x, path("traversals.png"),
                                max_dims=max_dims)
        if "interpolations.png" in pair_pictures and half >= 1:
            written += _attempt("interpolations.png", viz.save_interpolations, model, guide, x[:half],
                                x[half:2 * half], path("interpolations.png"))
        if "latent_scatter.png" in pair_pictures:
            written += _attempt("latent_scatter.png", viz.save_latent_scatter, model, guide, x, labels,
                                path("latent_scatter.png"), label_names=names)
    return written


def _label_names(cfg, labels):
    """Names for the label columns of a run's dataset: the factors of ``shapes``, else ``class``."""
    if labels.dim() == 2:
        if cfg.get("dataset") == "shapes":
            return list(FACTOR_NAMES)
        return [f"factor {i}" for i in range(labels.shape[1])]
    return ["class"]


def _attempt(name, fn, *args, **kwargs):
    try:
        return [fn(*args, **kwargs)]
    except _FAILURES as e:
        warnings.warn(f"no {name}: {type(e).__name__}: {e}")
        return []


# ---------------------------------------------------------------------------
# HTML pieces

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em;
margin-top: 2em; } h3 { font-size: 1em; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag td { background: #fde8e8; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; margin-top: .3em; }
.note { color: #666; font-size: .9em; } code { background: #f4f4f6; padding: 0 .2em; }
"""


def _esc(value):
    return html.escape(str(value), quote=True)


def _text(value):
    """Plain text of a scalar: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format(value):
    """``(html, is_number)`` of a JSON value; dicts become nested tables."""
    if value is None:
        return "&ndash;", False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _esc(_text(value)), True
    if isinstance(value, dict):
        return _table(value), False
    if isinstance(value, (list, tuple)):
        if len(value) <= 32 and all(isinstance(v, (int, float, str)) for v in value):
            return _esc(", ".join(_text(v) for v in value)), False
        text = json.dumps(value)
        return _esc(text if len(text) <= 300 else text[:300] + " ..."), False
    return _esc(value), False


def _cell(value):
    html_value, numeric = _format(value)
    return f'<td class="num">{html_value}</td>' if numeric else f"<td>{html_value}</td>"


def _table(mapping):
    rows = [f"<tr><th>{_esc(key)}</th>{_cell(value)}</tr>" for key, value in mapping.items()]
    return "<table>" + "".join(rows) + "</table>"


def _figure(path, caption):
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f'<p class="note">{_esc(os.path.basename(path))} is not a PNG file; left out.</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    name = os.path.basename(path)
    return (f'<figure><img src="{uri}" alt="{_esc(name)}"><figcaption><b>{_esc(name)}</b>: '
            f"{_esc(caption)}</figcaption></figure>")


def _read_json(path):
    """``(object, None)``, or ``(None, note)`` when the file exists but cannot be read; None when absent."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, json.JSONDecodeError) as e:
        return None, f"could not read {os.path.basename(path)}: {e}"


def _pngs(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(".png"))


# ---------------------------------------------------------------------------
# Sections

def _config_section(cfg):
    return "<h2>Configuration</h2>" + _table(cfg)


def _metrics_section(run_dir):
    parts = []
    for name, title in METRIC_FILES.items():
        found = _read_json(os.path.join(run_dir, name))
        if found is None:
            continue
        obj, note = found
        parts.append(f"<h3>{_esc(title)}</h3>")
        if note:
            parts.append(f'<p class="note">{_esc(note)}</p>')
        elif name == "disentanglement.json" and isinstance(obj, dict):
            parts.append(_disentanglement_table(obj))
        else:
            parts.append(_table(obj) if isinstance(obj, dict) else f"<p>{_format(obj)[0]}</p>")
    if not parts:
        return ""
    return "<h2>Metrics</h2>" + "".join(parts)


def _disentanglement_table(scores):
    rows = ["<tr><th>metric</th><th>score</th><th>value</th></tr>"]
    for metric, values in scores.items():
        values = values if isinstance(values, dict) else {"": values}
        for key, value in values.items():
            rows.append(f"<tr><th>{_esc(metric)}</th><td>{_esc(key)}</td>{_cell(value)}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _pictures_section(run_dir):
    names = [n for n in PICTURES if os.path.exists(os.path.join(run_dir, n))]
    names += [n for n in _pngs(run_dir) if n not in PICTURES]
    if not names:
        return ""
    return "<h2>Pictures</h2>" + "".join(
        _figure(os.path.join(run_dir, n), PICTURES.get(n, "")) for n in names)


def _ppc_section(run_dir):
    folder = os.path.join(run_dir, "ppc")
    found = _read_json(os.path.join(folder, "summary.json"))
    pictures = _pngs(folder)
    if found is None and not pictures:
        return ('<h2>Posterior predictive checks</h2><p class="note">None yet: run <code>pyrovae ppc '
                f"{_esc(run_dir)}</code>.</p>")
    parts = ["<h2>Posterior predictive checks</h2>"]
    if found is not None:
        summary, note = found
        parts.append(f'<p class="note">{_esc(note)}</p>' if note else _ppc_tables(summary))
    parts += [_figure(os.path.join(folder, n), _ppc_caption(n)) for n in pictures]
    return "".join(parts)


def _ppc_tables(summary):
    alpha = float(summary.get("alpha", 0.05))
    about = {k: summary[k] for k in ("num_data", "num_samples", "obs_site", "alpha", "mid_p") if k in summary}
    parts = [_table(about)] if about else []
    p_values = summary.get("p_value", {})
    if p_values:
        rows = ["<tr><th>statistic T</th><th>p = P(T(x<sub>rep</sub>) &ge; T(x))</th><th></th></tr>"]
        for name, p in p_values.items():
            extreme = p < alpha / 2 or p > 1 - alpha / 2
            row = '<tr class="flag">' if extreme else "<tr>"
            rows.append(f'{row}<th>{_esc(name)}</th><td class="num">{p:.3f}</td>'
                        f"<td>{'rejected' if extreme else ''}</td></tr>")
        parts.append(f"<h3>p-values (rejected: outside [{alpha / 2:g}, {1 - alpha / 2:g}])</h3>"
                     "<table>" + "".join(rows) + "</table>")
    fractions = summary.get("extreme_fraction", {})
    if fractions:
        parts.append("<h3>Fraction of extreme p-values per datum or pixel</h3>" + _table(fractions))
    return "".join(parts)


def _ppc_caption(name):
    stem = name[:-4]
    if stem.startswith("ppc_"):
        return f"az.plot_ppc of {stem[4:]}: observed against replicated data sets."
    if stem.startswith("stat_"):
        return f"test statistic {stem[5:]}: T(x) against T(x_rep)."
    return ""


# ---------------------------------------------------------------------------
# The page

def write_report(run_dir, out=None, pictures=True, run=None):
    """Write the run's self-contained ``report.html`` (or ``out``) and return its path.

    With ``pictures`` the pictures the run lacks are drawn first
    (:func:`write_run_pictures`; ``run`` passes an already loaded
    ``(cfg, model, guide, data)``). Metric files that do not exist are left out.
    """
    cfg = read_config(run_dir)
    if pictures:
        write_run_pictures(run_dir, run=run)
    title = f"pyrovae run report: {os.path.basename(os.path.normpath(run_dir))}"
    body = [f"<h1>{_esc(title)}</h1>", _metrics_section(run_dir), _config_section(cfg),
            _pictures_section(run_dir), _ppc_section(run_dir)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")
    out = out or os.path.join(run_dir, "report.html")
    with atomic_open(out, "w") as f:
        f.write(page)
    return out
