"""Headless Chromium driven over the DevTools protocol, standard library only.

Chromium's `--remote-debugging-pipe` reads protocol messages (JSON, each ended by a NUL byte)
on file descriptor 3 and writes its answers and events on 4: no WebSocket, no driver, no
package. bash puts the two pipes on those numbers (`3<&R 4>&W`; dash takes no descriptor
above 9), so Python needs no `preexec_fn` (unsafe with threads running).

    with Browser(tmp_dir) as browser:
        page = browser.open("http://127.0.0.1:6001/")
        assert page.wait_for_text(["worker-1", "jobs.*"], timeout=30)
        page.screenshot("status.png")
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
]


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def _high(fd):
    """`fd` moved to a descriptor number of 10 or more."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium with a fresh profile in `profile_dir`."""

    def __init__(self, profile_dir, width=1280, height=900):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium not found: apt-get install chromium")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends go above 9 first: `3<&R 4>&W` must not overwrite one with the other.
        to_browser_r, from_browser_w = (_high(fd) for fd in (to_browser_r, from_browser_w))
        args = [binary, *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""

    def call(self, method, params=None, session=None, timeout=30):
        """Send one command and return its result (raises on a protocol error)."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline):
        """The next message (an answer or an event)."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url):
        """A new tab showing `url`, loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        page.evaluate("new Promise(r => document.readyState === 'complete' ? r() : addEventListener('load', r))",
                      await_promise=True)
        return page

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    """One tab."""

    def __init__(self, browser, session):
        self.browser, self.session = browser, session

    def call(self, method, params=None, timeout=30):
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression, await_promise=False, timeout=30):
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": await_promise, "returnByValue": True},
            timeout=timeout + 5,
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, condition, timeout=30):
        """True once the JavaScript expression `condition` is true in the page; False after
        `timeout` seconds. The page is watched with a MutationObserver, not polled."""
        script = """
        new Promise((resolve) => {
          const ok = () => { try { return Boolean(%s); } catch (e) { return false; } };
          if (ok()) return resolve(true);
          const seen = new MutationObserver(() => { if (ok()) { seen.disconnect(); resolve(true); } });
          seen.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
          setTimeout(() => { seen.disconnect(); resolve(ok()); }, %d);
        })""" % (condition, int(timeout * 1000))
        return bool(self.evaluate(script, await_promise=True, timeout=timeout))

    def wait_for_text(self, needles, selector="body", timeout=30):
        """True once the rendered text of `selector` (as a reader sees it: `innerText`, after
        CSS such as `text-transform`) holds every string of `needles`; False after `timeout`."""
        condition = "%s.every((n) => document.querySelector(%s).innerText.includes(n))" % (
            json.dumps(list(needles)), json.dumps(selector))
        return self.wait_for(condition, timeout)

    def text(self, selector="body"):
        return self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
