"""`poetwb serve`: the workbench in a browser behind an access token — over HTTP, over its websocket, and in a real
headless Chromium driven by Selenium."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PANES = ("Models", "Data", "Train", "Compare", "Poems")
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\x1b\].*?(?:\x07|\x1b\\)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _descendants(pid: int) -> set[int]:
    """Every process below pid (from /proc), so a test can check that stopping the server ends its apps."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class Served:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url
        self.base, self.token = url.split("/?token=")
        self.apps: set[int] = set()

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "poetwb", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


@pytest.fixture
def served() -> Iterator[Served]:
    proc = _start("--port", "0")
    line = proc.stdout.readline()  # printed once the port is bound
    assert line.startswith("poetwb workbench at http://127.0.0.1:"), line + proc.stderr.read()
    server = Served(proc, line.split()[-1])
    try:
        yield server
    finally:
        server.apps |= _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        alive = [p for p in server.apps if Path(f"/proc/{p}").exists()
                 and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
        assert not alive, f"app processes left running after the server stopped: {alive}"


def test_the_page_answers_only_with_the_token(served):
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", served.token)
    for path in ("/", "/?token=", "/?token=" + served.token[:-1] + "x", "/ws", "/ws/nope", "/download/abc"):
        status, body, _ = served.get(path)
        assert status == 403, path
        assert "access token" in body
    status, body, headers = served.get("/?token=" + served.token)
    assert status == 200 and "<html>" in body
    assert f'data-session-websocket-url="ws://127.0.0.1:{served.base.rsplit(":", 1)[1]}/ws/{served.token}"' in body
    assert "fonts.googleapis.com" not in body  # offline: the fonts ship with textual-serve
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert served.get("/static/js/textual.js")[0] == 200  # public code, no token needed


def test_a_websocket_session_with_the_token_gets_the_apps_first_frame(served):
    import aiohttp

    ws_base = served.base.replace("http://", "ws://")

    async def session() -> str:
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(f"{ws_base}/ws/wrong-token")
            assert refused.value.status == 403
            async with client.ws_connect(f"{ws_base}/ws/{served.token}?width=120&height=36") as ws:
                text = ""
                deadline = time.monotonic() + 120
                while not all(p in text for p in PANES):
                    msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
                    assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        text += ANSI.sub("", msg.data.decode("utf-8", "replace"))
                served.apps |= _descendants(served.proc.pid)
                assert served.apps, "no app process behind the session"
                return text

    text = asyncio.run(session())
    assert "poetwb — poetry workbench" in text  # the header: the whole screen, not a fragment


def test_a_busy_port_and_a_bad_port_are_one_line_errors():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "poetwb", "serve", "--port", str(port)], capture_output=True,
                                text=True, env=_env(), timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and result.stderr.count("\n") == 1
    result = subprocess.run([sys.executable, "-m", "poetwb", "serve", "--port", "70000"], capture_output=True,
                            text=True, env=_env(), timeout=60)
    assert result.returncode == 1 and "--port must be in 0..65535" in result.stderr


def test_another_interface_than_loopback_gets_a_warning():
    from poetwb.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("gpu-box")
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes first, then the bind fails cleanly
    result = subprocess.run([sys.executable, "-m", "poetwb", "serve", "--host", "192.0.2.1", "--port", "0"],
                            capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 1
    warning, error = result.stderr.splitlines()
    assert "warning: serving on 192.0.2.1, not only this machine" in warning and "ssh -L" in warning
    assert "cannot listen on 192.0.2.1:0" in error


# --- a real browser -----------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

# Collects what the page's websocket receives (the terminal's byte stream that xterm.js draws on a canvas, which
# has no text in the DOM); installed before the page's own scripts run. The page is otherwise untouched.
RECORD_FRAMES = """
window.__frames = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
  ws.addEventListener('message', (e) => window.__frames.push(
      typeof e.data === 'string' ? e.data : new TextDecoder().decode(e.data)));
  return ws;
};
window.WebSocket.prototype = Native.prototype;
"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Debian's chromium and chromium-driver are not installed (`apt-get install chromium "
                           "chromium-driver`; .ci/run installs them)")
def test_a_real_headless_browser_opens_the_url_sees_the_panes_and_f4_shows_compare(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_FRAMES})
        driver.get(served.url)

        def screen(start: int = 0) -> str:
            return ANSI.sub("", "".join(driver.execute_script("return window.__frames")[start:]))

        WebDriverWait(driver, 120, poll_frequency=0.5).until(lambda d: all(p in screen() for p in PANES))
        served.apps |= _descendants(served.proc.pid)
        driver.save_screenshot(str(tmp_path / "models.png"))
        WebDriverWait(driver, 120, poll_frequency=0.5).until(  # the model table has its rows: the app is idle
            lambda d: "SmolLM2" in screen())
        seen = len(driver.execute_script("return window.__frames"))
        keys = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")  # where xterm.js takes keys
        driver.execute_script("arguments[0].focus()", keys)
        keys.send_keys(Keys.F4)
        WebDriverWait(driver, 60, poll_frequency=0.5).until(
            lambda d: "prompt set" in screen(seen) and "Generate" in screen(seen) and "blind A/B" in screen(seen))
        driver.save_screenshot(str(tmp_path / "compare.png"))
        assert (tmp_path / "compare.png").stat().st_size > 10_000
    finally:
        driver.quit()
