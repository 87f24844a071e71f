"""Headless Chromium over the DevTools protocol on --remote-debugging-pipe: no driver, no extra package.

`DevTools` is the browser (the same API test_e2e_downloaders.py's own copy has: `call`, `event`,
`close`), plus flat sessions: `open_page(url)` returns a `Page` whose `evaluate` runs JavaScript in
the tab and whose `wait_for` waits, inside the page, for a JS condition to hold (a MutationObserver
re-checks it on every DOM change; no polling from here, no sleeps).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


class DevTools:
    """Headless Chromium driven over the DevTools protocol on --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, exe: str, profile: Path, log: Path, *, window: tuple[int, int] = (1280, 900)) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-default-browser-check", "--hide-scrollbars",
                 f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        # bash moves our pipe ends to the fds Chromium expects, then becomes Chromium; through fds 98/99
        # first, because a pipe end may itself be fd 3 or 4 (a test's listening socket took a low fd)
        shim = (f'exec 98<&{cmd_r} 99>&{out_w} {cmd_r}<&- {out_w}>&- && '
                'exec "$@" 3<&98 4>&99 98<&- 99>&-')
        self.log = log
        with open(log, "wb") as logf:
            self.proc = subprocess.Popen(["bash", "-c", shim, "chromium", exe, *flags, "about:blank"],
                                         pass_fds=(cmd_r, out_w), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._out_r], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"Chromium said nothing in time; its log:\n{self.log_tail()}")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise AssertionError(f"Chromium exited ({self.proc.poll()}); its log:\n{self.log_tail()}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        rec: dict[str, Any] = json.loads(msg)
        return rec

    def call(self, method: str, timeout: float = 30, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to the browser, or to a page's flat session) and return its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            rec = self._recv(deadline)
            if rec.get("id") == self._id:
                assert "error" not in rec, (method, rec)
                result: dict[str, Any] = rec["result"]
                return result
            if "method" in rec:
                self._events.append(rec)

    def event(self, method: str, pred: Callable[[dict[str, Any]], bool] = lambda p: True,
              timeout: float = 30) -> dict[str, Any]:
        """The params of the next `method` event whose params satisfy `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            while self._events:
                msg = self._events.pop(0)
                if msg.get("method") == method and pred(msg["params"]):
                    params: dict[str, Any] = msg["params"]
                    return params
            msg = self._recv(deadline)
            if "method" in msg:
                self._events.append(msg)

    def open_page(self, url: str = "about:blank") -> Page:
        """A new tab attached over a flat session, with Page and Runtime events enabled, loaded at `url`."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, target, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        if url != "about:blank":
            page.goto(url)
        return page

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        """Ask Chromium to quit, then kill whatever is left of its process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(self._cmd_w, json.dumps({"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers (zygote, crashpad) outliving the browser
        os.close(self._cmd_w)
        os.close(self._out_r)


_WAIT = """(() => new Promise((resolve, reject) => {
  const cond = () => { try { return (%s); } catch (e) { return undefined; } };
  const first = cond();
  if (first) { resolve(first); return; }
  const obs = new MutationObserver(() => {
    const v = cond();
    if (v) { obs.disconnect(); clearTimeout(t); resolve(v); }
  });
  obs.observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  const t = setTimeout(() => { obs.disconnect(); reject(new Error("timed out")); }, %d);
}))()"""


class Page:
    """One tab: JavaScript in it, waits on its DOM, its screenshots."""

    def __init__(self, browser: DevTools, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, timeout, session=self.session, **params)

    def event(self, method: str, pred: Callable[[dict[str, Any]], bool] = lambda p: True,
              timeout: float = 30) -> dict[str, Any]:
        """The next `method` event of this tab."""
        deadline = time.monotonic() + timeout
        while True:
            while self.browser._events:
                msg = self.browser._events.pop(0)
                if msg.get("sessionId") == self.session and msg.get("method") == method and pred(msg["params"]):
                    params: dict[str, Any] = msg["params"]
                    return params
            msg = self.browser._recv(deadline)
            if "method" in msg:
                self.browser._events.append(msg)

    def goto(self, url: str, timeout: float = 30) -> dict[str, Any]:
        """Navigate and wait for the load event."""
        result = self.call("Page.navigate", url=url)
        assert not result.get("errorText"), result
        self.event("Page.loadEventFired", timeout=timeout)
        return result

    def evaluate(self, expression: str, timeout: float = 30, *, user_gesture: bool = False) -> Any:
        """The JSON value of `expression` (awaited if it is a promise); a JS exception fails the test."""
        r = self.call("Runtime.evaluate", timeout + 5, expression=expression, returnByValue=True, awaitPromise=True,
                      userGesture=user_gesture)
        if "exceptionDetails" in r:
            details = r["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise AssertionError(f"JavaScript failed: {text}\n  in: {expression[:500]}")
        return r["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 10) -> Any:
        """Wait until the JS expression `condition` is truthy in the page (re-checked on every DOM change)."""
        try:
            return self.evaluate(_WAIT % (condition, int(timeout * 1000)), timeout)
        except AssertionError as exc:
            raise AssertionError(f"page condition not met within {timeout}s: {condition}\n{exc}") from None

    def click(self, selector: str) -> None:
        """A real mouse click (Input.dispatchMouseEvent) in the middle of the element `selector` matches."""
        box = self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, path: Path, *, width: int = 1280) -> bytes:
        """A PNG of the whole page (not just the viewport) written to `path`."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        try:
            shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            data = base64.b64decode(shot["data"])
        finally:
            self.call("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data


def chromium_exe() -> str:
    """Chromium's path; missing, it fails the test (CI must not skip browser tests silently)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (tests/run.sh installs it)")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium with a fresh profile, closed (process group killed) after the test."""
    b = DevTools(chromium_exe(), tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        yield b
    finally:
        b.close()
