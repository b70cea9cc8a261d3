"""A real headless Chromium driven over the DevTools protocol through a pipe (no library, no download).

`Browser` starts the system Chromium (Debian's `chromium`; `$SBRBENCH_CHROMIUM` names another)
with `--remote-debugging-pipe`: commands go in on its fd 3 and answers come out on its fd 4, as
NUL-terminated JSON, the transport Playwright and Puppeteer use. It opens one page, collects its
console errors and uncaught exceptions, evaluates JavaScript, clicks with real mouse events and
takes PNG screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: `$SBRBENCH_CHROMIUM`, else the first of CANDIDATES on PATH."""
    env = os.environ.get("SBRBENCH_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser answered with an error, died or did not answer in time."""


class Browser:
    """One headless Chromium with one page (see the module docstring). Use as a context manager."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 900, timeout_s: float = 20.0) -> None:
        self.timeout_s = timeout_s
        self.width, self.height = width, height
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self._buf = b""
        self._profile = tempfile.mkdtemp(prefix="sbrbench-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        self._log = open(Path(self._profile) / "stderr.log", "wb")  # noqa: SIM115
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", f"--window-size={width},{height}",
                "about:blank"]
        actions = [(os.POSIX_SPAWN_DUP2, cmd_r, 3), (os.POSIX_SPAWN_DUP2, resp_w, 4),
                   (os.POSIX_SPAWN_DUP2, self._log.fileno(), 1), (os.POSIX_SPAWN_DUP2, self._log.fileno(), 2)]
        devnull = os.open(os.devnull, os.O_RDONLY)
        actions.append((os.POSIX_SPAWN_DUP2, devnull, 0))
        try:
            self.pid = os.posix_spawn(executable, args, os.environ, file_actions=actions)
        finally:
            for fd in (cmd_r, resp_w, devnull):
                os.close(fd)
        self.session: str | None = None

    # ---- transport -----------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from Chromium within {self.timeout_s:g} s; log: {self.log_tail()}")
            ready, _, _ = select.select([self._resp_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._resp_r, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe; log: {self.log_tail()}")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one command (to the page's session unless `session=False`) and return its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        """The first event `method` (already received or next to come)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            ev = self._read_message(deadline)
            if "method" in ev:
                self.events.append(ev)

    # ---- the page ------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Open `url` in a fresh page and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 5.0) -> bool:
        """Whether a JavaScript expression becomes truthy within `timeout_s` (polled in the page)."""
        return bool(self.evaluate(
            f"new Promise(done => {{ const t0 = Date.now(); (function poll() {{ if ({expression}) done(true); "
            f"else if (Date.now() - t0 > {int(timeout_s * 1000)}) done(false); else setTimeout(poll, 25); }})(); }})"))

    def click(self, selector: str) -> None:
        """A real left click (mouse pressed and released) at the centre of the first match of `selector`."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries seen so far."""
        out = []
        for ev in self.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}".strip())
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log: {e.get('text')} {e.get('url', '')}".strip())
        return out

    def screenshot(self, path: str | Path, *, max_height: int = 3000) -> Path:
        """A PNG of the page from the top (full width, at most `max_height` CSS pixels)."""
        height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
        data = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}})["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def log_tail(self) -> str:
        try:
            return (Path(self._profile) / "stderr.log").read_text(errors="replace")[-500:].replace("\n", " | ")
        except OSError:
            return ""

    # ---- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (BrowserError, OSError):
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        for fd in (self._cmd_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
