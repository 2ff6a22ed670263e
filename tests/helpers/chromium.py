"""A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol, standard library only.

`--remote-debugging-pipe` makes Chromium read protocol commands from fd 3 and write replies to fd 4
(NUL-separated JSON), so no websocket client and no browser-automation package are needed. Tests use
it to click and read the MLflow UI as a user would: `dump-dom` alone cannot expand a parent run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

BINARY = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1600,1000",
    "--remote-debugging-pipe",
    # sandboxed iframes (MLflow shows HTML artifacts in one) stay in the page's process, so the test
    # can read them through the page's frame tree
    "--disable-site-isolation-trials",
    "--disable-features=IsolateOrigins,site-per-process",
]


class Browser:
    """One Chromium with a fresh profile; `with Browser(tmp) as b: b.open(url); b.js(...)`."""

    def __init__(self, profile: Path) -> None:
        assert BINARY, "chromium is not installed (apt-get install -y chromium)"
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 (commands) and 4 (replies)
            os.dup2(to_chrome_r, 63)
            os.dup2(from_chrome_w, 64)
            os.dup2(63, 3)
            os.dup2(64, 4)

        self.proc = subprocess.Popen(
            [BINARY, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.session: str | None = None

    def __enter__(self) -> Browser:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send one command (to the page's session once attached) and return its result."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def js(self, expression: str, context: int | None = None) -> Any:
        """Evaluate (awaiting a promise) in the page, or in a frame's context; the value as JSON."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context is not None:
            params["contextId"] = context
        result = self.call("Runtime.evaluate", params, timeout=90)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_text(self, *texts: str, timeout: float = 60) -> str:
        """The page's visible text once it holds every one of `texts` (the MLflow UI renders late)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.js("document.body ? document.body.innerText : ''") or ""
            if all(t in text for t in texts):
                return text
            time.sleep(0.5)
        raise AssertionError(f"{texts} not on the page within {timeout}s; it shows:\n{text[:3000]}")

    def frames(self) -> list[dict[str, Any]]:
        """Every frame of the page (url, name, id), the iframes MLflow renders artifacts in included."""
        out = []

        def walk(node: dict[str, Any]) -> None:
            out.append(node["frame"])
            for child in node.get("childFrames", []):
                walk(child)

        walk(self.call("Page.getFrameTree")["frameTree"])
        return out

    def frame_context(self, frame_id: str) -> int:
        """A script context inside that frame (works for sandboxed srcdoc frames too)."""
        return self.call("Page.createIsolatedWorld", {"frameId": frame_id, "worldName": "test"})[
            "executionContextId"
        ]

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
