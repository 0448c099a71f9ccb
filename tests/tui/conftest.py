"""TUI fixtures: an app factory on the test's data dir, and a helper that waits for workers and timers."""

from __future__ import annotations

import asyncio
import time

import pytest


@pytest.fixture
def settle():
    async def wait(pilot, timeout: float = 120.0, group: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await pilot.pause()
            busy = [w for w in pilot.app.workers if w.is_running and (group is None or w.group == group)]
            if not busy:
                await pilot.pause()
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"workers still running: {busy}")

    return wait


async def wait_until(pilot, predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.2)
    raise AssertionError("timed out waiting for the UI")


@pytest.fixture
def until():
    return wait_until


def _screen_lines(app) -> list[str]:
    """The screen as text lines, read back from the app's SVG screenshot (what a user sees, clipping included)."""
    import html
    import re

    svg = app.export_screenshot()
    width = float(re.search(r'textLength="([\d.]+)"[^>]*>[^<]</text>', svg)[1])  # one cell
    rows: dict[int, dict[int, str]] = {}
    pattern = (r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
               r'clip-path="url\(#[\w-]+-line-(\d+)\)">(.*?)</text>')
    for x, line, text in re.findall(pattern, svg):
        col = round(float(x) / width)
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            rows.setdefault(int(line), {})[col + i] = ch
    return ["".join(cells.get(c, " ") for c in range(max(cells) + 1)) for _, cells in sorted(rows.items())]


@pytest.fixture
def screen_text():
    """A callable: the app's screen as one string of lines."""
    return lambda app: "\n".join(_screen_lines(app))
