"""Workbench responsiveness: time to first paint (cold process, imports included) and key-press-to-repaint
latency while a cpu-quick job trains in the background. Prints figures; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_tui.py   (uses a throwaway POETWB_HOME)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

FIRST_PAINT = """
import time, asyncio
t0 = time.perf_counter()
from textual.drivers.headless_driver import HeadlessDriver
marks = {}
write = HeadlessDriver.write
def first_frame(self, data):  # the first frame the driver writes is what a user would see first
    if data and "paint" not in marks:
        marks["paint"] = time.perf_counter() - t0
    return write(self, data)
HeadlessDriver.write = first_frame
from poetwb.tui.app import PoetApp
async def main():
    async with PoetApp().run_test(size=(140, 42)) as pilot:
        await pilot.pause()
        marks["settled"] = time.perf_counter() - t0
    print(f"{marks['paint']:.3f} {marks['settled']:.3f}")
asyncio.run(main())
"""

LATENCY = """
import time, asyncio, statistics
from poetwb.tui.app import PoetApp
async def main():
    app = PoetApp()
    app.animation_level = "none"  # the tab underline's 0.3 s slide is by design, not latency
    async with app.run_test(size=(140, 42)) as pilot:
        await pilot.pause()
        await asyncio.sleep(2)
        tabs, typing = [], []
        for key in ["f1", "f2", "f3", "f4", "f5"] * 4:
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            tabs.append(time.perf_counter() - t)
        app.action_show("compare")
        await pilot.pause()
        app.query_one("#compare-prompt").focus()
        for ch in "the sea is blue":
            t = time.perf_counter()
            await pilot.press(ch if ch != " " else "space")
            await pilot.pause()
            typing.append(time.perf_counter() - t)
        ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} {max(xs) * 1000:.0f}"
        print(ms(tabs), ms(typing))
asyncio.run(main())
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "POETWB_HOME": home, "HF_HUB_OFFLINE": "1"}
        runs = [subprocess.run([sys.executable, "-c", FIRST_PAINT], env=env, capture_output=True, text=True,
                               check=True).stdout.split() for _ in range(3)]
        paint = statistics.median(float(r[0]) for r in runs)
        settled = statistics.median(float(r[1]) for r in runs)
        print(f"first paint (cold process, imports included): median {paint:.2f} s; all panes mounted and "
              f"idle: {settled:.2f} s (3 runs)")
        idle = subprocess.run([sys.executable, "-c", LATENCY], env=env, capture_output=True, text=True,
                              check=True).stdout.split()
        print(f"idle: pane switch median {idle[0]} ms (max {idle[1]}), typing median {idle[2]} ms (max {idle[3]})")
        subprocess.run([sys.executable, "-m", "poetwb", "train", "--preset", "cpu-quick", "--run-id", "bench",
                        "--detach"], env=env, check=True, capture_output=True)
        time.sleep(20)  # past model loading, into training
        busy = subprocess.run([sys.executable, "-c", LATENCY], env=env, capture_output=True, text=True,
                              check=True).stdout.split()
        print(f"while training: pane switch median {busy[0]} ms (max {busy[1]}), typing median {busy[2]} ms "
              f"(max {busy[3]})")
        subprocess.run([sys.executable, "-m", "poetwb", "cancel", "bench"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
