"""Decoding speed, measured side by side in one process: the figures of issue 10's table as ratios.

On the bundled model with a run's adapter (or the bundled model alone, with a fresh random adapter, when no run is
given), every path decodes the same prompt with the report's sampling (0.7 / 0.95 / 1.1) for a fixed number of
tokens (end of text is held off with min_new_tokens, so every row runs every step):
- plain transformers `generate` on the base model alone, one row (the reference),
- poetwb's one-pass side by side (base row + tuned row in one batch) and two sequential calls (base, then tuned),
  each with the lean path (lean LoRA row mask + few-row linear layers + core.lean_step's decode step, generation on
  the torch thread that loaded the model) and with the path before it (peft's forward with an output mask, the
  plain head, transformers' modules, a new thread per call),
- a batch of 8 rows of the tuned model against one row (form generation's k candidates),
- the same legs with int8 copies of the weights (core/int8.py, dtype auto on CPUs without native bf16), the lean
  decode step against transformers' per-layer modules on them (one pass, 8 rows), and what
  the copies cost: held-out loss against exact, and greedy tokens that agree with exact,
- where llama-cpp-python is installed, the llama.cpp engine on the bundled GGUF with the same adapter as a GGUF
  adapter: one column, side by side, two sequential calls (end of text held off with a logit bias).
The paths are interleaved and repeated; the best of the repeats counts (the least disturbed by other processes).
- where llama-cpp-python is installed, k rows of the tuned model on one llama.cpp context (8 sequences, the numpy
  sampler): the form engine's step, against one row.
Then one form poem (a sonnet, k = 8, tuned) on each engine (torch exact, torch int8, llama.cpp), `poetwb generate`
end to end in a fresh process (32 tokens, cached model) on each engine and with --dtype fp32, and the imports
alone (poetwb's CLI; torch; what the torch engine cannot skip).
With --compile, transformers' static KV cache with torch.compile against its dynamic cache (plain greedy generate).
Prints figures; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_decode.py [RUN] [--tokens 48] [--repeats 3] [--form sonnet|none]
     [--compile]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import cpu_header

PROMPT = "The sea is blue, the sky is red"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", help="a run whose adapter is the tuned model (default: a random adapter)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="exact", choices=["exact", "fp32", "bf16"],
                        help="the weights of the exact legs (exact: bf16 where native, else fp32); the int8 legs "
                        "add int8 copies to fp32 weights")
    parser.add_argument("--form", default="sonnet", help="the form poem timed on each engine (none: skip)")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--compile", action="store_true",
                        help="also time transformers' static cache + torch.compile (a warm-up of minutes)")
    args = parser.parse_args()

    import torch

    from poetwb.core import generate, int8, lean_step, models, torch_thread
    from poetwb.core.config import SamplingConfig

    print(cpu_header(), flush=True)
    print(f"dtype auto here: {models.resolve_dtype('auto')}", flush=True)
    adapter = args.run or random_adapter()
    loaded = models.load("bundled", adapter=adapter, dtype=args.dtype)
    plain = models.load("bundled", dtype=args.dtype)
    dtype = next(loaded.model.parameters()).dtype
    name = generate.adapter_names(loaded)[-1]
    n = args.tokens
    s = SamplingConfig(max_new_tokens=n, seed=0, temperature=0.7, top_p=0.95, repetition_penalty=1.1)
    for m in (loaded.model, plain.model):
        m.generation_config.min_new_tokens = n  # every row runs all n steps
    print(f"bundled model, adapter {adapter}, {dtype}, {n} new tokens per row, best of {args.repeats}", flush=True)

    def columns(layout: list[str | None]) -> float:
        t = time.perf_counter()
        for _ in generate.columns(loaded, PROMPT, s, layout):
            pass
        return time.perf_counter() - t

    def plain_generate() -> float:
        enc = plain.tokenizer(PROMPT, return_tensors="pt")
        generate.FAST_SAMPLER = False  # transformers' own sampling: the reference
        kw = generate.generate_kwargs(plain.tokenizer, plain.model, s)
        generate.FAST_SAMPLER = True

        def run() -> float:
            t = time.perf_counter()
            with torch.inference_mode():
                plain.model.generate(**enc, **kw)
            return time.perf_counter() - t

        return torch_thread.call(run)  # where the model was loaded, as poetwb generates

    can_int8 = int8.available() and dtype == torch.float32

    def on_int8(fn: object, four: bool = True) -> object:
        """The same leg with int8 copies of the weights (what dtype auto loads on a CPU without native bf16: 4-bit
        copies of the layers whose weights sit on a 4-bit grid; four=False: int8 everywhere, the path before); the
        adapter's merged copies are made before the clock starts, as a session makes them once and keeps them."""
        def run() -> float:
            offered = int8._four_bits
            int8._four_bits = offered if four else (lambda: False)
            try:
                for m in (loaded.model, plain.model):
                    torch_thread.call(int8.quantize, m)
            finally:
                int8._four_bits = offered
            mask = generate.RowMask(loaded.model, [name])
            torch_thread.call(mask.whole, name)
            mask.close()
            try:
                return fn()  # type: ignore[operator]
            finally:
                for m in (loaded.model, plain.model):
                    int8.restore(m)
        return run

    def with_path(lean: bool, fn: object) -> object:
        def run() -> float:
            generate.RowMask.LEAN = lean
            generate.FewRows.MAX_ROWS = 16 if lean else 0
            generate.ON_TORCH_THREAD = generate.FAST_SAMPLER = lean_step.ENABLED = lean
            try:
                return fn()  # type: ignore[operator]
            finally:
                generate.RowMask.LEAN, generate.FewRows.MAX_ROWS = True, 16
                generate.ON_TORCH_THREAD = generate.FAST_SAMPLER = lean_step.ENABLED = True
        return run

    def modules(fn: object) -> object:
        """The lean path, but decode steps go through transformers' per-layer modules (no core.lean_step)."""
        def run() -> float:
            lean_step.ENABLED = False
            try:
                return fn()  # type: ignore[operator]
            finally:
                lean_step.ENABLED = True
        return run

    def products(fn: object) -> object:
        """int8 copies, but a batch of one adapter computes LoRA products instead of reading merged copies."""
        def run() -> float:
            generate.RowMask.MERGE = False
            try:
                return fn()  # type: ignore[operator]
            finally:
                generate.RowMask.MERGE = True
        return run

    paths = {
        "plain generate, base, 1 row": plain_generate,
        "one pass, lean": with_path(True, lambda: columns([None, name])),
        "one pass, before": with_path(False, lambda: columns([None, name])),
        "two calls, lean": with_path(True, lambda: columns([None]) + columns([name])),
        "two calls, before": with_path(False, lambda: columns([None]) + columns([name])),
        "tuned 1 row, lean": with_path(True, lambda: columns([name])),
        "tuned 8 rows, lean": with_path(True, lambda: columns([name] * 8)),
        "tuned 8 rows, before": with_path(False, lambda: columns([name] * 8)),
    }
    if can_int8:
        paths.update({
            "plain generate, int8, 1 row": on_int8(plain_generate),
            "one pass, int8": on_int8(lambda: columns([None, name])),
            "one pass, int8, modules": on_int8(modules(lambda: columns([None, name]))),
            "two calls, int8": on_int8(lambda: columns([None]) + columns([name])),
            "tuned 1 row, int8": on_int8(lambda: columns([name])),
            "tuned 8 rows, int8": on_int8(lambda: columns([name] * 8)),
            "tuned 8 rows, int8, modules": on_int8(modules(lambda: columns([name] * 8))),
            "tuned 1 row, int8 products": on_int8(products(lambda: columns([name]))),
            "tuned 8 rows, int8 products": on_int8(products(lambda: columns([name] * 8))),
            "plain generate, int8 only, 1 row": on_int8(plain_generate, four=False),
            "one pass, int8 only": on_int8(lambda: columns([None, name]), four=False),
            "two calls, int8 only": on_int8(lambda: columns([None]) + columns([name]), four=False),
        })
    from poetwb.core import llamacpp

    engine = None
    if llamacpp.installed():
        engine = llamacpp.Engine.for_run("bundled", [models.resolve_adapter(adapter)])
        text = generate.format_prompt(engine.template, PROMPT, False)

        def fast(layout: list[int | None]) -> float:
            t = time.perf_counter()
            for _ in engine.columns(text, s, layout, ignore_eos=True):
                pass
            return time.perf_counter() - t

        def fast_rows(rows: int) -> float:
            """k rows of the tuned model on one context, one token each per step, drawn by the numpy sampler:
            how the llama.cpp engine samples a form's candidate lines."""
            import numpy as np

            from poetwb.core.llamacpp_forms import LlamaLines, pick

            with engine.lock:
                lm = LlamaLines(engine, engine._context(9, 0, len(engine.tokenize(text)) + rows * (n + 1), rows), rows)
                try:
                    lm.start(lm.encode(text))
                    t = time.perf_counter()
                    for seq in range(1, rows):
                        engine.lib.llama_memory_seq_cp(lm.mem, 0, seq, -1, -1)
                    last, base_pos = [lm.ids[-1]] * rows, len(lm.ids) - 1
                    rng = np.random.default_rng(0)
                    never = [lm.classes.never]  # end of text held off, as in every other path
                    seen = np.unique(lm.ids)
                    for step in range(n):
                        logits = lm._decode(last, [base_pos + step] * rows, list(range(rows)))
                        last = [pick(row, seen, never, s, rng) for row in logits]
                    return time.perf_counter() - t
                finally:
                    lm.close()

        paths.update({
            "llama.cpp, base, 1 column": lambda: fast([None]),
            "llama.cpp, one pass": lambda: fast([None, 0]),
            "llama.cpp, two calls": lambda: fast([None]) + fast([0]),
            "llama.cpp, tuned 1 row": lambda: fast_rows(1),
            "llama.cpp, tuned 8 rows": lambda: fast_rows(8),
        })
        fast([None, 0])  # warm-up
    columns([None, name])  # warm-up
    best = {k: float("inf") for k in paths}
    for _ in range(args.repeats):
        for key, fn in paths.items():
            best[key] = min(best[key], fn())
    for key, sec in best.items():
        rows = 8 if "8 rows" in key else 2 if "one pass" in key or "two calls" in key else 1
        steps = n * (2 if "two calls" in key else 1)
        print(f"{key:30} {sec:6.2f} s  {sec / steps * 1000:6.0f} ms/step  {rows * n / sec:6.1f} tokens/s, all rows",
              flush=True)
    print(f"side by side, tokens/s per column (lean): {n / best['one pass, lean']:.1f} "
          f"(before: {n / best['one pass, before']:.1f}; plain generate, one model, one row: "
          f"{n / best['plain generate, base, 1 row']:.1f})")
    print(f"one pass / two sequential calls, time: {best['one pass, lean'] / best['two calls, lean']:.2f}x "
          f"(before: {best['one pass, before'] / best['two calls, before']:.2f}x)")
    print(f"batch of 8 / one row, time per step, adapter on: "
          f"{best['tuned 8 rows, lean'] / best['tuned 1 row, lean']:.2f}x")
    print(f"lean / before: one pass {best['one pass, lean'] / best['one pass, before']:.2f}x, "
          f"8 rows {best['tuned 8 rows, lean'] / best['tuned 8 rows, before']:.2f}x", flush=True)
    if can_int8:
        print(f"int8 copies: side by side, tokens/s per column: {n / best['one pass, int8']:.1f} "
              f"({best['one pass, lean'] / best['one pass, int8']:.2f}x the exact lean path; plain generate, one "
              f"row: {n / best['plain generate, int8, 1 row']:.1f}); one pass / two sequential calls: "
              f"{best['one pass, int8'] / best['two calls, int8']:.2f}x; batch of 8 / one row, adapter on: "
              f"{best['tuned 8 rows, int8'] / best['tuned 1 row, int8']:.2f}x", flush=True)
        torch_thread.call(int8.quantize, loaded.model)
        kinds = [vars(m)["poetwb_int8"].by_key[None][0] for m in loaded.model.modules() if "poetwb_int8" in vars(m)]
        int8.restore(loaded.model)
        print(f"copies: {kinds.count(4)} layers 4-bit (weights on a 4-bit grid), {kinds.count(8)} int8; 4-bit where "
              f"exact / int8 only, time: one pass {best['one pass, int8'] / best['one pass, int8 only']:.2f}x, "
              f"plain generate 1 row "
              f"{best['plain generate, int8, 1 row'] / best['plain generate, int8 only, 1 row']:.2f}x; "
              f"int8 only: side by side {n / best['one pass, int8 only']:.1f} tokens/s per column, one pass / two "
              f"calls {best['one pass, int8 only'] / best['two calls, int8 only']:.2f}x", flush=True)
        print(f"int8 copies, tuned rows on copies with the adapter merged / base copies + LoRA products, time: "
              f"1 row {best['tuned 1 row, int8'] / best['tuned 1 row, int8 products']:.2f}x, 8 rows "
              f"{best['tuned 8 rows, int8'] / best['tuned 8 rows, int8 products']:.2f}x", flush=True)
        print(f"int8 copies, lean decode step / transformers' modules, time: one pass "
              f"{best['one pass, int8'] / best['one pass, int8, modules']:.2f}x, 8 rows "
              f"{best['tuned 8 rows, int8'] / best['tuned 8 rows, int8, modules']:.2f}x", flush=True)
        int8_quality(loaded)
    if engine is not None:  # its columns decode in turn: a one-pass step is one token of every column
        print(f"llama.cpp engine ({engine.n_threads} threads, {engine.base.name}): side by side, tokens/s per "
              f"column: {n / best['llama.cpp, one pass']:.1f} (one column alone: "
              f"{n / best['llama.cpp, base, 1 column']:.1f}); "
              f"{best['one pass, lean'] / best['llama.cpp, one pass']:.1f}x the torch lean side by side; "
              f"one pass / two calls: "
              f"{best['llama.cpp, one pass'] / best['llama.cpp, two calls']:.2f}x", flush=True)
        print(f"llama.cpp engine: batch of 8 / one row (one context, 8 sequences, numpy sampler), time per step: "
              f"{best['llama.cpp, tuned 8 rows'] / best['llama.cpp, tuned 1 row']:.2f}x", flush=True)
    else:
        print("llama.cpp engine: not installed (pip install 'poetwb[llamacpp]'), not measured", flush=True)
    if args.form != "none":
        form_poems(loaded, engine, args.form, args.candidates, can_int8)
    end_to_end(32, ["torch", "llamacpp"] if engine is not None else ["torch"])
    if args.compile:
        compiled(n)


def int8_quality(loaded: object) -> None:
    """What the int8 copies cost in quality, on the tuned model: the mean next-token loss over 60 blocks of 256
    tokens of the bundled poets with every product on the copies (prompts included, so a bound), and how many
    greedy tokens of the two report prompts agree with exact before the first difference; both for the base copies
    with LoRA products in fp32 (a side-by-side batch) and for copies with the adapter merged in (a batch of tuned
    rows alone)."""
    import torch

    from poetwb.core import bundled, generate, int8, torch_thread

    model, tok = loaded.model, loaded.tokenizer  # type: ignore[attr-defined]
    ids: list = []
    for f in sorted(bundled.corpus_dir().rglob("*.txt")):
        stream = tok(f.read_text(encoding="utf-8", errors="ignore"), return_tensors="pt").input_ids
        ids += [stream[:, i:i + 256] for i in range(0, stream.shape[1] - 255, 256)]
    ids = ids[:: max(1, len(ids) // 60)][:60]  # spread over the poets

    def loss() -> float:
        total = count = 0.0
        with torch.inference_mode():
            for x in ids:
                total += model(input_ids=x, labels=x).loss.item() * (x.shape[1] - 1)
                count += x.shape[1] - 1
        return total / count

    def greedy(prompt: str) -> list[int]:
        enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        return out[0, enc.input_ids.shape[1]:].tolist()

    prompts = [PROMPT, "Write a poem about the sea and the sky"]
    exact = torch_thread.call(loss)
    want = [torch_thread.call(greedy, p) for p in prompts]

    def on_copies() -> tuple[float, list[list[int]]]:
        """The held-out loss with every product on the copies (a bound), and the greedy tokens."""
        int8.ALWAYS = True
        try:
            value = torch_thread.call(loss)
        finally:
            int8.ALWAYS = False
        return value, [torch_thread.call(greedy, p) for p in prompts]

    torch_thread.call(int8.quantize, model)
    try:
        quant, got = on_copies()  # peft's forward: base copies + LoRA in fp32
        mask = generate.RowMask(model, generate.adapter_names(loaded))
        try:
            torch_thread.call(mask.whole, generate.adapter_names(loaded)[-1])
            merged, got_merged = on_copies()  # the adapter merged into the copies
        finally:
            mask.close()
    finally:
        int8.restore(model)

    def agree(got: list) -> list[int]:
        return [next((i for i, (a, b) in enumerate(zip(w, g, strict=True)) if a != b), len(w))
                for w, g in zip(want, got, strict=True)]

    for label, value, tokens in (("base copies + LoRA", quant, got), ("adapter merged into the copies", merged,
                                                                         got_merged)):
        print(f"int8 copies, quality (tuned, {label}): held-out loss {value:.4f} vs exact {exact:.4f} "
              f"({(value - exact) / exact * 100:+.2f} %, {len(ids)} blocks of 256 tokens); greedy tokens agreeing "
              f"with exact before the first difference: {agree(tokens)} of 32", flush=True)


def form_poems(loaded: object, engine: object, name: str, candidates: int, with_int8: bool) -> None:
    """One form poem of the tuned model (raw prompt, report sampling, k candidates per line) on each engine: what
    a Compare column costs. Once each: a poem takes long enough that one is a figure."""
    from poetwb.core import forms, generate, int8, llamacpp, torch_thread
    from poetwb.core.config import SamplingConfig

    form = forms.make_form(name)
    s = SamplingConfig(seed=0)
    times = {}
    labels = ["torch"] + (["torch int8"] if with_int8 else []) + (["llama.cpp"] if engine else [])
    for label in labels:
        runner = engine if label == "llama.cpp" else loaded
        layout = [0] if label == "llama.cpp" else [generate.adapter_names(loaded)[-1]]
        if label == "torch int8":
            torch_thread.call(int8.quantize, loaded.model)  # type: ignore[attr-defined]
        stats: list = []
        t = time.perf_counter()
        chunks = (llamacpp.columns(runner, PROMPT, s, layout, form=form, candidates=candidates, stats=stats)
                  if label == "llama.cpp" else
                  generate.columns(runner, PROMPT, s, layout, form=form, candidates=candidates, stats=stats))
        lines = sum(chunk.strip() != "" for _, chunk in chunks)
        times[label] = time.perf_counter() - t
        if label == "torch int8":
            int8.restore(loaded.model)  # type: ignore[attr-defined]
        print(f"{form.describe()}, k = {candidates}, tuned, {label}: {times[label]:.1f} s for {lines} lines "
              f"({stats[0].new_tokens} candidate tokens, {stats[0].new_tokens / times[label]:.1f} tokens/s)",
              flush=True)
    for label in labels[1:]:
        print(f"form poem, {label} / torch time: {times[label] / times['torch']:.2f}x", flush=True)


def end_to_end(tokens: int, engines: list[str]) -> None:
    """`poetwb generate` in a fresh process, cached model, on each engine; and `import poetwb.cli` alone."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    def best_of_two(*argv: str) -> float:
        """A fresh process, twice; the faster one's seconds."""
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            subprocess.run([sys.executable, *argv], env=env, check=True, capture_output=True)
            runs.append(time.perf_counter() - t)
        return min(runs)

    legs = [["--engine", e] for e in engines] + [["--engine", "torch", "--dtype", "fp32"]]
    for leg in legs:
        sec = best_of_two("-m", "poetwb", "generate", "-p", PROMPT, "-n", str(tokens), *leg)
        print(f"poetwb generate {' '.join(leg)} end to end, {tokens} tokens: {sec:.1f} s", flush=True)
    # what the torch engine cannot go below in a fresh process: its imports, before any weight is read
    for label, code in (("import poetwb.cli", "import poetwb.cli"), ("import torch", "import torch"),
                        ("import torch + transformers' Llama + peft (the torch engine's imports)",
                         "import torch, transformers.models.llama.modeling_llama, peft")):
        print(f"python + {label} alone: {best_of_two('-c', code):.1f} s", flush=True)


def compiled(tokens: int) -> None:
    """transformers' static KV cache with torch.compile (inductor) against its dynamic cache: plain greedy `generate`
    on the bundled model, fp32, one row: the one-time warm-up, the steps after it, and whether the tokens agree."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation import CompileConfig

    from poetwb.core import models

    _, folder = models.resolve("bundled")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    enc = tok([PROMPT], return_tensors="pt")
    config = CompileConfig(dynamic=False)
    config._compile_all_devices = True  # transformers compiles on GPUs only unless told

    def run(**kw: object) -> tuple[float, object]:
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **kw)
        return time.perf_counter() - t, out

    dynamic = [run() for _ in range(2)]
    static = [run(cache_implementation="static", compile_config=config) for _ in range(3)]
    plain_static = run(cache_implementation="static", disable_compile=True)
    best = min(s for s, _ in dynamic)
    after = min(s for s, _ in static[1:])
    same = all(torch.equal(out, dynamic[0][1]) for _, out in [*static, plain_static])
    print(f"static cache + torch.compile, plain greedy generate, fp32, 1 row, {tokens} tokens: first call (warm-up) "
          f"{static[0][0]:.1f} s, then {after:.2f} s against {best:.2f} s on the dynamic cache ({after / best:.2f}x); "
          f"static cache without compile {plain_static[0]:.2f} s ({plain_static[0] / best:.2f}x); "
          f"tokens {'equal' if same else 'DIFFERENT'}", flush=True)


def random_adapter() -> str:
    """A LoRA adapter on the bundled model with random B (so it changes the output), all linear layers, r 16."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import models

    _, folder = models.resolve("bundled")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    out = Path(tempfile.mkdtemp(prefix="poetwb-bench-")) / "adapter"
    model.save_pretrained(out)
    return str(out)


if __name__ == "__main__":
    main()
