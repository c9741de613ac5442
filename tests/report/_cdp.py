"""A small Chrome DevTools Protocol client for tests: headless Chromium over a WebSocket.

Only what the report test needs: start a browser with a throw-away profile, drive one page
(send commands, collect events), and always stop the process and remove the profile.
Protocol reference: https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

__all__ = ["Browser", "CDPError", "PageCheck", "check_page", "find_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class CDPError(RuntimeError):
    """The browser did not start, did not answer in time, or answered with an error."""


def find_chromium() -> str | None:
    """``$ROBUSTLENS_CHROMIUM`` when set, else the first Chromium/Chrome on ``PATH``, else ``None``."""
    env = os.environ.get("ROBUSTLENS_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Browser:
    """Headless Chromium with remote debugging on a free port, driven through one page.

    Use as a context manager; leaving it kills the browser (its whole process group) and
    deletes its profile folder, whatever happened inside.

    Args:
        binary: the Chromium / Chrome executable.
        timeout: seconds allowed for start-up and for each command or awaited event.
        window: (width, height) of the page's viewport in CSS pixels.
    """

    def __init__(self, binary: str, *, timeout: float = 30.0, window: tuple[int, int] = (1200, 900)) -> None:
        self.binary, self.timeout, self.window = binary, timeout, window
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: websocket.WebSocket | None = None
        self._profile: Path | None = None

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> Browser:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="robustlens-chromium-"))
        log = (self._profile / "stderr.log").open("wb")
        args = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--mute-audio", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self._profile}", f"--window-size={self.window[0]},{self.window[1]}",
                "about:blank"]
        with log:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=log, start_new_session=True)
        port = self._wait_for_port()
        page_url = self._page_socket_url(port)
        self._socket = websocket.create_connection(page_url, timeout=self.timeout, suppress_origin=True)

    def _stderr_tail(self) -> str:
        path = self._profile / "stderr.log" if self._profile else None
        if path is None or not path.is_file():
            return ""
        return path.read_text(errors="replace")[-2000:]

    def _wait_for_port(self) -> int:
        """The port Chromium chose, from the DevToolsActivePort file of its profile."""
        assert self._process is not None and self._profile is not None
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CDPError(f"{self.binary} exited with status {self._process.returncode} during start-up: "
                               f"{self._stderr_tail()}")
            if active.is_file():
                lines = active.read_text().split()
                if lines and lines[0].isdigit():
                    return int(lines[0])
            time.sleep(0.05)
        raise CDPError(f"{self.binary} did not open its debugging port within {self.timeout} s: "
                       f"{self._stderr_tail()}")

    def _page_socket_url(self, port: int) -> str:
        """The WebSocket of the first page target (the ``about:blank`` tab)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as reply:
                targets = json.loads(reply.read())
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise CDPError(f"{self.binary} opened no page target within {self.timeout} s.")

    def close(self) -> None:
        """Close the connection, kill the browser's process group and remove its profile."""
        if self._socket is not None:
            try:
                self._socket.close()
            except (OSError, websocket.WebSocketException):
                pass
            self._socket = None
        if self._process is not None:
            if self._process.poll() is None:
                try:
                    os.killpg(self._process.pid, signal.SIGTERM)  # the group of the browser we started
                    self._process.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(self._process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self._process.wait(timeout=5)
            self._process = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # ----------------------------------------------------------------- protocol
    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._socket is not None, "the browser is not started"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CDPError(f"no answer from the browser within {self.timeout} s.")
        self._socket.settimeout(remaining)
        try:
            message: dict[str, Any] = json.loads(self._socket.recv())
        except websocket.WebSocketTimeoutException:
            raise CDPError(f"no answer from the browser within {self.timeout} s.") from None
        except (websocket.WebSocketConnectionClosedException, ConnectionError) as err:
            raise CDPError(f"the browser closed the connection ({err}): {self._stderr_tail()}") from None
        return message

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run a command and return its ``result``; events that arrive meanwhile go to :attr:`events`."""
        assert self._socket is not None, "the browser is not started"
        self._next_id += 1
        ident = self._next_id
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise CDPError(f"{method} failed: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The ``params`` of the first not yet consumed ``event``, waiting for it if needed."""
        for i, message in enumerate(self.events):
            if message["method"] == event:
                return dict(self.events.pop(i).get("params", {}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("method") == event:
                return dict(message.get("params", {}))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page; a thrown exception is a :class:`CDPError`."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")


@dataclass
class PageCheck:
    """What a page showed in the browser.

    Attributes:
        images: one ``{"src", "complete", "width", "height"}`` per ``<img>`` (``src`` shortened).
        errors: console errors, uncaught exceptions and error log entries, one line each.
        screenshot: the whole page as PNG bytes.
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        """Images that did not load (not complete, or no pixels)."""
        return [im for im in self.images if not im["complete"] or im["width"] <= 0]


_IMAGES_JS = """Array.from(document.images).map(im => ({
    src: im.getAttribute('src') === null ? '' : im.getAttribute('src').slice(0, 60),
    complete: im.complete, width: im.naturalWidth, height: im.naturalHeight}))"""


def _error_lines(events: list[dict[str, Any]]) -> list[str]:
    lines = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params.get("type") == "error":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            lines.append(f"console.error: {text}")
        elif event["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description", "")
            lines.append(f"exception: {details.get('text', '')} {described}".strip())
        elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            lines.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return lines


def check_page(browser: Browser, url: str) -> PageCheck:
    """Open ``url``, wait for its load event, and report its images, errors and a full-page screenshot."""
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable")
    browser.events.clear()  # what about:blank said is not the page's
    navigation = browser.send("Page.navigate", url=url)
    if navigation.get("errorText"):
        raise CDPError(f"cannot open {url}: {navigation['errorText']}")
    browser.wait_for("Page.loadEventFired")
    check = PageCheck(images=list(browser.evaluate(_IMAGES_JS)))
    browser.evaluate("1")  # a round trip: every event sent before it has arrived
    check.errors = _error_lines(browser.events)
    size = browser.send("Page.getLayoutMetrics")["cssContentSize"]
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
    check.screenshot = base64.b64decode(shot["data"])
    return check
