"""Write docs/api.md, the API reference of pyrovae's public names, from their docstrings.

    python scripts/api_docs.py            # writes docs/api.md
    python scripts/api_docs.py --check    # exit 1 if docs/api.md is out of date

Every module of :data:`MODULES` is listed with its docstring, then every public
name it defines (``__all__``, or the names not starting with ``_`` defined in
the module itself) with its signature and docstring. ``references`` finds the
Sphinx-style cross references (``:func:`...```, ``:class:`...```,
``:mod:`...```) in every docstring that name nothing (:func:`broken_references`).
"""

import argparse
import importlib
import inspect
import os
import re
import sys

MODULES = [
    "pyrovae", "pyrovae.infer.trace", "pyrovae.infer.elbo", "pyrovae.infer.iwae", "pyrovae.infer.regularized",
    "pyrovae.infer.importance", "pyrovae.infer.predictive", "pyrovae.infer.step", "pyrovae.infer.svi",
    "pyrovae.infer.runfolder", "pyrovae.infer.checkpoint", "pyrovae.evaluate.likelihood",
    "pyrovae.evaluate.diagnostics", "pyrovae.evaluate.disentangle", "pyrovae.evaluate.ppc", "pyrovae.nn.nets",
    "pyrovae.nn.likelihoods", "pyrovae.nn.priors", "pyrovae.nn.pixelcnn", "pyrovae.data", "pyrovae.data.splits",
    "pyrovae.app.config", "pyrovae.app.build", "pyrovae.app.runs", "pyrovae.app.viz", "pyrovae.app.pictures",
    "pyrovae.app.report", "pyrovae.models", "pyrovae.guides",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "api.md")
REFERENCE = re.compile(r":(?:func|class|mod|meth|data|attr):`~?([A-Za-z_][\w.]*)`")


def public_names(module):
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
                  == module.__name__ and (inspect.isclass(v) or inspect.isfunction(v)))


def _signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def render():
    lines = ["# pyrovae API reference", "",
             "Generated from the docstrings by `python scripts/api_docs.py`; do not edit by hand.", ""]
    for name in MODULES:
        module = importlib.import_module(name)
        lines += [f"## `{name}`", "", inspect.cleandoc(module.__doc__ or ""), ""]
        for public in public_names(module):
            obj = getattr(module, public)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### {kind} `{name}.{public}{_signature(obj)}`", "", inspect.cleandoc(obj.__doc__ or ""), ""]
    return "\n".join(lines).rstrip() + "\n"


def docstrings():
    """``(where, context, docstring)`` of every module and public name of :data:`MODULES`, methods included;
    ``context`` lists the namespaces a relative reference is looked up in (the defining module, the class)."""
    for name in MODULES:
        module = importlib.import_module(name)
        yield name, [name], module.__doc__ or ""
        for public in public_names(module):
            obj = getattr(module, public)
            home = getattr(obj, "__module__", name)
            own = [f"{home}.{obj.__qualname__}", home] if inspect.isclass(obj) else [home]
            yield f"{name}.{public}", own, getattr(obj, "__doc__", "") or ""
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if callable(member) and not attr.startswith("_"):
                        yield f"{name}.{public}.{attr}", [f"{home}.{obj.__qualname__}", home], member.__doc__ or ""


def resolve(target, context=()):
    """The object a reference names: absolute (``pyrovae.x.y``), or relative to a namespace of ``context``
    (as Sphinx resolves an unqualified name); None when it names nothing."""
    for prefix in ("", *(c + "." for c in context)):
        obj = _lookup(prefix + target)
        if obj is not None:
            return obj
    return None


def _lookup(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(obj, part):
                return None
            obj = getattr(obj, part)
        return obj
    return None


def broken_references():
    """``(where, target)`` of every cross reference in the docstrings that names nothing."""
    return [(where, target) for where, context, doc in docstrings() for target in REFERENCE.findall(doc)
            if resolve(target, context) is None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = open(OUT).read() if os.path.exists(OUT) else ""
        if current != text:
            print("docs/api.md is out of date: run python scripts/api_docs.py", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
