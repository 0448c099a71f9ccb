"""Generation beside a training job, in one run: the same columns (base + a run's adapter, same prompt and seed)
decoded beside a real `poetwb train` job (the poet preset on the bundled model, as the Train pane starts one by
default) on every thread as before, and on the threads core/cpu_share.py leaves free; and alone, with the job
paused (SIGSTOP), legs in turns. One process per engine (llama.cpp's threads in the same process change how torch's
wait), one training job for all. Prints tokens/s per column for each leg and engine, and the ratios. Asserts
nothing. The training run it starts is cancelled and deleted at the end.

Run: HF_HUB_OFFLINE=1 POETWB_HOME=... python benchmarks/bench_busy.py RUN_ID [--rounds 3] [--tokens 16]
     [--preset poet] [--engines torch,llama.cpp]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_sweep import cpu_header

PROMPT = "The sea is blue, the sky is red"
LEGS = ("alone (job paused)", "beside, every thread (before)", "beside, free threads (now)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--engines", default="torch,llama.cpp")
    parser.add_argument("--preset", default="poet", help="the training job's preset (the Train pane's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(cpu_header(), flush=True)

    from poetwb.core import runs

    run_id = f"bench-busy-{os.getpid()}"
    job = subprocess.run([sys.executable, "-m", "poetwb", "train", "--preset", args.preset, "--max-steps", "400",
                          "--run-id", run_id, "--detach", "--json"], capture_output=True, text=True, check=True)
    pid = json.loads(job.stdout)["pid"]
    print(f"training job {run_id} ({args.preset} preset) started, pid {pid}; waiting for its first step", flush=True)
    try:
        folder = runs.open_run(run_id)
        while (status := runs.read_status(folder)).get("step", 0) < 1:
            if status.get("state") in {"failed", "cancelled", "finished"}:
                raise SystemExit(f"the training job ended before its first step: {status}")
            time.sleep(2)
        for engine in args.engines.split(","):
            subprocess.run([sys.executable, __file__, args.run, "--child", engine, "--job", str(pid),
                            "--rounds", str(args.rounds), "--tokens", str(args.tokens)], check=True)
        print(f"the training job reached step {runs.read_status(folder).get('step')} meanwhile")
    finally:
        os.kill(pid, signal.SIGCONT)
        subprocess.run([sys.executable, "-m", "poetwb", "cancel", run_id, "--wait", "120"], capture_output=True)
        subprocess.run([sys.executable, "-m", "poetwb", "runs", "delete", run_id, "--yes"], capture_output=True)


def child(args: argparse.Namespace) -> None:
    from poetwb.core import cpu_share, generate, llamacpp, models, torch_thread
    from poetwb.core.config import SamplingConfig

    adapter = models.resolve_adapter(args.run)
    if args.child == "llama.cpp":
        if not llamacpp.installed():
            print("llama.cpp: not installed, skipped")
            return
        runner = llamacpp.engine_for("llamacpp", "bundled", [adapter], note=print)
    else:
        runner = torch_thread.call(models.load, None, adapters=[adapter])
    sampling = SamplingConfig(max_new_tokens=args.tokens, seed=3)
    fitted = cpu_share.free_threads

    def speed(every_thread: bool) -> tuple[float, int]:
        """Tokens/s per column (median of the columns) and the threads the decode ran on."""
        if every_thread:  # the path before: every thread whatever else runs
            cpu_share.free_threads = lambda limit=None: cpu_share.Threads(*[fitted(limit).alone] * 2)
        try:
            stats: list = []
            for _ in generate.runner_columns(runner, PROMPT, sampling, True, stats=stats):
                pass
        finally:
            cpu_share.free_threads = fitted
        return statistics.median(s.tokens_per_s for s in stats), stats[0].threads.n

    results: dict[str, list[tuple[float, int]]] = {leg: [] for leg in LEGS}
    try:
        for _ in range(args.rounds):
            os.kill(args.job, signal.SIGSTOP)
            time.sleep(0.5)
            results[LEGS[0]].append(speed(False))
            os.kill(args.job, signal.SIGCONT)
            time.sleep(1.0)
            results[LEGS[1]].append(speed(True))
            results[LEGS[2]].append(speed(False))
    finally:
        os.kill(args.job, signal.SIGCONT)
    alone = statistics.median(s for s, _ in results[LEGS[0]])
    before = statistics.median(s for s, _ in results[LEGS[1]])
    for leg, got in results.items():
        median = statistics.median(s for s, _ in got)
        print(f"{args.child:9} {leg:31} {median:5.1f} tokens/s per column on {sorted({n for _, n in got})} "
              f"threads ({', '.join(f'{s:.1f}' for s, _ in got)}): {median / alone:.2f}x alone, "
              f"{median / before:.1f}x before", flush=True)


if __name__ == "__main__":
    main()
