"""report.html in a real browser (headless Chromium): every image decodes, nothing is loaded, no console errors.

Chromium is Debian's ``chromium`` (``make chromium`` installs it where apt is available); without it
this test skips and says why. A screenshot is kept at ``test-outputs/report.png`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_run import write_synthetic_run

from anomaly_probe.reports import write_report
from anomaly_probe.reports.template import CSP

OUTPUTS = Path(__file__).resolve().parents[1] / "test-outputs"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# Injected into a copy of the page (the report itself has no scripts): records CSP violations and
# resource errors from the start, and after load how many images failed to decode.
PROBE = """<script>
window.__probe = {violations: [], errors: []};
document.addEventListener("securitypolicyviolation", e => window.__probe.violations.push(e.blockedURI));
window.addEventListener("error",
  e => window.__probe.errors.push(String(e.target && (e.target.src || e.message))), true);
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  window.__probe.images = imgs.length;
  window.__probe.broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  window.__probe.not_data = imgs.filter(i => !i.src.startsWith("data:image/png;base64,")).map(i => i.src);
  document.documentElement.setAttribute("data-probe", JSON.stringify(window.__probe));
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def chromium():
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: `make chromium` or `apt-get install chromium`); "
                    "the browser test needs it, nothing else does")
    return exe


def _run(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_in_headless_chromium(chromium, tmp_path):
    run = write_synthetic_run(tmp_path / "run", lengths=(300, 600), samples=2)
    report = write_report(run)
    html = report.read_text(encoding="utf-8")
    n_images = html.count("<img ")
    assert n_images >= 10

    probe_page = tmp_path / "probe.html"
    probed = html.replace(CSP.replace("'", "&#39;"), CSP.replace("'", "&#39;") + "; script-src &#39;unsafe-inline&#39;")
    probe_page.write_text(probed.replace('<meta charset="utf-8">', '<meta charset="utf-8">\n' + PROBE, 1))
    proc = _run(chromium, tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                "--dump-dom", probe_page.as_uri())
    match = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert match, f"the page did not finish loading in chromium (rc {proc.returncode}): {proc.stderr[-1500:]}"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["images"] == n_images
    assert probe["broken"] == [] and probe["not_data"] == []
    assert probe["violations"] == [] and probe["errors"] == []
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console

    OUTPUTS.mkdir(exist_ok=True)
    shot = OUTPUTS / "report.png"
    shot.unlink(missing_ok=True)
    proc = _run(chromium, tmp_path / "profile2", "--window-size=1280,2600", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG"), proc.stderr[-1500:]
    shutil.copyfile(report, OUTPUTS / "report.html")
