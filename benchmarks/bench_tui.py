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
from poetwb.tui.app import PoetApp
async def main():
    app = PoetApp()
    async with app.run_test(size=(140, 42)) as pilot:
        await pilot.pause()
        print(f"{time.perf_counter() - t0:.3f}")
asyncio.run(main())
"""

LATENCY = """
import time, asyncio, statistics
from poetwb.tui.app import PoetApp
async def main():
    app = PoetApp()
    async with app.run_test(size=(140, 42)) as pilot:
        await pilot.pause()
        samples = []
        for key in ["f1", "f2", "f3", "f4", "f5"] * 6:
            t = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            samples.append(time.perf_counter() - t)
        print(f"{statistics.median(samples) * 1000:.1f} {max(samples) * 1000:.1f}")
asyncio.run(main())
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "POETWB_HOME": home, "HF_HUB_OFFLINE": "1"}
        paints = [float(subprocess.run([sys.executable, "-c", FIRST_PAINT], env=env, capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for _ in range(3)]
        print(f"first paint (cold process, imports included): median {statistics.median(paints):.2f} s of 3")
        idle = subprocess.run([sys.executable, "-c", LATENCY], env=env, capture_output=True, text=True,
                              check=True).stdout.split()
        print(f"key press -> repaint, idle: median {idle[0]} ms, max {idle[1]} ms")
        subprocess.run([sys.executable, "-m", "poetwb", "train", "--preset", "cpu-quick", "--run-id", "bench",
                        "--detach"], env=env, check=True, capture_output=True)
        time.sleep(20)  # past model loading, into training
        busy = subprocess.run([sys.executable, "-c", LATENCY], env=env, capture_output=True, text=True,
                              check=True).stdout.split()
        print(f"key press -> repaint while training: median {busy[0]} ms, max {busy[1]} ms")
        subprocess.run([sys.executable, "-m", "poetwb", "cancel", "bench"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
