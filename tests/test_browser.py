"""The dashboard in headless Chromium: no JavaScript errors, every plot drawn, a screenshot saved.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped when it is absent.
Chromium runs offline (background networking, sync, component updates and QUIC off) with a
throw-away profile; the page reports errors and drawn plots as attributes of ``<html>``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwsearch.dashboard.render import ERROR_HOOK, PAGE_SCRIPT, write_dashboard
from tests.synthetic_run import random_records, write_run

pytestmark = pytest.mark.browser
BUDGETS = {"cpu-1t": 1.2, "cpu-2t": 1.6}
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
def dashboard(tmp_path_factory) -> Path:
    recs = random_records(50, list(BUDGETS), BUDGETS, seed=0, quality=0.05)
    run = write_run(tmp_path_factory.mktemp("browser"), "demo", BUDGETS, recs,
                    baselines={"uniform": random_records(14, list(BUDGETS), BUDGETS, 1), "random": random_records(50, list(BUDGETS), BUDGETS, 2)})
    (run / "export" / "3").mkdir(parents=True)
    (run / "export" / "3" / "manifest.json").write_text(json.dumps({"trial": 3, "ok": True, "predicted_latency_ms": {"cpu-1t": 0.5}, "measured_latency_ms": {"cpu-1t": 0.55}}))
    return write_dashboard(run)


def test_dashboard_renders_without_js_errors(dashboard, tmp_path):
    out = run_chromium(dashboard, tmp_path / "profile", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    attrs = html_attrs(out.stdout)
    assert attrs.get("data-js-errors") == "0", attrs.get("data-js-error-messages")
    assert attrs.get("data-plots") == "4" and attrs.get("data-plots-rendered") == "4"
    assert out.stdout.count('class="main-svg"') >= 4 and "<table" in out.stdout


def test_dashboard_screenshot(dashboard, tmp_path):
    shot = tmp_path / "dashboard.png"
    out = run_chromium(dashboard, tmp_path / "profile", "--window-size=1400,2700", f"--screenshot={shot}")
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
