"""Pictures (pyrovae.app.viz) and the run report (pyrovae.app.report), down to opening it in a real browser.

The viz functions are checked against the decoder and encoder evaluated by hand
on a small trained pair; the report is written for a trained run folder with
every metric file present, parsed, and loaded from disk in headless Chromium,
driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the
standard library is enough, no websocket client).
"""

import base64
import fcntl
import html.parser
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import matplotlib.image
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import SVIRun
from pyrovae.app import viz
from pyrovae.app.cli import main
from pyrovae.app.pictures import PICTURES, write_run_pictures
from pyrovae.app.report import write_report
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train

from conftest import small_pair

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


# ---------------------------------------------------------------------------
# viz on a small trained pair

@pytest.fixture(scope="module")
def trained(shapes_small, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("viz_run")
    model, guide = small_pair(latent_dim=4, hidden=(32,))
    run = SVIRun(model, guide, shapes_small.train, shapes_small.val, lr=3e-3, batch_size=64, epochs=2,
                 run_dir=str(run_dir), progress=False)
    run.fit()
    model.eval(), guide.eval()
    return model, guide, shapes_small.test.data[:48], run_dir, run.history


def encoder_moments(guide, x):
    with torch.no_grad():
        loc, log_scale = guide.encoder(x)
    return loc, log_scale.exp()


def decoder_mean(model, z):
    with torch.no_grad():
        return torch.sigmoid(model.decoder(z))


def test_kl_per_dimension_is_the_gaussian_closed_form(trained):
    model, guide, x, _, _ = trained
    mu, sigma = encoder_moments(guide, x)
    expected = (0.5 * (mu ** 2 + sigma ** 2 - 1) - sigma.log()).mean(0)
    kl = viz.kl_per_dimension(model, guide, x)
    assert kl.site == "z" and kl.method == "closed-form"
    torch.testing.assert_close(kl.values, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(kl.order(), torch.argsort(expected, descending=True))


def test_kl_per_dimension_by_monte_carlo_agrees_within_its_standard_error(trained):
    model, guide, x, _, _ = trained
    mu, sigma = encoder_moments(guide, x)
    exact = (0.5 * (mu ** 2 + sigma ** 2 - 1) - sigma.log()).mean(0)
    # f = log q(z) - log p(z), z = mu + sigma e: Var f = (sigma^2 - 1)^2 / 2 + mu^2 sigma^2 per datum
    num_samples = 400
    variance = ((sigma ** 2 - 1) ** 2 / 2 + mu ** 2 * sigma ** 2).sum(0) / num_samples / x.shape[0] ** 2
    torch.manual_seed(0)
    kl = viz.kl_per_dimension(model, guide, x, analytic=False, num_samples=num_samples)
    assert kl.method == "monte-carlo"
    assert bool(((kl.values - exact).abs() <= 5 * variance.sqrt()).all()), (kl.values, exact, variance.sqrt())


def _linear_gaussian(prior):
    """obs = W h + noise with prior ``prior`` over h and a factorised Gaussian guide; sites ``h``, ``obs``."""
    weight = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, 1.0]])

    def model(x, batch_size=None):
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            h = pyro.sample("h", prior)
            return pyro.sample("obs", dist.Normal(h @ weight.T, 0.3).to_event(1), obs=x)

    def guide(x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(x[:, :2] * torch.tensor([1.0, 3.0]), 0.5).to_event(1))

    return model, guide


def test_kl_per_dimension_falls_back_to_the_variance_of_the_means():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    correlated = dist.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    model, guide = _linear_gaussian(correlated)
    kl = viz.kl_per_dimension(model, guide, x)
    assert kl.method == "variance-of-means" and kl.site == "h"
    means = x[:, :2] * torch.tensor([1.0, 3.0])
    torch.testing.assert_close(kl.values, means.var(0, correction=0))
    assert kl.order().tolist() == [1, 0]
    # the same pair with a factorised prior gets the closed form
    model, guide = _linear_gaussian(dist.Normal(torch.zeros(2), 1.0).to_event(1))
    assert viz.kl_per_dimension(model, guide, x).method == "closed-form"


def test_decode_means_replays_the_latents_into_the_model(trained):
    model, _, _, _, _ = trained
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(viz.decode_means(model, {"z": z}, torch.zeros(5, 1, 64, 64)), decoder_mean(model, z))


def test_traversals_sweep_one_dimension_at_a_time_in_order_of_kl(trained):
    model, guide, x, _, _ = trained
    t = viz.latent_traversals(model, guide, x, num_steps=5, span=2.0, base_index=3)
    assert t.images.shape == (4, 5, 1, 64, 64)
    assert t.dims == viz.kl_per_dimension(model, guide, x).order().tolist()
    # the prior is N(0, I): each dimension goes over -2 .. 2 standard deviations
    torch.testing.assert_close(t.values, torch.linspace(-2, 2, 5).expand(4, 5))
    mu, _ = encoder_moments(guide, x[3:4])
    for row, d in enumerate(t.dims):
        z = mu.repeat(5, 1)
        z[:, d] = t.values[row]
        torch.testing.assert_close(t.images[row], decoder_mean(model, z))
    top = viz.latent_traversals(model, guide, x, num_steps=3, max_dims=2)
    assert top.dims == t.dims[:2] and top.images.shape[:2] == (2, 3)


def test_interpolation_is_linear_between_the_guide_means(trained):
    model, guide, x, _, _ = trained
    a, b = x[:3], x[3:6]
    paths = viz.interpolate(model, guide, a, b, num_steps=5)
    assert paths.shape == (3, 5, 1, 64, 64)
    mu_a, _ = encoder_moments(guide, a)
    mu_b, _ = encoder_moments(guide, b)
    torch.testing.assert_close(paths[:, 0], decoder_mean(model, mu_a))
    torch.testing.assert_close(paths[:, 4], decoder_mean(model, mu_b))
    torch.testing.assert_close(paths[:, 2], decoder_mean(model, (mu_a + mu_b) / 2))


def test_scatter_points_are_the_means_in_the_two_highest_kl_dimensions(trained):
    model, guide, x, _, _ = trained
    points, dims, kl = viz.latent_scatter_points(model, guide, x)
    assert dims == kl.order()[:2].tolist()
    mu, _ = encoder_moments(guide, x)
    torch.testing.assert_close(points, mu[:, dims])


def test_training_curves_read_the_metrics_log(trained, tmp_path):
    _, _, _, run_dir, history = trained
    curves = viz.training_curves(viz.read_metrics(os.path.join(run_dir, "metrics.jsonl")))
    assert curves["epoch"] == [1, 2]
    assert curves["train_elbo"] == [row["train_elbo"] for row in history]
    assert curves["val_elbo"] == [row["val_elbo"] for row in history]
    path = viz.save_training_curves(os.path.join(run_dir, "metrics.jsonl"), str(tmp_path / "curves.png"))
    assert is_png(path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"epoch": 1, "train_elbo": -5.0}\n{"epoch": 2,\n')
    with pytest.raises(ValueError, match="line 2: not JSON"):
        viz.read_metrics(str(bad))
    with pytest.raises(ValueError, match="no epochs"):
        viz.training_curves([{"step": 3}])


def test_save_functions_write_pngs(trained, shapes_small, tmp_path):
    model, guide, x, _, _ = trained
    labels = shapes_small.test.labels[:48]
    written = [
        viz.save_traversals(model, guide, x, str(tmp_path / "t.png")),
        viz.save_interpolations(model, guide, x[:2], x[2:4], str(tmp_path / "i.png")),
        viz.save_latent_scatter(model, guide, x, labels, str(tmp_path / "s.png"),
                                label_names=["shape", "scale", "orientation", "x", "y"]),
        viz.save_latent_scatter(model, guide, x, labels[:, 0], str(tmp_path / "s1.png")),
    ]
    for path in written:
        assert is_png(path) and matplotlib.image.imread(path).shape[0] > 50


def test_bad_input_is_named(trained):
    model, guide, x, _, _ = trained
    with pytest.raises(ValueError, match=r"batch of data \[N, \*event\] with N >= 1"):
        viz.latent_traversals(model, guide, x[0, 0, 0])
    with pytest.raises(ValueError, match="no latent sample site 'w'; its latent sites are \\['z'\\]"):
        viz.kl_per_dimension(model, guide, x, site="w")
    with pytest.raises(ValueError, match="same shape"):
        viz.interpolate(model, guide, x[:2], x[:3])
    with pytest.raises(ValueError, match="labels must have shape"):
        viz.save_latent_scatter(model, guide, x, torch.zeros(5), "unused.png")
    with pytest.raises(ValueError, match="label_names has 1 names for 5 label columns"):
        viz.save_latent_scatter(model, guide, x, torch.zeros(48, 5), "unused.png", label_names=["a"])

    def no_sampling(x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(4), 1.0).to_event(1))
    with pytest.raises(ValueError, match="the model has no site 'x' and no observed site"):
        viz.decode_means(no_sampling, {"z": torch.zeros(2, 4)}, torch.zeros(2, 1, 64, 64))


# ---------------------------------------------------------------------------
# The report of a trained run folder

EVALUATION = {"test_elbo": -321.5, "nll": 310.25, "nll_std_error": 0.5, "active_units": {"z": 2},
              "surgery": {"index_code_mi": 1.25, "marginal_kl": 3.5}}
DISENTANGLEMENT = {"mig": {"discrete_mig": 0.125}, "dci": {"disentanglement": 0.25, "completeness": 0.375}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report") / "run")
    cfg = make_config(out=out, num_train=256, val_size=64, num_test=64, epochs=2, hidden=[32], latent_dim=3)
    train(cfg, progress=False)
    return out


def test_train_writes_the_report_and_the_pictures(run_dir):
    for name in ("report.html", *PICTURES):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    for name in PICTURES:
        assert is_png(os.path.join(run_dir, name)), name


def test_missing_pictures_are_drawn_and_present_ones_kept(run_dir):
    samples = os.path.join(run_dir, "samples.png")
    before = os.stat(samples).st_mtime_ns
    os.remove(os.path.join(run_dir, "traversals.png"))
    run = load_run(run_dir)
    with run.scope():
        written = write_run_pictures(run)
    assert written == {"pictures": ["traversals.png"], "pictures_skipped": {}}
    assert is_png(os.path.join(run_dir, "traversals.png")) and os.stat(samples).st_mtime_ns == before


class _Page(html.parser.HTMLParser):
    """The <img> sources and every attribute value of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.attributes, self.tags = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += [value or "" for _, value in attrs]
        if tag == "img":
            self.images.append(dict(attrs))


@pytest.fixture(scope="module")
def full_report(run_dir, tmp_path_factory):
    """The report with every metric file present, written by the CLI to a file of its own."""
    with open(os.path.join(run_dir, "evaluation.json"), "w") as f:
        json.dump(EVALUATION, f)
    with open(os.path.join(run_dir, "disentanglement.json"), "w") as f:
        json.dump(DISENTANGLEMENT, f)
    assert main(["ppc", run_dir, "--num-data", "16", "--num-samples", "10"]) == 0
    out = str(tmp_path_factory.mktemp("out") / "page.html")
    assert main(["report", run_dir, "--out", out]) == 0
    return out


def test_ppc_writes_its_summary(run_dir, full_report):
    with open(os.path.join(run_dir, "ppc", "summary.json")) as f:
        summary = json.load(f)
    assert {"mean_intensity", "mean_ink", "ink_sd"} <= set(summary["p_value"])
    assert summary["num_data"] == 16 and summary["num_samples"] == 10 and summary["obs_site"] == "x"


def test_report_embeds_every_picture_and_requests_nothing(run_dir, full_report):
    with open(full_report, encoding="utf-8") as f:
        text = f.read()
    page = _Page()
    page.feed(text)
    pngs = [n for n in os.listdir(run_dir) if n.endswith(".png")]
    pngs += [n for n in os.listdir(os.path.join(run_dir, "ppc")) if n.endswith(".png")]
    assert len(page.images) == len(pngs) >= len(PICTURES) + 5
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), img["alt"]
        data = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert data.startswith(PNG)
        assert matplotlib.image.imread(io.BytesIO(data)).shape[0] > 10, img["alt"]
    assert not [v for v in page.attributes if "http:" in v or "https:" in v or v.startswith("//")]
    assert not {"script", "link", "iframe", "object", "embed"} & page.tags
    assert "url(" not in text and "@import" not in text


def test_report_shows_config_and_every_metric(full_report):
    with open(full_report, encoding="utf-8") as f:
        text = f.read()
    for expected in ("<th>likelihood</th><td>bernoulli</td>", "<th>latent_dim</th><td class=\"num\">3</td>",
                     "<th>test_elbo</th>", "<th>nll</th><td class=\"num\">310.2</td>",
                     "<th>z</th><td class=\"num\">2</td>", "<th>index_code_mi</th><td class=\"num\">1.25</td>",
                     "<th>dci</th><td>completeness</td><td class=\"num\">0.375</td>",
                     "<th>mean_intensity</th>", "Fraction of extreme p-values", "ppc_x.png"):
        assert expected in text, expected


def test_report_skips_absent_files_and_names_unreadable_ones(tmp_path, run_dir, capsys):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(os.path.join(run_dir, "config.json"), folder / "config.json")
    (folder / "evaluation.json").write_text("{not json")
    path = write_report(str(folder), pictures=False)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "could not read evaluation.json" in text
    assert "Disentanglement" not in text and "<img" not in text and "pyrovae ppc" in text
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The report in a real browser

def chromium_binary():
    found = os.environ.get("PYROVAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is needed to test the report in a real browser and was not found: install "
                    "Debian's package with `apt-get install -y chromium` (.ci/run does) or set "
                    "PYROVAE_CHROMIUM=/path/to/chromium")
    return found


class HeadlessChromium:
    """Headless Chromium driven over the DevTools protocol on fds 3 (commands) and 4 (replies).

    Messages are JSON separated by NUL bytes. Host names resolve to nothing, so a
    request that tries to leave the page is seen (Network.requestWillBeSent) but
    cannot reach a network.
    """

    def __init__(self, binary, timeout=60.0):
        self.timeout, self.next_id, self.events, self.buffer = timeout, 0, [], b""
        self.profile = tempfile.mkdtemp(prefix="pyrovae-chromium-")
        commands_r, self.commands = os.pipe()
        self.replies, replies_w = os.pipe()
        # move the child's ends out of the way of fds 3 and 4 before dup2 puts them there
        child_r = fcntl.fcntl(commands_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(replies_w, fcntl.F_DUPFD, 10)
        os.close(commands_r)
        os.close(replies_w)

        def at_fds_3_and_4():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1024", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=at_fds_3_and_4, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(child_r)
        os.close(child_w)

    def send(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method):
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive())

    def _receive(self):
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout} s")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe: " + self.proc.stderr.read().decode()[-2000:])
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, path):
        """Load ``path`` from disk; returns ``(images, request_urls, screenshot_png)``."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Network.enable", session)
        self.send("Page.enable", session)
        self.send("Page.navigate", session, url="file://" + os.path.abspath(path))
        self.wait_for("Page.loadEventFired")
        images = self.send("Runtime.evaluate", session, returnByValue=True, expression=(
            "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"
        ))["result"]["value"]
        size = self.send("Page.getLayoutMetrics", session)["cssContentSize"]
        shot = self.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 0.5})
        requests = [e["params"]["request"]["url"] for e in self.events
                    if e.get("method") == "Network.requestWillBeSent"]
        return images, requests, base64.b64decode(shot["data"])

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.commands)
            os.close(self.replies)
            self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def open_in_chromium(path):
    browser = HeadlessChromium(chromium_binary())
    try:
        return browser.open(path)
    finally:
        browser.close()


def _leaving(requests):
    return [url for url in requests if not url.startswith(("file:", "data:"))]


def test_report_opens_in_chromium(full_report, tmp_path):
    images, requests, screenshot = open_in_chromium(full_report)
    assert len(images) >= len(PICTURES) + 5
    assert [i["alt"] for i in images if not (i["complete"] and i["width"] > 0)] == []
    assert _leaving(requests) == []
    assert requests[0] == "file://" + os.path.abspath(full_report)
    (tmp_path / "report.png").write_bytes(screenshot)
    pixels = matplotlib.image.imread(str(tmp_path / "report.png"))
    assert pixels.shape[0] > 1000 and pixels.shape[1] > 500
    assert float(np.std(pixels)) > 0.05  # not a blank page


def test_the_browser_check_sees_external_requests_and_broken_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img alt="remote" src="https://example.com/a.png">'
                    '<img alt="broken" src="data:image/png;base64,AAAA"></body></html>')
    images, requests, _ = open_in_chromium(str(page))
    assert {i["alt"] for i in images if i["width"] == 0} == {"remote", "broken"}
    assert _leaving(requests) == ["https://example.com/a.png"]
