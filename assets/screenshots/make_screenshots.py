"""Render the README's SVG screenshots of each pane from a data dir that has a finished run and a saved poem.

Run: POETWB_HOME=<home with a finished run> HF_HUB_OFFLINE=1 python assets/screenshots/make_screenshots.py [PANE …]
(no PANE: all five; the Compare shot asks base and the newest run for a sonnet)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from poetwb.tui.app import PoetApp

HERE = Path(__file__).parent


async def idle(pilot) -> None:
    await pilot.pause(0.5)  # past the catalogue's start-up timer and the lazily mounted panes
    for _ in range(1200):
        await pilot.pause()
        if not [w for w in pilot.app.workers if w.is_running]:
            return
        await asyncio.sleep(0.1)


async def main(panes: set[str]) -> None:
    app = PoetApp()
    async with app.run_test(size=(150, 46)) as pilot:
        await idle(pilot)
        if "models" in panes:
            app.save_screenshot(str(HERE / "models.svg"))
        if "data" in panes:
            app.action_show("data")
            await pilot.pause()
            app.query_one("#preview").press()
            await idle(pilot)
            app.save_screenshot(str(HERE / "data.svg"))
        if "train" in panes:
            app.action_show("train")
            await pilot.pause()
            runs_table = app.query_one("#runs-table")
            if runs_table.row_count:
                app.query_one("#train-pane").attach(str(runs_table.coordinate_to_cell_key((0, 0)).row_key.value))
            await pilot.pause(1)
            app.save_screenshot(str(HERE / "train.svg"))
        if "compare" in panes:
            app.action_show("compare")
            await pilot.pause()
            app.query_one("#compare-prompt").value = "Write a sonnet about the sea and the sky"
            app.query_one("#instruct").value = True
            app.query_one("#form").value = "sonnet"
            app.query_one("#seed").value = "7"
            app.query_one("#generate").press()
            await idle(pilot)
            app.save_screenshot(str(HERE / "compare.svg"))
            app.query_one("#compare-pane").action_save("tuned")
        if "poems" in panes:
            app.action_show("poems")
            await pilot.pause(1)
            app.save_screenshot(str(HERE / "poems.svg"))


if __name__ == "__main__":
    asyncio.run(main(set(sys.argv[1:]) or {"models", "data", "train", "compare", "poems"}))
