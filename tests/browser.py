"""A small driver for Debian's headless chromium over the DevTools protocol (tests only).

Pages are driven the way a user would: real mouse clicks and key presses dispatched through
`Input.*`, reloads through `Page.reload`, downloads into a folder. Evaluating JavaScript is used
only to locate elements and to read the page back.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


def chromium_binary() -> str:
    """Path of chromium; skips the test (fails under CI=true) when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium not installed (`make browser` installs Debian's chromium)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """One headless chromium with its own profile folder and one page."""

    def __init__(self, profile: Path | None = None, width: int = 1400, height: int = 1000):
        from websockets.sync.client import connect

        self._own_profile = profile is None
        self.profile = Path(profile or tempfile.mkdtemp(prefix="feyntune-chromium-"))
        self.proc = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port()
        page = self._page_target(port)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._next_id = 0
        self.events: list[dict] = []
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("DOMStorage.enable")

    def _devtools_port(self) -> int:
        """Chromium writes the port it chose into <profile>/DevToolsActivePort."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            try:
                first = marker.read_text().splitlines()[0]
                return int(first)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port within 60 s")

    @staticmethod
    def _page_target(port: int) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.1)
        raise RuntimeError("no page target in chromium")

    # -- protocol ---------------------------------------------------------------------------
    def send(self, method: str, **params) -> dict:
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(index)
            try:
                message = json.loads(self.ws.recv(timeout=max(0.05, deadline - time.monotonic())))
            except TimeoutError:
                break
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"no {method} within {timeout} s")

    # -- what tests use ----------------------------------------------------------------------
    def open(self, path: Path) -> None:
        url = Path(path).resolve().as_uri()
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        # a load event of the blank start page can arrive late: wait for this document itself
        self.wait_until(lambda: self.js(f"location.href === {json.dumps(url)} && "
                                        "document.readyState === 'complete'"), what=f"{url} loaded")

    def reload(self) -> None:
        self.js("window.__feyntuneBeforeReload = true")
        self.events.clear()
        self.send("Page.reload", ignoreCache=True)
        self.wait_event("Page.loadEventFired")
        # a stale load event must not pass for the new document: wait until the old one is gone
        self.wait_until(lambda: self.js("!window.__feyntuneBeforeReload && "
                                        "document.readyState === 'complete'"), what="page reloaded")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def local_storage(self) -> dict[str, str]:
        """The page origin's localStorage as DevTools sees it."""
        key = self.send("Storage.getStorageKeyForFrame",
                        frameId=self.send("Page.getFrameTree")["frameTree"]["frame"]["id"])
        entries = self.send("DOMStorage.getDOMStorageItems",
                            storageId={"storageKey": key["storageKey"], "isLocalStorage": True})
        return dict(entries["entries"])

    def wait_until(self, condition, timeout: float = 10, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real left click at the centre of the first element matching `selector`."""
        box = self.js(
            "(() => { const e = document.querySelector(" + json.dumps(selector) + ");"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise AssertionError(f"no element {selector!r} on the page")
        x, y = box
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def type_text(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.js("[document.documentElement.scrollWidth,"
                           " document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def allow_downloads(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        target = str(Path(folder).resolve())
        try:
            self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=target,
                      eventsEnabled=True)
        except RuntimeError:  # older chromium: only the page-level (deprecated) command
            self.send("Page.setDownloadBehavior", behavior="allow", downloadPath=target)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead socket is not a test failure
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._own_profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
