"""The HTML report judged in a real browser (Debian's chromium, headless): it loads with no console
message, holds every figure, the browser decodes each one at its own size, and draws them; a
screenshot is kept as an artifact of the test run (results/test-artifacts/)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from fmbench_k8s.analysis.plots import PLOTS
from fmbench_k8s.analysis.run import analyze_run
from fmbench_k8s.analysis.synthetic import SyntheticVariant, synthesize_table, write_run
from fmbench_k8s.api.spec import BenchmarkSpec
from fmbench_k8s.storage import LocalStorage
from tests.chart.conftest import require_tool
from tests.corpus import REPO

pytestmark = pytest.mark.integration
ARTIFACT = REPO / "results" / "test-artifacts" / "report.png"
SPEC = BenchmarkSpec.model_validate({
    "variants": [
        {"name": "g5", "instanceType": "g5.2xlarge", "engine": "simulator"},
        {"name": "g6e", "instanceType": "g6e.2xlarge", "engine": "simulator"},
    ],
    "workload": {"requestsPerMinute": 900, "promptTokens": {"mean": 512}, "outputTokens": {"mean": 64}},
    "slo": {"latency": {"metric": "e2e", "percentile": 90, "maxSeconds": 2.0}},
})  # fmt: skip
WIDTH = 1400


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("chromium", "Debian package chromium (make node-deps)")
    argv = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=5000", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    variants = [
        SyntheticVariant("g5", levels=(1, 4, 16), ttft_s=0.15, itl_s=0.02, error_rate=0.02, output_tokens=64),
        SyntheticVariant("g6e", levels=(1, 4, 16, 32), ttft_s=0.1, itl_s=0.012, output_tokens=64),
    ]
    table, stages = synthesize_table(variants, stage_s=30, warmup_s=5, drain_s=10, seed=7)
    write_run(LocalStorage(root), table, stages)
    analyze_run(SPEC, LocalStorage(root), benchmark="browser", run_id="r1")
    return root / "report.html"


def test_the_report_loads_without_a_console_message_and_shows_every_figure(report: Path) -> None:
    dom = _chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The report has no script and loads nothing: any console line is a fault (a blocked or broken resource).
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', dom.stdout)
    assert sorted(images) == sorted(PLOTS)
    for section in ("Variants", "Stages", "Errors by reason", "Provenance"):
        assert f"<h2>{section}</h2>" in dom.stdout, section

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shot = _chromium(f"--window-size={WIDTH},12000", f"--screenshot={ARTIFACT}", report.as_uri())
    assert shot.returncode == 0 and ARTIFACT.is_file(), shot.stderr[-2000:]
    with Image.open(ARTIFACT) as image:
        rgb = image.convert("RGB")
        assert rgb.size[0] == WIDTH
        # Every figure is drawn: the page holds the plots' colours, not only text on white.
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 1000, f"{len(colours)} colours: the figures did not render"
        box = ImageOps.invert(rgb).getbbox()  # where the page has anything but white
        assert box is not None
        drawn = sum(n for n, c in colours if c != (255, 255, 255))
        assert drawn > 0.05 * (box[2] - box[0]) * (box[3] - box[1]), (drawn, box)
    shutil.copy(report, ARTIFACT.with_suffix(".html"))  # the page the screenshot shows, next to it


# Appended to a copy of the report (the report itself has no script): once the page has loaded,
# the browser's own answer for every image goes into the DOM that --dump-dom prints.
_PROBE = """<script>window.addEventListener("load", () => {
  const out = [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);
  const pre = document.createElement("pre"); pre.id = "decoded"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def test_the_browser_decodes_every_figure_at_its_own_size(report: Path, tmp_path: Path) -> None:
    html = report.read_text()
    sizes = {}
    for alt, data in re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as png:
            sizes[alt] = png.size
    probed = tmp_path / "probed.html"
    # a control: a PNG cut after its signature, which the probe must see as not decoded
    control = '<img alt="broken-control" src="data:image/png;base64,iVBORw0KGgo=">'
    probed.write_text(html.replace("</body>", control + _PROBE + "</body>"))
    dom = _chromium("--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="decoded">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the probe did not run: " + dom.stderr[-1000:]
    decoded = {alt: (complete, (w, h)) for alt, complete, w, h in json.loads(found.group(1).replace("&quot;", '"'))}
    assert decoded.pop("broken-control")[1] == (0, 0)
    assert sorted(decoded) == sorted(PLOTS) == sorted(sizes)
    assert {alt: (True, sizes[alt]) for alt in sizes} == decoded
