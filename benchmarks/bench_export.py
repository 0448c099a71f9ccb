"""Export measured: time and file sizes of `poetwb export` for the bundled model, as hf (f32 safetensors), gguf f16
and gguf q8_0; and, for the GGUFs, how far transformers' own GGUF loader's logits are from the merged model's.

With a RUN it exports that run; without, it makes a run on the bundled model in a temp data dir with a LoRA adapter
of the default shape (r 16 on q/k/v/o, random non-zero weights, so the merge is real work) and exports that.
Each export includes its model card's sample poem (96 tokens), as a user's does. Prints figures; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_export.py [RUN]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import cpu_header

LEGS = [("hf", "f32"), ("gguf", "f16"), ("gguf", "q8_0")]
TEXT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."


def synthetic_run() -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import bundled, runs
    from poetwb.core.config import TrainConfig

    base = bundled.ensure_converted()
    folder = runs.create_run(TrainConfig(), "bench-export")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora.save_pretrained(runs.adapter_dir(folder, 2))
    runs.update_status(folder, state="finished")
    return folder.name


def gguf_logit_gap(run_id: str, folder: Path) -> tuple[float, float, float]:
    """(max |logit difference|, max |logit|, share of positions with the same top token): merged vs GGUF read back."""
    import torch
    from transformers import AutoModelForCausalLM

    from poetwb.core import models, runs

    config = runs.read_config(runs.open_run(run_id))
    ref = models.load(config.model, runs.adapter_dir(runs.open_run(run_id), 2), dtype="fp32", device="cpu")
    merged = ref.model.merge_and_unload().eval()
    name = next(folder.glob("*.gguf")).name
    back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = ref.tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        a, b = merged(**ids).logits, back(**ids).logits
    return (a - b).abs().max().item(), a.abs().max().item(), (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", help="a run to export (default: a synthetic run on the bundled model)")
    args = parser.parse_args()
    if args.run is None:
        os.environ.setdefault("POETWB_HOME", tempfile.mkdtemp(prefix="bench-export-"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from poetwb.core import export

    print(cpu_header())
    run_id = args.run or synthetic_run()
    out = Path(tempfile.mkdtemp(prefix="bench-export-out-"))
    print(f"run {run_id}; exports under {out}")
    print(f"{'format':8} {'type':5} {'seconds':>8} {'size MiB':>9}  files")
    results = {}
    for fmt, quant in LEGS:
        started = time.perf_counter()
        result = export.export_run(run_id, fmt, out / f"{fmt}-{quant}", quant=quant, stage=2)
        seconds = time.perf_counter() - started
        weights = {k: v for k, v in result.files.items() if k.endswith((".gguf", ".safetensors"))}
        results[(fmt, quant)] = result
        print(f"{fmt:8} {quant:5} {seconds:8.1f} {result.total_bytes / 2**20:9.1f}  "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in weights.items()))
    for fmt, quant in LEGS[1:]:
        gap, scale, same = gguf_logit_gap(run_id, results[(fmt, quant)].path)
        print(f"gguf {quant} read back by transformers: max |logit diff| {gap:.4f} (logits up to {scale:.1f}), "
              f"same top token at {same:.0%} of positions")
    import shutil

    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
