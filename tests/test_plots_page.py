"""The `dvc plots show` page, opened in headless Chromium with networking off, shows every chart.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe), so the test
needs Debian's `chromium` and nothing else: no driver package, no port. Outside CI a missing
Chromium or an unbuilt page template skips with the command that fixes it; in CI ($CI set) it fails.
"""

import base64
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
BUILD = [sys.executable, str(ROOT / "tools" / "build_plots_template.py")]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"  # .dvc/config: plots.html_template
SETUP = "npm ci --prefix tools && python tools/build_plots_template.py"
CHROMIUM = shutil.which("chromium")


def need(ok, message: str) -> None:
    if not ok:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)


class Chromium:
    """Headless Chromium; `send` runs one DevTools command, `events` keeps every event seen."""

    def __init__(self, profile: Path, log: Path):
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        # In the child, put its pipe ends on fds 3 and 4, where --remote-debugging-pipe reads and
        # writes. from_browser is never 3 (pipes take the lowest free fds, to_browser came first),
        # so the first dup2 cannot clobber it.
        def on_fds_3_and_4():
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.log = log
        self._log = log.open("wb")

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1200,900",
                "--remote-debugging-pipe",
                # No name resolves, so nothing the browser itself does can reach a network either.
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=on_fds_3_and_4,
            pass_fds=(3, 4),
            start_new_session=True,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.session, self.events = b"", 0, None, []

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc.wait()}), see {self.log}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self._id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive(deadline))

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its own session: this ends its helper processes too
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)
        self._log.close()


# Runs in the page once it has loaded, given the ids of the vega charts' <div>s. A chart counts
# as drawn when its <svg> or <canvas> has marks. A canvas keeps no marks in the DOM, so there they
# are counted as coloured pixels: vega draws axes, grid and text in greys, data (lines, points,
# bars) in colour.
CHECK_PAGE = """async (ids, expected) => {
  const charts = ids.map(id => document.getElementById(id));
  const marks = div => {
    if (!div) return 0;
    const svg = div.querySelector('svg.marks'), canvas = div.querySelector('canvas.marks');
    if (svg) return svg.querySelectorAll('.role-mark > *').length;
    if (!canvas || !canvas.width || !canvas.height) return 0;
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) {
      const [r, g, b, a] = px.subarray(i, i + 4);
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
    }
    return n;
  };
  // vegaEmbed draws asynchronously after the load event: give every chart expected to draw up to 30 s
  // (not the empty charts of cells not made yet: waiting for them would always take the 30 s).
  const waited = expected.map(id => document.getElementById(id));
  for (let t = 0; t < 300 && !waited.every(div => marks(div) > 0); t++)
    await new Promise(resolve => setTimeout(resolve, 100));
  await new Promise(resolve => setTimeout(resolve, 1000));  // an error the empty charts throw late is caught too
  return {
    charts: ids.map((id, i) => ({id, marks: marks(charts[i])})),
    images: [...document.images].map(img => ({src: img.getAttribute('src'), width: img.naturalWidth})),
  };
}"""


def console_errors(events: list) -> list[str]:
    """Uncaught exceptions, console.error/assert calls, and browser errors (failed loads among them).

    Nothing is let through: the template declares an empty icon, so no favicon.ico load fails."""
    errors = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append(d.get("exception", {}).get("description") or d["text"])
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry']['text']} {p['entry'].get('url', '')}".strip())
    return errors


def open_offline(page: Path, tmp_path: Path, screenshot: Path, drawn=lambda chart_id: True) -> tuple[dict, list[str]]:
    """Load `page` with networking off; the check's result and the console's errors. Saves a full-page PNG.
    `drawn(id)`: whether a chart is expected to draw (the check waits for those)."""
    browser = Chromium(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        browser.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable")
        browser.send(
            "Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1
        )
        browser.send("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        # dvc-render writes each vega chart as <div id=ID> with a script calling vegaEmbed('#ID', spec);
        # vega replaces that script when it draws, so the ids are read from the file, not the DOM.
        ids = re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8"))
        expected = [i for i in ids if drawn(i)]
        result = browser.send(
            "Runtime.evaluate",
            expression=f"({CHECK_PAGE})({json.dumps(ids)}, {json.dumps(expected)})",
            awaitPromise=True,
            returnByValue=True,
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        size = browser.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = browser.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return result["result"]["value"], console_errors(browser.events)
    finally:
        browser.close()


def test_plots_template_is_built_from_the_pinned_packages():
    need((ROOT / "tools" / "node_modules").is_dir(), f"vega is not installed: {SETUP}")
    r = subprocess.run([*BUILD, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# `plots diff` fills the same template: HEAD against the workspace, every chart and picture twice.
@pytest.mark.parametrize("command", [["show"], ["diff", "HEAD"]], ids=["show", "diff"])
def test_plots_page_renders_offline_in_chromium(tmp_path, command):
    need(CHROMIUM, "Chromium is not installed: apt-get install -y chromium")
    need(TEMPLATE.is_file(), f"the plots page template is not built: {SETUP}")
    out = tmp_path / "dvc_plots"
    r = subprocess.run([DVC, "plots", *command, "-o", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    screenshot = tmp_path / "plots_page.png"

    # A cell whose pictures are not made yet (a recipe added before its runs) is an empty chart;
    # every other chart must draw.
    def not_made(chart_id: str) -> bool:
        return chart_id.startswith("plots_") and not (ROOT / "plots" / chart_id.removeprefix("plots_")).exists()

    page, errors = open_offline(out / "index.html", tmp_path, screenshot, drawn=lambda i: not not_made(i))

    print(f"screenshot: {screenshot}")
    if (docs := os.environ.get("PLOTS_PAGE_SCREENSHOT")) and command == ["show"]:  # README's: the top
        from PIL import Image  # Pillow comes with matplotlib

        with Image.open(screenshot) as image:
            image.crop((0, 0, image.width, min(image.height, 2050))).save(docs, optimize=True)
    problems = [f"{len(page['charts'])} vega charts on the page"] if not page["charts"] else []

    problems += [
        f"vega chart {c['id']} drew nothing" for c in page["charts"] if not c["marks"] and not not_made(c["id"])
    ]
    problems += [f"{len(page['images'])} images on the page"] if not page["images"] else []
    problems += [f"image {i['src']} did not load" for i in page["images"] if not i["width"]]
    problems += [f"console error: {e}" for e in errors]
    assert not problems, f"screenshot: {screenshot}\n" + "\n".join(problems)
