"""How each pane looks (SVG snapshots; update with `pytest --snapshot-update` after a deliberate change)."""

from __future__ import annotations

import pytest

from poetwb.tui.app import PoetApp

SIZE = (140, 42)


@pytest.mark.parametrize("pane", ["models", "data", "train", "compare", "poems"])
def test_pane_snapshot(pane, snap_compare, settle):
    async def before(pilot) -> None:
        await pilot.pause(0.5)  # past the catalogue's start-up timer and the lazily mounted panes
        await settle(pilot)
        pilot.app.action_show(pane)
        await pilot.pause()
        for box in pilot.app.query("Input"):  # focus lands in an Input on some panes: a blinking cursor is flaky
            box.cursor_blink = False
        await settle(pilot)

    assert snap_compare(PoetApp(), terminal_size=SIZE, run_before=before)
