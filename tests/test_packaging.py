"""The wheel installs pyrovae, pyrovae.models and pyrovae.guides, and no top-level `models`."""

import pathlib
import subprocess
import sys
import sysconfig
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_installs_models_and_guides_under_pyrovae(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("pyrovae-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True)
    # the dependencies (torch, pyro, ...) come from this environment, after the fresh venv's own packages
    pathlib.Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = textwrap.dedent(f"""
        import importlib.util, pyrovae, pyrovae.models, pyrovae.guides
        assert pyrovae.__file__.startswith({site!r}), pyrovae.__file__
        assert pyrovae.models.__file__.startswith({site!r})
        assert importlib.util.find_spec("models") is None and importlib.util.find_spec("guides") is None
        print(pyrovae.models.VAE.__name__, pyrovae.guides.GaussianGuide.__name__)
    """)
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["VAE", "GaussianGuide"]
