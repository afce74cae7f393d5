"""Drive headless Chromium through its DevTools protocol, as a person would with a mouse.

    python3 browser.py click URL SELECTOR
        open URL, click the element SELECTOR (a CSS selector) and wait for the page that
        follows to load; prints that page's HTML.
    python3 browser.py download URL SELECTOR DIR
        open URL, click SELECTOR, and wait for the download it starts to complete into DIR;
        prints the downloaded file's path.

Chromium is $LIFEBOAT_TEST_CHROMIUM (installed by scripts/test-services.sh); the protocol
is spoken over a WebSocket with websocket-client (also installed there). Exit 1 with a
message on stderr when the element is missing or nothing happens within 60 s.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import websocket

TIMEOUT = 60


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="lifeboat-browser-")
        chromium = os.environ.get("LIFEBOAT_TEST_CHROMIUM", "chromium")
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with open(port_file) as f:
                    port, path = f.read().split("\n")[:2]
                if port and path:
                    break
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                fail("Chromium did not open its DevTools port")
            time.sleep(0.05)
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{path}", timeout=TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)

    def call(self, method, params=None, session=False):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    fail(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, matches=lambda params: True):
        """The first event `method` (kept or to come) whose params match."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and matches(event.get("params", {})):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                fail(f"no {method} within {TIMEOUT} s")
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url):
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def click(self, selector):
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" if (!e) return false; e.click(); return true; }})()")
        if not found:
            fail(f"no element {selector} on the page:\n{self.html()}")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True}, session=True)
        return result.get("result", {}).get("value")

    def html(self):
        return self.evaluate("document.documentElement.outerHTML")

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("click", "download"):
        fail(__doc__)
    command, url, selector = sys.argv[1:4]
    browser = Browser()
    try:
        if command == "download":
            directory = os.path.abspath(sys.argv[4])
            os.makedirs(directory, exist_ok=True)
            browser.call("Browser.setDownloadBehavior",
                         {"behavior": "allow", "downloadPath": directory,
                          "eventsEnabled": True})
        browser.open(url)
        browser.events.clear()
        browser.click(selector)
        if command == "click":
            browser.wait_for("Page.loadEventFired")
            print(browser.html())
        else:
            begun = browser.wait_for("Browser.downloadWillBegin")
            guid = begun["params"]["guid"]
            done = browser.wait_for(
                "Browser.downloadProgress",
                lambda p: p.get("guid") == guid and p.get("state") in ("completed", "canceled"))
            if done["params"]["state"] != "completed":
                fail("the download was canceled")
            path = os.path.join(directory, begun["params"]["suggestedFilename"])
            if not os.path.exists(path):
                fail(f"the download completed but {path} is not there")
            print(path)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
