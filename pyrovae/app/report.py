"""The run report: one self-contained HTML page per run folder.

:func:`write_report` gathers what a run folder holds into ``report.html``: the
configuration, the metrics that exist (``summary.json`` from ``pyrovae train``,
``evaluation.json`` from ``pyrovae evaluate``, ``disentanglement.json`` from
``pyrovae metrics``, ``rivers_finding.json`` from ``examples/rivers.py``,
``ppc/summary.json`` from ``pyrovae ppc``), every PNG in the
folder and in ``ppc/``, and the posterior predictive p-values. Pictures are
embedded as base64 ``data:`` URIs and the style sheet is inline, so the page
makes no request of its own: it opens from disk, offline, and can be mailed as
one file. Given a reloaded run, the pictures it lacks are drawn first
(:mod:`pyrovae.app.pictures`).
"""

import base64
import html
import json
import os

from pyrovae.app.config import applicable
from pyrovae.app.pictures import PICTURES, write_run_pictures
from pyrovae.infer.checkpoint import atomic_open

METRIC_FILES = {  # file -> section title
    "summary.json": "Training summary (pyrovae train)",
    "evaluation.json": "Evaluation (pyrovae evaluate)",
    "disentanglement.json": "Disentanglement scores (pyrovae metrics)",
    "rivers_finding.json": "The rivers finding: grass and curvature dimensions (examples/rivers.py)",
}


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
    """The options that apply to the pair trained (a user's pair: those given, and the data's)."""
    shown = {k: v for k, v in applicable(cfg).items() if k not in ("given", "sources")}
    for spec, source in cfg.get("sources", {}).items():
        shown[f"source of {spec}"] = source
    return "<h2>Configuration</h2>" + _table(shown)


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


HOLES_GAP = 0.1  # aggregate-posterior minus prior confident fractions above which the report speaks of holes


def _shape_section(run_dir):
    """The shape check of a ``shapes`` run (:func:`pyrovae.app.runs.shape_check`): its figures, then the prior's
    samples beside the aggregate posterior's. ``("", ())`` without one, else ``(html, pictures shown)``."""
    found = _read_json(os.path.join(run_dir, "summary.json"))
    summary = found[0] if found and found[0] else {}
    if not isinstance(summary, dict) or summary.get("reconstruction_shape_accuracy") is None:
        return "", ()
    prior, aggregate = summary.get("prior_sample_confidence"), summary.get("aggregate_posterior_confidence")
    figures = {"reconstructions with the test image's shape (chance 1/3)": summary["reconstruction_shape_accuracy"],
               "... per true shape": summary.get("reconstruction_shape_accuracy_by_shape"),
               "prior samples showing one shape (classifier p > 0.9)": prior,
               "aggregate-posterior samples showing one shape": aggregate}
    parts = ["<h2>Did it learn the shapes?</h2>",
             '<p class="note">A shape classifier trained on ground-truth renders '
             "(<code>pyrovae.evaluate.shape_check</code>) reads the run's pictures: the mean of p(x|z).</p>",
             _table(figures)]
    if isinstance(prior, float) and isinstance(aggregate, float) and aggregate - prior > HOLES_GAP:
        parts.append(f'<p class="note"><b>The prior leaves holes:</b> {100 * prior:.0f}% of the samples from p(z) '
                     f"show one shape against {100 * aggregate:.0f}% of those from the aggregate posterior q(z): "
                     "p(z) puts mass where no training image is encoded.</p>")
    shown = tuple(n for n in ("samples.png", "aggregate_samples.png") if os.path.exists(os.path.join(run_dir, n)))
    parts.append('<div style="display: flex; gap: 1em">' + "".join(
        f'<div style="flex: 1">{_figure(os.path.join(run_dir, n), PICTURES[n])}</div>' for n in shown) + "</div>")
    return "".join(parts), shown


def _pictures_section(run_dir, shown=()):
    names = [n for n in PICTURES if os.path.exists(os.path.join(run_dir, n)) and n not in shown]
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

    With ``pictures`` and a reloaded ``run`` (:class:`pyrovae.app.runs.Run`),
    the pictures the run lacks are drawn first. Metric files that do not exist
    are left out.
    """
    cfg = _read_json(os.path.join(run_dir, "config.json"))
    if cfg is None or cfg[1]:
        raise FileNotFoundError(f"{run_dir} is not a pyrovae run folder (no readable config.json)")
    cfg = cfg[0]
    if pictures and run is not None:
        with run.scope():
            write_run_pictures(run)
    title = f"pyrovae run report: {os.path.basename(os.path.normpath(run_dir))}"
    shapes, shown = _shape_section(run_dir)
    body = [f"<h1>{_esc(title)}</h1>", _metrics_section(run_dir), shapes, _config_section(cfg),
            _pictures_section(run_dir, shown), _ppc_section(run_dir)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")
    out = out or os.path.join(run_dir, "report.html")
    with atomic_open(out, "w") as f:
        f.write(page)
    return out
