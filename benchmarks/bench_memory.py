"""Resident memory of the default stage 1, measured the way a user runs it: one fresh `poetwb train` job per leg.

Each leg is a child process that runs the `poet` preset's stage 1 (bundled model, Shakespeare's sonnets, LoRA r16
on all 210 linear layers, batch 4 x 256 unless --batch says otherwise) for a few steps through the real job
(run_job: the Trainer, its evaluations at the start and the end, the adapter save), with gradient checkpointing
off, on, and "auto" (which checkpoints some of the layers), and "plain": off without recomputing the cheap
activations (core/lean_activations.py), i.e. the job as it was before that. It prints, per leg: the process's peak
resident memory (ru_maxrss: everything, imports and weights included), how far it rose above what was resident when
the trainer started (the training's own memory), seconds per training step and the validation losses, which must
be equal across legs (same math). Peak memory does not depend on other processes; the seconds do (the legs run one
after the other, so a busy machine skews them). Prints figures; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_memory.py [--steps 4] [--batch 4] [--legs plain,off,auto,on]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import cpu_header

SETTINGS = {"off": False, "on": True, "auto": "auto", "plain": False}


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(setting: str, steps: int, batch: int | None) -> None:
    """One leg, in this (fresh) process: prints one JSON line."""
    from poetwb.core import lean_activations, runs
    from poetwb.core.config import build_train_config
    from poetwb.core.train_job import run_job

    if setting == "plain":  # every activation kept, as before lean_activations
        lean_activations.install = lambda model: 0

    stage1: dict = {"max_steps": steps}
    if batch:
        stage1["batch_size"] = batch
    config = build_train_config("poet", overrides={"instructions": {"kind": "none"}, "stage1": stage1,
                                                   "gradient_checkpointing": SETTINGS[setting]})
    folder = runs.start_run(config, f"mem-{setting}", detach=False).path
    marks: dict[str, float] = {}

    def observer(status: dict | None, record: dict | None) -> None:
        phase = (status or {}).get("phase", "")
        if phase.startswith("stage 1: starting the trainer") and "start_rss" not in marks:
            marks["start_rss"] = rss_mb()
        if record and record.get("step") == 1 and "loss" in record:
            marks.setdefault("first_step", time.monotonic())
        if record and record.get("step") == steps and "loss" in record:
            marks.setdefault("last_step", time.monotonic())

    result = run_job(folder, observer=observer)
    log = (folder / "log.txt").read_text(encoding="utf-8")
    decision = next((line.split(": ", 1)[-1] for line in log.splitlines() if "gradient checkpointing" in line), "")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_step = ((marks["last_step"] - marks["first_step"]) / (steps - 1)
                if steps > 1 and {"first_step", "last_step"} <= marks.keys() else None)
    print(json.dumps({"setting": setting, "state": str(result.state), "peak_mb": peak,
                      "start_mb": marks.get("start_rss"), "s_per_step": per_step,
                      "eval_loss": result.eval_loss, "decision": decision}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=0, help="stage-1 batch size (default: the preset's)")
    parser.add_argument("--legs", default="plain,off,auto,on")
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.batch or None)
        return

    from poetwb.core import bundled, paths

    print(cpu_header(), flush=True)
    bundled.ensure_converted()
    batch = args.batch or "the preset's (4)"
    print(f"poet preset, stage 1 only, bundled model, batch {batch} x 256, {args.steps} steps per leg, "
          "one fresh process per leg", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, POETWB_HOME=home, POETWB_CACHE=str(paths.cache_dir()), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
        for leg in args.legs.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", leg.strip(), "--steps", str(args.steps),
                                  "--batch", str(args.batch)], env=env, capture_output=True, text=True)
            line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith("{")), None)
            if out.returncode or line is None:
                print(f"  leg {leg}: failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(line)
            rows.append(row)
            rise = f"+{row['peak_mb'] - row['start_mb']:.0f} MB in training" if row["start_mb"] else ""
            step = f"{row['s_per_step']:.1f} s/step" if row["s_per_step"] else ""
            losses = " ".join(f"{k} {v:.4f}" for k, v in row["eval_loss"].items())
            print(f"  gradient_checkpointing {leg:5}  peak RSS {row['peak_mb']:6.0f} MB ({rise})  {step:11}  "
                  f"{losses}  [{row['decision']}]", flush=True)
    timed = {r["setting"]: r["s_per_step"] for r in rows if r["s_per_step"]}
    for leg in ("off", "auto", "on"):
        if leg in timed and "plain" in timed:
            print(f"  {leg} / plain, time per step: {timed[leg] / timed['plain']:.2f}x "
                  "(legs run one after the other: noisy on a busy machine)")


if __name__ == "__main__":
    main()
