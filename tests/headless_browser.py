"""A real browser for tests: headless Chromium driven over the DevTools protocol on a pipe.

Why not ``chromium --screenshot URL``: the command line takes its picture when the page has
loaded, and Dask's dashboard draws its plots later, once bokeh's websocket session has sent the
document (about a second after the load event here). ``--virtual-time-budget`` does not help: a
websocket is no pending load, so virtual time runs out at once. The dashboard's page frame is
then all the picture shows. Driving the browser lets a test wait (bounded) until the page says
it has drawn, and then take the picture.

``--remote-debugging-pipe`` speaks the protocol as NUL-separated JSON on the browser's file
descriptors 3 (in) and 4 (out), so no websocket client and no open port are needed. The browser
runs in its own process group, which is killed by its id at the end, and its profile folder is
removed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CANDIDATES = ("/usr/bin/chromium-headless-shell", "/usr/bin/chromium")


def find_chromium() -> str | None:
    """The headless Chromium this machine has (Debian's ``chromium-headless-shell`` or ``chromium``), if any."""
    found = [path for path in CANDIDATES if os.access(path, os.X_OK)]
    return found[0] if found else (shutil.which("chromium-headless-shell") or shutil.which("chromium"))


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes of process group ``group``."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


class HeadlessChromium:
    """One headless Chromium with one page: open a URL, wait for a condition, evaluate, take screenshots."""

    def __init__(self, executable: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="hpcbridge-chromium-"))
        self.console: list[str] = []
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # bash (dash takes one-digit descriptors only) puts the pipes on the descriptors the protocol
        # wants (3 and 4), then becomes the browser.
        command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                   "--remote-debugging-pipe", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                   "about:blank"]
        with open(self.profile / "stderr.log", "wb") as log:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$@" 3<&{to_browser_read} 4>&{from_browser_write} '
                                  f'{to_browser_read}<&- {from_browser_write}>&-', "bash", *command],
                pass_fds=(to_browser_read, from_browser_write), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log, start_new_session=True)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})
            self._session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                      session=False)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = True,
             timeout: float = 30) -> dict[str, Any]:
        """Send one protocol command (to the page's session unless ``session`` is false) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and getattr(self, "_session", None):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"Chromium refused {method}: {answer['error']}")
                return answer.get("result", {})
            if answer.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(arg.get("value", arg.get("description", "")))
                                             for arg in answer["params"]["args"]))
            elif answer.get("method") == "Runtime.exceptionThrown":
                details = answer["params"]["exceptionDetails"]
                self.console.append(f"{details.get('text')} {details.get('exception', {}).get('description', '')}")

    def _receive(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer {method} in time")
            if select.select([self._from_browser], [], [], left)[0]:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise EOFError(f"Chromium closed its pipe during {method}: {self.stderr()[-2000:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def open(self, url: str, timeout: float = 30) -> None:
        """Go to ``url`` and wait until its document has loaded."""
        self.call("Page.navigate", {"url": url}, timeout=timeout)
        if not self.wait_for("document.readyState === 'complete'", timeout):
            raise TimeoutError(f"{url} did not finish loading in {timeout} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-like values only)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]!r} failed in the page: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.25) -> Any:
        """Evaluate ``expression`` until it is truthy or ``timeout`` seconds pass; its last value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(interval)
        return value

    def screenshot(self) -> bytes:
        """A PNG of the page's window as it is drawn now."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def stderr(self) -> str:
        path = self.profile / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Kill the browser's process group by its id, wait for it, close the pipes, remove the profile."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for descriptor in (self._to_browser, self._from_browser):
            try:
                os.close(descriptor)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
