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
