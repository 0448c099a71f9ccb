"""Side-by-side generation three ways, each in its own process so peak memory is its own: one batched pass with
peft mixed-adapter batches (poetwb's way), two sequential calls on one PeftModel (adapter disabled, then enabled),
and two separately loaded models. Prints time and peak RSS; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_compare.py RUN_ID [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time, os
mode, run, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
from poetwb.core import generate, models, runs
from poetwb.core.config import SamplingConfig
cfg = runs.read_config(runs.open_run(run))
s = SamplingConfig(max_new_tokens=tokens, seed=0, temperature=0.7)
prompt = "The sea is blue, the sky is red"
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "two-models":
    a, b = models.load(cfg.model), models.load(cfg.model, adapter=run)
else:
    b = models.load(cfg.model, adapter=run)
generate.generate(b, "The", SamplingConfig(max_new_tokens=2))  # warm-up
t = time.perf_counter()
if mode == "one-pass":
    stats = []
    for _ in generate.side_by_side(b, prompt, s, stats=stats):
        pass
    steps = max(st.new_tokens for st in stats)  # the batch runs until its longer row ends
    tokens = sum(st.new_tokens for st in stats)
elif mode == "sequential":
    with b.model.disable_adapter():
        g1 = generate.generate(b, prompt, s)
    g2 = generate.generate(b, prompt, s)
    steps = tokens = g1.new_tokens + g2.new_tokens
else:
    g1, g2 = generate.generate(a, prompt, s), generate.generate(b, prompt, s)
    steps = tokens = g1.new_tokens + g2.new_tokens
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "steps": steps, "tokens": tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    results = {}
    for mode in ("one-pass", "sequential", "two-models"):
        out = subprocess.run([sys.executable, "-c", WORKER, mode, args.run, str(args.tokens)], env=env,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[mode] = json.loads(out)
        r = results[mode]
        print(f"{mode:11} {r['seconds']:6.1f} s  {r['steps']:4d} decode steps  {r['tokens']:4d} tokens  "
              f"{r['seconds'] / r['steps'] * 1000:6.0f} ms/step   peak RSS {r['peak_rss_mb']:7.0f} MB")
    one, seq, two = results["one-pass"], results["sequential"], results["two-models"]
    print(f"one-pass / sequential time: {one['seconds'] / seq['seconds']:.2f}x raw (target <= 0.65x); "
          f"{(one['seconds'] / (2 * one['steps'])) / (seq['seconds'] / seq['steps']):.2f}x per token when both "
          "rows run the same number of steps (the batch runs until its longer row ends)")
    print(f"one-pass / one model memory: {one['peak_rss_mb'] / seq['peak_rss_mb']:.2f}x of the sequential "
          f"(one model) process, {one['peak_rss_mb'] / two['peak_rss_mb']:.2f}x of two loaded models")


if __name__ == "__main__":
    main()
