"""The README's worked example runs as written; its synopsis, --help and the API reference are current."""

import os
import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
ROOT = str(README.parent)


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "SVIRun" in b)
    assert 20 <= len(example.strip().splitlines()) <= 60
    exec(compile(example, str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    elbos = [float(v) for v in re.search(r"per epoch: \[(.*)\]", out).group(1).split(",")]
    assert len(elbos) == 3 and elbos[-1] > elbos[0]


def test_the_readme_synopsis_names_every_train_option():
    from pyrovae.app.config import OPTIONS

    readme = open(os.path.join(ROOT, "README.md")).read()
    synopsis = readme[readme.index("```\npyrovae train"):]
    synopsis = synopsis[:synopsis.index("```", 4)]
    missing = [o.cli_flag for o in OPTIONS if o.cli_flag not in synopsis]
    assert not missing, missing


def test_the_api_reference_is_current_and_its_references_resolve():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import api_docs

    assert api_docs.broken_references() == []
    with open(api_docs.OUT) as f:
        assert f.read() == api_docs.render(), "docs/api.md is out of date: run python scripts/api_docs.py"


def test_help_shows_each_default_once():
    import contextlib
    import io

    from pyrovae.app.cli import build_parser

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "(default: None)" not in text.getvalue() and "(default: 20)" in text.getvalue()
    assert text.getvalue().count("(default: 20) (default") == 0
