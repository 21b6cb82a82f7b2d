"""The README's worked example of a new pair runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "SVIRun" in b)
    assert 20 <= len(example.strip().splitlines()) <= 60
    exec(compile(example, str(README), "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    elbos = [float(v) for v in re.search(r"per epoch: \[(.*)\]", out).group(1).split(",")]
    assert len(elbos) == 3 and elbos[-1] > elbos[0]
