"""Foundation figures: cold `poetwb --version`, bundled model first load vs cached load, generation tokens/s.

Prints figures; asserts nothing. Run: `make bench` (or python benchmarks/bench_foundation.py [--dtype fp32|bf16]).
The first-load figure converts the GGUF into a throwaway cache dir, so the user's cache is not touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    runs = sorted(timed([sys.executable, "-m", "poetwb", "--version"], env) for _ in range(5))
    print(f"cold `poetwb --version`: median {runs[2] * 1000:.0f} ms (5 runs)")

    with tempfile.TemporaryDirectory() as cache:
        env_cache = {**env, "POETWB_CACHE": cache}
        load = "from poetwb.core import models; models.load(None)"
        first = timed([sys.executable, "-c", load], env_cache)
        cached = timed([sys.executable, "-c", load], env_cache)
        imports = timed([sys.executable, "-c", "import torch, transformers, peft"], env_cache)
        print(f"bundled model, first load (GGUF -> safetensors): {first:.1f} s (process, incl. imports)")
        print(f"bundled model, cached load: {cached:.1f} s (process); imports alone {imports:.1f} s; "
              f"ratio first/cached {first / cached:.1f}x")

    os.environ.update(env)
    from poetwb.core import generate, models
    from poetwb.core.config import SamplingConfig

    for dtype in ("fp32", "bf16"):
        loaded = models.load(None, dtype=dtype)
        s = SamplingConfig(max_new_tokens=args.tokens, seed=0)
        generate.generate(loaded, "The sea", SamplingConfig(max_new_tokens=4))  # warm-up
        g = generate.generate(loaded, "The sea is blue, the sky is red", s)
        print(f"generation ({dtype}, batch 1, {g.new_tokens} tokens): {g.tokens_per_s:.1f} tokens/s")
    print(f"native bf16 on this machine: {models.native_bf16()} (auto dtype uses bf16 only when native)")


if __name__ == "__main__":
    main()
