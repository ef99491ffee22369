"""``detector analyze --report``: a self-contained HTML report with every section and real
charts, an archive with a corrupt file still reported (exit status 1), and the page rendered in
headless Chromium (skipped, saying why, where Chromium is not installed; .ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from detector.cli import main

SECTIONS = ("summary", "alerts", "timeline", "hosts", "talkers", "dns", "beaconing", "bindings")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    assert main(["synth", "hpc-mix", "mitm-arp-spoof", "exfil-dns-tunnel", "theft-beaconing", "-o", str(d),
                 "--packets", "8000"]) == 0
    (d / "broken.pcap").write_bytes((d / "hpc-mix.pcap").read_bytes()[:5000])  # cut short
    out = d / "report.html"
    code = main(["analyze", str(d), "--config", str(d / "site.toml"), "-o", str(d / "alerts.jsonl"), "--report",
                 str(out), "-q"])
    return code, out, d


def test_report_has_every_section_and_fetches_nothing(report):
    code, out, d = report
    assert code == 1  # one input was cut short: the rest analysed, the report written
    page = out.read_text()
    for s in SECTIONS:
        assert f'<h2 id="{s}"' in page, s
    assert "broken.pcap" in page and "problem" in page
    alerts = (d / "alerts.jsonl").read_text().splitlines()
    assert page.count('<tr class="row" id="a') == len(alerts) > 0
    # nothing to fetch: no src/href to anywhere, no external stylesheet or script
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "<link" not in page and "@import" not in page
    assert len(re.findall(r'<rect class="bar"', page)) > 10 and "<polyline" in page and 'class="event"' in page


def test_report_names_the_spoofed_binding_and_the_beacon(report):
    _, out, _ = report
    page = out.read_text()
    bindings = page.split('id="bindings"')[1]
    assert "10.10.0.1" in bindings and "claimed by" in bindings
    beacons = page.split('id="beaconing"')[1].split('id="bindings"')[0]
    assert "10.10.1.13" in beacons and "<svg" in beacons  # the login node's beacon, with its histogram


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    _, out, _ = report
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,3000", out.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    for s in SECTIONS:
        assert f'id="{s}"' in dom, s
    assert dom.count("<svg") >= 5 and dom.count("<polyline") >= 2  # the charts are in the rendered page
