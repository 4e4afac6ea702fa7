"""The dashboard of a real small run in headless Chromium: no JavaScript errors, every plot drawn
(SVG inside each plot div), the winners table filled, a screenshot saved.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped when it is absent.
Chromium runs offline (background networking, sync, component updates and QUIC off) with a
throw-away profile; the page reports errors and drawn plots as attributes of ``<html>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwsearch.dashboard.render import ERROR_HOOK, PAGE_SCRIPT, write_dashboard
from tests.test_dashboard import real_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--virtual-time-budget=5000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium is not installed (no chromium, chromium-browser or google-chrome on PATH); install it with `apt-get install -y chromium`")


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def html_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r"<html([^>]*)>", dom)
    assert tag, f"no <html> tag in the dumped DOM: {dom[:200]!r}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


@pytest.fixture(scope="module")
def dashboard() -> Path:
    """The page of a real small search (tests.test_dashboard.real_run: warm starts, a dense trial, an exported winner)."""
    chromium()  # skip before the search when there is no browser
    return write_dashboard(real_run())


def test_dashboard_renders_without_js_errors(dashboard, tmp_path):
    out = run_chromium(dashboard, tmp_path / "profile", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    attrs = html_attrs(out.stdout)
    assert attrs.get("data-js-errors") == "0", attrs.get("data-js-error-messages")
    assert attrs.get("data-plots") == "4" and attrs.get("data-plots-rendered") == "4"
    dom = out.stdout
    for name in ("fronts", "winner", "hypervolume", "latency"):  # each plot div holds its drawn SVG (plotly adds it in the browser)
        div = dom.split(f'id="plot-{name}"', 1)[1].split('id="plot-', 1)[0]
        assert 'class="main-svg"' in div and "<path" in div, name
    fronts = dom.split('id="plot-fronts"', 1)[1].split("</section>", 1)[0]
    assert "dense fp32" in fronts and "warm start" in fronts and "×" in fronts  # dense point, warm-start legend, speedup labels drawn
    winners = dom.split('id="winners"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr class=\"(\w+)", winners)
    pareto = json.loads((dashboard.parent / "pareto.json").read_text())
    assert len(rows) == 1 + len(pareto) and rows.count("export") == 1  # the dense row, then each winner (one exported)
    assert "export/1/model.onnx" in winners and "first trial" in dom and "sha256" in dom


def test_dashboard_screenshot(dashboard, tmp_path):
    shot = Path(os.environ.get("HWSEARCH_SHOT_DIR") or tmp_path) / "dashboard.png"  # HWSEARCH_SHOT_DIR: keep it to look at
    out = run_chromium(dashboard, tmp_path / "profile", "--window-size=1400,1800", f"--screenshot={shot}")
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses to a few KiB


def test_js_errors_are_detected(tmp_path):
    """The detector itself: a page whose script throws must report it."""
    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><head>{ERROR_HOOK}</head><body><script>notAFunction();</script>{PAGE_SCRIPT}</body></html>")
    attrs = html_attrs(run_chromium(page, tmp_path / "profile", "--dump-dom").stdout)
    assert attrs.get("data-js-errors") == "1" and "notAFunction" in attrs.get("data-js-error-messages", "")
    assert attrs.get("data-plots-rendered") == "0"
